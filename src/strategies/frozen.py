"""Frozen backbone: only the new head trains (a linear probe on the pretrained features)."""

from __future__ import annotations

from dataclasses import dataclass

from src.config import StrategyConfig
from src.strategies.base import Plan, Strategy, register


@dataclass(frozen=True)
class FrozenConfig(StrategyConfig):
    name: str = "frozen"


@register
class Frozen(Strategy):
    name = "frozen"
    Config = FrozenConfig

    def plan(self, num_groups: int, head_lr: float) -> Plan:
        return [(0.0, None)] * (num_groups - 1) + [(head_lr, 0)]
