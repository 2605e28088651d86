"""Frozen backbone: only the new head trains (a linear probe on the pretrained features)."""

from __future__ import annotations

from src.config import StrategyConfig
from src.strategies.schedule import Plan


def plan(n: int, cfg: StrategyConfig, head_lr: float) -> Plan:
    return [(0.0, None)] * (n - 1) + [(head_lr, 0)]
