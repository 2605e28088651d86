"""L2-SP (Li et al. 2018): full fine-tuning whose regulariser pulls the backbone toward its
pretrained weights, alpha/2 ||w - w0||^2, and the new head toward 0, beta/2 ||w||^2
(`l2sp_penalty`, added to the loss by the training loop), in place of weight decay toward 0."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from src.config import StrategyConfig
from src.strategies import full
from src.strategies.groups import LayerGroup
from src.strategies.schedule import Plan


def plan(n: int, cfg: StrategyConfig, head_lr: float) -> Plan:
    return full.plan(n, cfg, head_lr)


def l2sp_penalty(
    model: nn.Module, groups: Sequence[LayerGroup], alpha: float, beta: float
) -> Callable[[], torch.Tensor]:
    """The L2-SP term as a function of the live weights; the anchor is a copy of them now (call it
    before training, on the pretrained model). Norms and biases are left out, as weight decay skips them."""
    params = dict(model.named_parameters())
    weights = [[n for n in g.param_names if n not in set(g.bias_norm_names)] for g in groups]
    body = [(params[n], params[n].detach().clone()) for names in weights[:-1] for n in names]
    head = [params[n] for n in weights[-1]]

    def penalty() -> torch.Tensor:
        sp = sum(((w - w0) ** 2).sum() for w, w0 in body if w.requires_grad)
        decay = sum((w**2).sum() for w in head)
        return 0.5 * alpha * sp + 0.5 * beta * decay  # type: ignore[return-value]

    return penalty
