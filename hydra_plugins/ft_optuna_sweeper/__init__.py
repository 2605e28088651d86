"""`hydra/sweeper=optuna`: a Hydra sweeper on Optuna 5, a drop-in for hydra-optuna-sweeper 1.3, with pruning.

Any Hydra app: the task's return value is the objective, and `report(step, value)` (below) lets the
pruner stop a trial. An app may bring its own sweep driver (`sweep_with`): this project's src.train
scores trials on their result.json, with an exact budget shared by workers (src/sweep_driver.py).

Hydra finds it by scanning the `hydra_plugins` namespace package (no __init__.py in hydra_plugins/
itself, so other plugins installed there still merge with this one). Nothing heavy is imported
here: Hydra imports every module of `hydra_plugins` when it scans, in every Hydra application.
"""

from typing import Any

__all__ = ["Pruned", "SettingError", "report", "sweep_with"]

from hydra_plugins.ft_optuna_sweeper.errors import SettingError


def report(step: int, value: Any) -> None:
    """Record this trial's value(s) at `step` (0, 1, ...); raise `Pruned` when the pruner says stop.
    Does nothing outside a sweep of this plugin. (hydra_plugins/ft_optuna_sweeper/_report.py)"""
    from hydra_plugins.ft_optuna_sweeper._report import report as _report

    _report(step, value)


def sweep_with(driver: str) -> Any:
    """Mark a task function as swept by its own driver (optuna_sweeper.sweep_with)."""
    from hydra_plugins.ft_optuna_sweeper.optuna_sweeper import sweep_with as _sweep_with

    return _sweep_with(driver)


def __getattr__(name: str) -> Any:
    if name == "Pruned":  # optuna is imported only when a task asks for it
        from hydra_plugins.ft_optuna_sweeper._report import Pruned

        return Pruned
    raise AttributeError(name)
