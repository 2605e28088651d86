"""What a strategy is, and the registry of strategies by name.

A strategy is one class in one module of this package: its config (a `StrategyConfig` subclass with
only its own knobs), its plan (which layer groups train, from which epoch, at what LR), its checks,
which parameters of a training group train (`trains_param`), and its optimizer hooks (weight decay,
a penalty added to the loss). torch is not imported here: the config gate registers strategies
without loading it. `@register` (src/strategies/registry.py) makes it known by name to the config
gate and to training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar

from src.config import StrategyConfig
from src.strategies.groups import LayerGroup, ParamInfo
from src.strategies.registry import STRATEGIES, register, strategy_class

if TYPE_CHECKING:
    import torch
    from torch import nn

# What `plan` returns: one (lr, start_epoch) per layer group, bottom first; None = never trains.
Plan = list[tuple[float, int | None]]


class Strategy:
    """Base class: set `name` and `Config`, implement `plan`; override the hooks a strategy needs."""

    name: ClassVar[str]
    Config: ClassVar[type[StrategyConfig]] = StrategyConfig
    # The name of `trains_param`'s rule, as param_groups.json records it ("params"). "all" promises
    # that a training group trains every parameter; plan_schedule holds a strategy to it.
    params: ClassVar[str] = "all"

    def __init__(self, cfg: StrategyConfig) -> None:
        if not isinstance(cfg, self.Config):
            raise TypeError(f"strategy {self.name} takes a {self.Config.__name__}, not a {type(cfg).__name__}")
        self.cfg = cfg

    def check(self, num_groups: int, epochs: int) -> None:
        """Checks that need the model's group count or the run's length; raise ConfigError (one line)."""

    def plan(self, num_groups: int, head_lr: float) -> Plan:
        """Every group's (peak LR, first epoch it trains), bottom first; (0.0, None) = never trains."""
        raise NotImplementedError

    def trains_param(self, depth: int, param: ParamInfo) -> bool:
        """Whether `param` trains while its group does; `depth` is the group's distance from the top
        (0 = the new head). Every parameter, unless a strategy trains only some (BitFit). The
        schedule counts, and `apply_epoch` thaws, only what this lets through."""
        return True

    def weight_decay(self, weight_decay: float) -> float:
        """The optimizer's weight decay for this strategy (optim.weight_decay unless it replaces it)."""
        return weight_decay

    def penalty(self, model: nn.Module, groups: Sequence[LayerGroup]) -> Callable[[], torch.Tensor] | None:
        """A term added to the training loss, built on the pretrained model before training; None = none."""
        return None

    def record(self) -> dict[str, object]:
        """What result.json records about this strategy's own settings (`strategy_params`)."""
        return self.cfg.knobs()


def strategy_for(cfg: StrategyConfig) -> Strategy:
    """The strategy object a config describes (an unknown name: the config gate's one-line error)."""
    return strategy_class(cfg.name)(cfg)


__all__ = ["STRATEGIES", "Plan", "Strategy", "register", "strategy_for"]
