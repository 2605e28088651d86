"""Layer groups: a model's parameters cut into the units that strategies schedule.

The groups come from the model itself through timm's `group_matcher`, bottom to top, with the new
classifier head always last and on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from timm.models import group_parameters
from torch import nn

from src.config import ConfigError
from src.models import head_param_names


@dataclass(frozen=True)
class LayerGroup:
    name: str
    param_names: tuple[str, ...]
    num_params: int
    # The group's biases and norm scales/shifts (its 1-D tensors): what BitFit trains.
    bias_norm_names: tuple[str, ...] = ()
    bias_norm_params: int = 0


def is_bias_or_norm(param: torch.Tensor) -> bool:
    """Biases and norm scales/shifts are the 1-D tensors (conv and linear weights are not; neither
    are a ViT's position embedding and class token)."""
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
    if not hasattr(model, "group_matcher"):
        raise ConfigError(f"model {type(model).__name__} declares no group_matcher; layer groups are unknown")
    grouped = group_parameters(model, model.group_matcher(coarse=granularity == "coarse"))
    sizes = {n: p.numel() for n, p in model.named_parameters()}
    small = {n for n, p in model.named_parameters() if is_bias_or_norm(p)}
    head = head_param_names(model)

    def group(name: str, names: Sequence[str]) -> LayerGroup:
        bn = tuple(n for n in names if n in small)
        return LayerGroup(name, tuple(names), sum(sizes[n] for n in names), bn, sum(sizes[n] for n in bn))

    groups = []
    for names in grouped.values():
        body = [n for n in names if n not in head]
        if body:
            groups.append(group(_group_name(body), body))
    groups.append(group("head", [n for n in sizes if n in head]))
    covered = sum(len(g.param_names) for g in groups)
    if covered != len(sizes):  # every parameter in exactly one group, or the counts would lie
        raise RuntimeError(f"layer groups cover {covered} of {len(sizes)} parameters")
    return groups
