"""Surgical fine-tuning (Lee et al. 2023): one chosen backbone group (`surgical_group`, 0 = the
stem) and the head train; every other group stays frozen."""

from __future__ import annotations

from src.config import ConfigError, StrategyConfig
from src.strategies.schedule import Plan


def check(n: int, cfg: StrategyConfig, epochs: int) -> None:
    if not 0 <= cfg.surgical_group < n - 1:
        raise ConfigError(
            f"strategy.surgical_group={cfg.surgical_group} is not a backbone group of this model "
            f"(allowed: 0..{n - 2}, 0 = the stem)"
        )


def plan(n: int, cfg: StrategyConfig, head_lr: float) -> Plan:
    out: Plan = [(0.0, None)] * (n - 1) + [(head_lr, 0)]
    out[cfg.surgical_group] = (head_lr * cfg.backbone_lr_scale, 0)
    return out
