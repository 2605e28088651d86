"""Surgical fine-tuning (Lee et al. 2023): one chosen backbone group (`surgical_group`, 0 = the
stem) and the head train; every other group stays frozen."""

from __future__ import annotations

from dataclasses import dataclass

from src.config import ConfigError
from src.strategies.base import Plan, register
from src.strategies.full import Full, FullConfig


@dataclass(frozen=True)
class SurgicalConfig(FullConfig):
    name: str = "surgical"
    # The one backbone group that trains besides the head (0 = the stem), at backbone_lr_scale x the head LR.
    surgical_group: int = 0


@register
class Surgical(Full):
    name = "surgical"
    Config = SurgicalConfig

    def check(self, num_groups: int, epochs: int) -> None:
        if not 0 <= self.cfg.surgical_group < num_groups - 1:
            raise ConfigError(
                f"strategy.surgical_group={self.cfg.surgical_group} is not a backbone group of this model "
                f"(allowed: 0..{num_groups - 2}, 0 = the stem)"
            )

    def plan(self, num_groups: int, head_lr: float) -> Plan:
        out: Plan = [(0.0, None)] * (num_groups - 1) + [(head_lr, 0)]
        out[self.cfg.surgical_group] = (head_lr * self.cfg.backbone_lr_scale, 0)
        return out
