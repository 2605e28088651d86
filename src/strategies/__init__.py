"""Layer groups and fine-tuning strategies.

`groups.py` cuts a model into layer groups (timm's `group_matcher`); each strategy is one small file
here (`frozen.py`, `full.py`, `layerwise.py`, `lpft.py`, `surgical.py`, `bitfit.py`, `l2sp.py`)
whose `plan()` gives every group its LR and first epoch, plus an optional `check()` of its
settings; `schedule.py` turns that into the run's Schedule and applies it epoch by epoch. A new
strategy is a new file with a `plan()`, a `conf/strategy/<name>.yaml`, and its name in
`StrategyConfig.name`.
"""

from src.strategies.groups import LayerGroup, is_bias_or_norm, layer_groups
from src.strategies.l2sp import l2sp_penalty
from src.strategies.schedule import GroupPlan, Plan, Schedule, apply_epoch, plan_schedule

__all__ = [
    "GroupPlan", "LayerGroup", "Plan", "Schedule", "apply_epoch", "is_bias_or_norm", "l2sp_penalty", "layer_groups",
    "plan_schedule",
]
