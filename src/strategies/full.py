"""Full fine-tuning: every layer trains from the start, the backbone at `backbone_lr_scale` x the
head LR (the new head starts random and needs the larger rate)."""

from __future__ import annotations

from src.config import StrategyConfig
from src.strategies.schedule import Plan


def plan(n: int, cfg: StrategyConfig, head_lr: float) -> Plan:
    return [(head_lr * cfg.backbone_lr_scale, 0)] * (n - 1) + [(head_lr, 0)]
