"""A strategy's schedule: for every layer group, the learning rate it trains at and the epochs in
which it trains.

The schedule is plain data: computed before training from the strategy's `plan` (its module in
this package maps the group count and the head LR to one (lr, start epoch) per group) and its
`trains_param` rule (which parameters of a training group train), printed, written to
`param_groups.json`, and consulted by the training loop through `apply_epoch`. Nothing here trains
anything, and nothing here imports torch until `apply_epoch` is called.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from src.config import ConfigError, StrategyConfig
from src.strategies.base import Strategy, strategy_for
from src.strategies.groups import LayerGroup

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class GroupPlan:
    name: str
    index: int  # 0 = bottom of the network
    depth: int  # distance from the top: head = 0
    num_params: int
    lr: float  # peak learning rate while the group trains
    start_epoch: int | None  # first epoch it trains, None = never
    epochs: tuple[int, ...]  # every epoch in which it trains
    # What trains while the group does (the strategy's trains_param); num_params counts these.
    # Not written to param_groups.json, whose "params" names the rule.
    param_names: tuple[str, ...] = field(default=(), repr=False)

    def to_dict(self) -> dict:
        return {"name": self.name, "index": self.index, "depth": self.depth, "num_params": self.num_params,
                "lr": self.lr, "start_epoch": self.start_epoch, "epochs": list(self.epochs)}


@dataclass(frozen=True)
class Schedule:
    strategy: str
    epochs: int
    frozen_bn: str
    groups: tuple[GroupPlan, ...]
    # The strategy's parameter rule by name (Strategy.params): "all", or e.g. "bias_norm" (BitFit).
    params: str = "all"

    def trains(self, group: int, epoch: int) -> bool:
        start = self.groups[group].start_epoch
        return start is not None and epoch >= start

    def active(self, epoch: int) -> tuple[bool, ...]:
        return tuple(self.trains(i, epoch) for i in range(len(self.groups)))

    @property
    def trainable_params(self) -> int:
        """Parameters that train in at least one epoch."""
        return sum(g.num_params for g in self.groups if g.epochs)

    def to_dict(self) -> dict:
        return {
            "strategy": self.strategy,
            "epochs": self.epochs,
            "frozen_bn": self.frozen_bn,
            "params": self.params,
            "groups": [g.to_dict() for g in self.groups],
        }

    def table(self) -> str:
        lines = [f"{'#':>2}  {'group':<24}{'params':>11}  {'lr':>9}  trains in epochs"]
        for g in reversed(self.groups):
            when = _epochs_text(g.epochs, self.epochs)
            lr = f"{g.lr:.2e}" if g.epochs else "-"
            lines.append(f"{g.index:>2}  {g.name:<24}{g.num_params:>11,}  {lr:>9}  {when}")
        return "\n".join(lines)


def _epochs_text(epochs: Sequence[int], total: int) -> str:
    if not epochs:
        return "frozen"
    if len(epochs) == total:
        return f"all ({epochs[0]}-{epochs[-1]})"
    return f"{epochs[0]}-{epochs[-1]}"


def plan_schedule(strategy: Strategy | StrategyConfig, groups: Sequence[LayerGroup], head_lr: float,
                  epochs: int) -> Schedule:
    """The whole schedule of a run, fixed before training starts. Raises ConfigError (one line) when
    the strategy's settings do not fit this model or run, or give an LR that cannot train."""
    if isinstance(strategy, StrategyConfig):
        strategy = strategy_for(strategy)
    cfg = strategy.cfg
    strategy.check(len(groups), epochs)
    try:
        plan = strategy.plan(len(groups), head_lr)
    except ArithmeticError as err:  # e.g. lr_decay ** depth overflowing
        raise ConfigError(f"strategy={cfg.name}: the LRs of its {len(groups)} groups cannot be computed from "
                          f"optim.lr={head_lr!r} and the strategy's settings ({type(err).__name__}: {err})") from None
    out = []
    for index, (group, (lr, start)) in enumerate(zip(groups, plan)):
        trained = tuple(range(start, epochs)) if start is not None else ()
        if not math.isfinite(lr) or lr < 0:
            raise ConfigError(f"strategy {cfg.name} gave group {group.name} an invalid lr {lr!r}")
        if start is not None and lr < sys.float_info.min:
            # An LR that underflowed to 0 (or a subnormal) "trains" a group that can never move.
            raise ConfigError(f"strategy {cfg.name} gives group {group.name} an LR of {lr!r}, which cannot train it "
                              f"({_knobs_text(cfg)} over {len(groups) - 1 - index} groups, "
                              f"optim.lr={head_lr!r}); freeze it with strategy.unfreeze_depth instead")
        depth = len(groups) - 1 - index
        params = tuple(p for p in group.params if strategy.trains_param(depth, p))
        if strategy.params == "all" and len(params) != len(group.params):
            raise TypeError(f"{type(strategy).__name__}.trains_param leaves parameters out: name its rule in `params`")
        out.append(GroupPlan(group.name, index, depth, sum(p.numel for p in params), lr, start, trained,
                             tuple(p.name for p in params)))
    return Schedule(cfg.name, epochs, cfg.frozen_bn, tuple(out), strategy.params)


def _knobs_text(cfg: StrategyConfig) -> str:
    return ", ".join(f"strategy.{k}={v!r}" for k, v in cfg.knobs().items()) or f"strategy={cfg.name}"


def apply_epoch(model: nn.Module, groups: Sequence[LayerGroup], schedule: Schedule, epoch: int) -> int:
    """Put the model in the state the schedule asks for at `epoch`; returns the trainable param count.

    Parameters of groups that are not training, and those the strategy's rule leaves out (the
    schedule's `GroupPlan.param_names`), get `requires_grad=False`, so autograd stops at the
    lowest trainable group and frozen layers cost no backward pass. With `frozen_bn="eval"`, their
    BatchNorm layers also keep their running statistics (eval mode), so a frozen group's state is
    bitwise unchanged by training; with "all", every BatchNorm layer does, training or not.
    """
    from torch.nn.modules.batchnorm import _BatchNorm

    model.train()
    active = schedule.active(epoch)
    group_of = {name: i for i, g in enumerate(groups) for name in g.param_names}
    thawed = {name for plan in schedule.groups if active[plan.index] for name in plan.param_names}
    trainable = 0
    for name, param in model.named_parameters():
        on = name in thawed
        param.requires_grad_(on)
        trainable += param.numel() if on else 0
    if schedule.frozen_bn in ("eval", "all"):
        for module_name, module in model.named_modules():
            if isinstance(module, _BatchNorm):
                own = [f"{module_name}.{n}" for n, _ in module.named_parameters(recurse=False)]
                if schedule.frozen_bn == "all" or (own and not any(active[group_of[n]] for n in own)):
                    module.eval()
    return trainable
