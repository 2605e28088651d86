"""Discriminative learning rates with optional gradual unfreezing (ULMFiT, Howard & Ruder 2018):
each group below the head trains at the LR of the group above / `lr_decay`; only the top
`unfreeze_depth` backbone groups train; with `unfreeze_every` = k, one more group joins every k
epochs, from the top."""

from __future__ import annotations

from dataclasses import dataclass
from src.config import ConfigError, StrategyConfig
from src.strategies.base import Plan, Strategy, register


@dataclass(frozen=True)
class LayerwiseConfig(StrategyConfig):
    name: str = "layerwise"
    # Each group below the head trains at the previous group's LR / lr_decay.
    lr_decay: float = 2.6
    # Number of backbone groups (counted from the top) that train besides the head; "all" = every group.
    unfreeze_depth: int | str = "all"
    # Gradual unfreezing: one more group every N epochs, from the top (0 = all at once).
    unfreeze_every: int = 0

    def check(self) -> None:
        if self.lr_decay < 1:
            # The opposite convention to timm's/MAE's `layer_decay` (a multiplier, 0.65-0.75): a value
            # below 1 here would train the stem faster than the top group, never what is meant.
            raise ConfigError(
                f"strategy.lr_decay={self.lr_decay!r} must be >= 1: each group below the head trains at the "
                f"LR of the group above divided by lr_decay (ULMFiT's 2.6); timm/MAE layer_decay=x is lr_decay=1/x"
            )
        if self.unfreeze_every < 0:
            raise ConfigError(f"strategy.unfreeze_every={self.unfreeze_every!r} must be >= 0")
        if isinstance(self.unfreeze_depth, str) and self.unfreeze_depth != "all":
            raise ConfigError(f"strategy.unfreeze_depth={self.unfreeze_depth!r} is not allowed (expected int | 'all')")
        if self.unfreeze_depth != "all" and self.unfreeze_depth < 0:
            raise ConfigError(f"strategy.unfreeze_depth={self.unfreeze_depth!r} must be >= 0 or 'all'")


@register
class Layerwise(Strategy):
    name = "layerwise"
    Config = LayerwiseConfig

    def check(self, num_groups: int, epochs: int) -> None:
        backbone = num_groups - 1
        if self.cfg.unfreeze_depth != "all" and self.cfg.unfreeze_depth > backbone:
            raise ConfigError(
                f"strategy.unfreeze_depth={self.cfg.unfreeze_depth} exceeds this model's {backbone} backbone groups "
                f"(allowed: 0..{backbone} or 'all')"
            )

    def plan(self, num_groups: int, head_lr: float) -> Plan:
        cfg = self.cfg
        depth = num_groups - 1 if cfg.unfreeze_depth == "all" else cfg.unfreeze_depth
        out: Plan = []
        for index in range(num_groups):
            d = num_groups - 1 - index  # distance from the top
            lr = head_lr / cfg.lr_decay**d
            out.append((lr, d * cfg.unfreeze_every) if d <= depth else (0.0, None))
        return out
