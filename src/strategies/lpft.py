"""LP-FT (Kumar et al. 2022): a linear probe first, then everything fine-tuned.

The head trains from epoch 0; the backbone joins at epoch `probe_epochs` at `backbone_lr_scale` x
the head LR, so it starts from a trained head instead of a random one that distorts its features.
(The head keeps its own LR in the second phase, where the paper lowers every LR.)"""

from __future__ import annotations

from src.config import ConfigError, StrategyConfig
from src.strategies.schedule import Plan


def check(n: int, cfg: StrategyConfig, epochs: int) -> None:
    if not 0 < cfg.probe_epochs < epochs:
        raise ConfigError(
            f"strategy.probe_epochs={cfg.probe_epochs} must be in 1..{epochs - 1} (trainer.epochs={epochs}): "
            f"LP-FT needs a probe phase and a fine-tuning phase"
        )


def plan(n: int, cfg: StrategyConfig, head_lr: float) -> Plan:
    return [(head_lr * cfg.backbone_lr_scale, cfg.probe_epochs)] * (n - 1) + [(head_lr, 0)]
