"""Strategies: which layer groups train, from which epoch, at what learning rate.

`groups.py` cuts a model into layer groups (timm's `group_matcher`); `base.py` says what a strategy
is, `registry.py` finds one by name; each strategy is one module here (`frozen.py`, `full.py`, `layerwise.py`,
`lpft.py`, `surgical.py`, `bitfit.py`, `l2sp.py`) holding its config, plan, checks, parameter rule
(`trains_param`) and optimizer hooks, registered with `@register`; `schedule.py` turns a strategy's
plan into the run's Schedule and applies it epoch by epoch. A new strategy is a new module here plus
`conf/strategy/<name>.yaml` setting only what differs from its defaults: every module in this package is
imported (and so registered) below, and `registry.py` imports this package on any lookup. None of
them imports torch at import time, so the config gate stays light.
"""

import importlib
import pkgutil

from src.strategies.base import STRATEGIES, Plan, Strategy, register, strategy_for
from src.strategies.groups import LayerGroup, ParamInfo, is_bias_or_norm, layer_groups
from src.strategies.schedule import GroupPlan, Schedule, apply_epoch, plan_schedule

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "GroupPlan", "LayerGroup", "ParamInfo", "Plan", "STRATEGIES", "Schedule", "Strategy", "apply_epoch",
    "is_bias_or_norm", "layer_groups", "plan_schedule", "register", "strategy_for",
]
