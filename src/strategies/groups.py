"""Layer groups: a model's parameters cut into the units that strategies schedule.

The groups come from the model itself through timm's `group_matcher`, bottom to top, with the new
classifier head always last and on its own. A group keeps each parameter's name and shape (not the
tensor), so a schedule can be planned, and a strategy's parameter rule applied, without the weights:
the config gate plans on a model built on the meta device. torch and timm are imported where a
model is cut, so that the strategies' configs and plans load without them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from src.config import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class ParamInfo:
    """One parameter of a layer group, as a strategy's rule sees it: its name and shape."""

    name: str
    shape: tuple[int, ...]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class LayerGroup:
    name: str
    params: tuple[ParamInfo, ...]

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    @property
    def num_params(self) -> int:
        return sum(p.numel for p in self.params)


def is_bias_or_norm(param: torch.Tensor | ParamInfo) -> bool:
    """Biases and norm scales/shifts are the 1-D tensors (conv and linear weights are not; neither
    are a ViT's position embedding and class token). Takes a tensor or a ParamInfo."""
    return param.ndim <= 1


def _common_prefix(names: Sequence[str]) -> str:
    parts = [n.split(".")[:-1] or [n] for n in names]
    common: list[str] = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return ".".join(common)


def _group_name(names: Sequence[str]) -> str:
    """'blocks.3' for one module tree; 'blocks.6+conv_head+bn2' when a group spans several."""
    by_root: dict[str, list[str]] = {}
    for n in names:
        by_root.setdefault(n.split(".")[0], []).append(n)
    return "+".join(_common_prefix(members) or root for root, members in by_root.items())


def layer_groups(model: nn.Module, granularity: str = "coarse") -> list[LayerGroup]:
    """Trainable layer groups from bottom to top, the classifier head always last and on its own.

    Groups come from the model's own `group_matcher` (coarse: stem, stages, head; fine: blocks),
    so any timm architecture works without name rules written for one family.
    """
    from timm.models import group_parameters

    from src.models import head_param_names

    if not hasattr(model, "group_matcher"):
        raise ConfigError(f"model {type(model).__name__} declares no group_matcher; layer groups are unknown")
    grouped = group_parameters(model, model.group_matcher(coarse=granularity == "coarse"))
    info = {n: ParamInfo(n, tuple(p.shape)) for n, p in model.named_parameters()}
    head = head_param_names(model)
    groups = []
    for names in grouped.values():
        body = [n for n in names if n not in head]
        if body:
            groups.append(LayerGroup(_group_name(body), tuple(info[n] for n in body)))
    groups.append(LayerGroup("head", tuple(info[n] for n in info if n in head)))
    covered = sum(len(g.params) for g in groups)
    if covered != len(info):  # every parameter in exactly one group, or the counts would lie
        raise RuntimeError(f"layer groups cover {covered} of {len(info)} parameters")
    return groups
