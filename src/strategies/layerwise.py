"""Discriminative learning rates with optional gradual unfreezing (ULMFiT, Howard & Ruder 2018):
each group below the head trains at the LR of the group above / `lr_decay`; only the top
`unfreeze_depth` backbone groups train; with `unfreeze_every` = k, one more group joins every k
epochs, from the top."""

from __future__ import annotations

from src.config import StrategyConfig
from src.strategies.schedule import Plan


def plan(n: int, cfg: StrategyConfig, head_lr: float) -> Plan:
    depth = n - 1 if cfg.unfreeze_depth == "all" else cfg.unfreeze_depth
    out: Plan = []
    for index in range(n):
        d = n - 1 - index  # distance from the top
        lr = head_lr / cfg.lr_decay**d
        out.append((lr, d * cfg.unfreeze_every) if d <= depth else (0.0, None))
    return out
