"""Full fine-tuning: every layer trains from the start, the backbone at `backbone_lr_scale` x the
head LR (the new head starts random and needs the larger rate)."""

from __future__ import annotations

from dataclasses import dataclass

from src.config import ConfigError, StrategyConfig
from src.strategies.base import Plan, Strategy, register


@dataclass(frozen=True)
class FullConfig(StrategyConfig):
    name: str = "full"
    # The backbone's LR as a fraction of the head's.
    backbone_lr_scale: float = 0.1

    def check(self) -> None:
        if not self.backbone_lr_scale > 0:
            raise ConfigError(f"strategy.backbone_lr_scale={self.backbone_lr_scale!r} must be > 0")


@register
class Full(Strategy):
    name = "full"
    Config = FullConfig

    def plan(self, num_groups: int, head_lr: float) -> Plan:
        return [(head_lr * self.cfg.backbone_lr_scale, 0)] * (num_groups - 1) + [(head_lr, 0)]
