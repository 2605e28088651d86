"""L2-SP (Li et al. 2018): full fine-tuning whose regulariser pulls the backbone toward its
pretrained weights, alpha/2 ||w - w0||^2, and the new head toward 0, beta/2 ||w||^2 (added to the
loss by the training loop), in place of weight decay toward 0."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from src.config import ConfigError
from src.strategies.base import register
from src.strategies.full import Full, FullConfig
from src.strategies.groups import LayerGroup, is_bias_or_norm

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class L2SPConfig(FullConfig):
    name: str = "l2sp"
    # Pull of the backbone toward its pretrained weights (alpha) and of the head toward 0 (beta).
    l2sp_alpha: float = 0.01
    l2sp_beta: float = 0.01

    def check(self) -> None:
        super().check()
        for key in ("l2sp_alpha", "l2sp_beta"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"strategy.{key}={value!r} must be a finite number >= 0")


@register
class L2SP(Full):
    name = "l2sp"
    Config = L2SPConfig

    def weight_decay(self, weight_decay: float) -> float:
        return 0.0  # the penalty replaces weight decay, which would pull toward 0, not toward w0

    def penalty(self, model: nn.Module, groups: Sequence[LayerGroup]) -> Callable[[], torch.Tensor]:
        return l2sp_penalty(model, groups, self.cfg.l2sp_alpha, self.cfg.l2sp_beta)


def l2sp_penalty(
    model: nn.Module, groups: Sequence[LayerGroup], alpha: float, beta: float
) -> Callable[[], torch.Tensor]:
    """The L2-SP term as a function of the live weights; the anchor is a copy of them now (call it
    before training, on the pretrained model). Norms and biases are left out, as weight decay skips them."""
    params = dict(model.named_parameters())
    weights = [[p.name for p in g.params if not is_bias_or_norm(p)] for g in groups]
    body = [(params[n], params[n].detach().clone()) for names in weights[:-1] for n in names]
    head = [params[n] for n in weights[-1]]

    def penalty() -> torch.Tensor:
        sp = sum(((w - w0) ** 2).sum() for w, w0 in body if w.requires_grad)
        decay = sum((w**2).sum() for w in head)
        return 0.5 * alpha * sp + 0.5 * beta * decay  # type: ignore[return-value]

    return penalty
