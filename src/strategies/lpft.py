"""LP-FT (Kumar et al. 2022): a linear probe first, then everything fine-tuned.

The head trains from epoch 0; the backbone joins at epoch `probe_epochs` at `backbone_lr_scale` x
the head LR, so it starts from a trained head instead of a random one that distorts its features.
(The head keeps its own LR in the second phase, where the paper lowers every LR.)"""

from __future__ import annotations

from dataclasses import dataclass

from src.config import ConfigError
from src.strategies.base import Plan, register
from src.strategies.full import Full, FullConfig


@dataclass(frozen=True)
class LPFTConfig(FullConfig):
    name: str = "lpft"
    # Epochs of linear probing (head only) before the whole network trains.
    probe_epochs: int = 2


@register
class LPFT(Full):
    name = "lpft"
    Config = LPFTConfig

    def check(self, num_groups: int, epochs: int) -> None:
        if epochs < 2:  # "must be in 1..0" named a range with nothing in it
            raise ConfigError(f"strategy=lpft needs trainer.epochs >= 2 (trainer.epochs={epochs}): a probe phase "
                              f"(strategy.probe_epochs={self.cfg.probe_epochs}) and a fine-tuning phase")
        if not 0 < self.cfg.probe_epochs < epochs:
            raise ConfigError(
                f"strategy.probe_epochs={self.cfg.probe_epochs} must be in 1..{epochs - 1} (trainer.epochs={epochs}): "
                f"LP-FT needs a probe phase and a fine-tuning phase"
            )

    def plan(self, num_groups: int, head_lr: float) -> Plan:
        return [(head_lr * self.cfg.backbone_lr_scale, self.cfg.probe_epochs)] * (num_groups - 1) + [(head_lr, 0)]
