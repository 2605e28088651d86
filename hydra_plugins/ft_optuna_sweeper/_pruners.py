"""Stopping hopeless trials early, for any application: the task reports a value (or one per
objective) each step (__report.py), and the pruner named by `hydra.sweeper.pruner.name` judges it.

- median, hyperband: Optuna's own pruners (one objective: Optuna keeps no intermediate values for
  several). Hyperband counts steps done (step s is s + 1 of them), so its rungs are halving's.

`report` is not told the task's last step, so any rule may judge it (src.train's EpochReporter,
which knows the epochs, never does).
- halving: successive halving (halving.py). At steps after, 3*after, 9*after, ... (counted from 1:
  step s is the (s+1)-th report) a trial goes on only if it is in the top third of every trial that
  reached that step, running ones included. With two objectives it ranks by Pareto rank, then by
  spread (MO-ASHA). Steps that are no rung are never judged.
- dominated: stop at step s when a finished trial was at least as good at step s on every
  objective (one or two), once `startup` trials finished.
- auto: halving where it applies (one or two objectives), else none.

Each trial's reports are kept in the study (user attribute `steps`: [step, value, ...]), so workers
on other machines judge against the same trials.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any, Sequence

import optuna
from optuna.trial import TrialState

from hydra_plugins.ft_optuna_sweeper.errors import SettingError
from hydra_plugins.ft_optuna_sweeper.halving import HALVING_RATE, dominates, halving_keeps
from hydra_plugins.ft_optuna_sweeper.prune_spec import PruneSpec

STEPS_ATTR = "steps"
log = logging.getLogger(__name__)


def resolve(spec: PruneSpec, n_objectives: int) -> str:
    """The pruner that applies to a study with this many objectives; an explicit one that cannot apply is refused."""
    if spec.name == "auto":
        return "halving" if n_objectives <= 2 else "none"
    if spec.name in ("median", "hyperband") and n_objectives != 1:
        raise SettingError(f"hydra.sweeper.pruner.name={spec.name} judges one objective, not {n_objectives}: use "
                           "halving or dominated")
    if spec.name in ("halving", "dominated") and n_objectives > 2:
        raise SettingError(f"hydra.sweeper.pruner.name={spec.name} judges one or two objectives, not {n_objectives}")
    return spec.name


def optuna_pruner(mode: str, spec: PruneSpec) -> optuna.pruners.BasePruner:
    """The study's Optuna pruner: Optuna's own for median and hyperband, else none (ours do not go through Optuna)."""
    if mode == "median":  # steps count from 0: step `after - 1` is the first that may prune
        return optuna.pruners.MedianPruner(n_startup_trials=spec.startup, n_warmup_steps=spec.after - 1)
    if mode == "hyperband":  # max_resource "auto": the steps of the first trial to complete
        return EpochsHyperband(min_resource=spec.after, reduction_factor=HALVING_RATE)
    return optuna.pruners.NopPruner()


class EpochsHyperband(optuna.pruners.HyperbandPruner):
    """Optuna's Hyperband with each step counted as the resource used so far: step s (0-based, as
    reports number epochs) is s + 1 steps done. Optuna compares the step number itself with its
    rungs (min_resource x 3^i), so with 0-based steps `min_resource=after` would first judge after
    step `after + 1` (counted from 1), one later than halving and median. The trial's reports stay
    as they were (step s in the study and the dashboard); only what the pruner sees is shifted."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if trial.last_step is None:
            return False
        done = copy.copy(trial)  # the same trial (id, rung attributes) with steps counted from 1
        done.intermediate_values = {step + 1: value for step, value in trial.intermediate_values.items()}
        return super().prune(study, done)


def as_point(values: Sequence[float], directions: Sequence[str]) -> tuple[float, float]:
    """Values as halving's (accuracy, cost) point: the first objective maximised, the second minimised."""
    first = values[0] if directions[0] == "maximize" else -values[0]
    if len(values) == 1:
        return float(first), 0.0
    return float(first), float(values[1] if directions[1] == "minimize" else -values[1])


def is_rung(step: int, after: int) -> bool:
    n = step + 1
    while n % HALVING_RATE == 0 and n > after:
        n //= HALVING_RATE
    return n == after


class StepJudge:
    """One trial's judge: records each report, and says why the trial should stop now (None: go on)."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial, mode: str, spec: PruneSpec):
        self.study, self.trial, self.mode, self.spec = study, trial, mode, spec
        self.directions = [d.name.lower() for d in study.directions]
        self.steps: list[list[float]] = list(trial.user_attrs.get(STEPS_ATTR) or [])

    def __call__(self, step: int, values: Sequence[float]) -> str | None:
        if len(values) != len(self.directions):
            raise SettingError(f"report({step}, ...): {len(values)} value(s) for a study of {len(self.directions)} "
                               "objective(s)")
        if any(int(row[0]) == int(step) for row in self.steps):  # kept once, as Optuna's trial.report keeps it:
            log.warning("report(%d, ...) again in trial %d: the first report of a step counts", step, self.trial.number)
            return None  # twice in `steps`, this trial would count twice at that rung of every later trial
        self.steps.append([int(step), *map(float, values)])
        self.trial.set_user_attr(STEPS_ATTR, self.steps)
        if len(values) == 1:  # Optuna's intermediate values (its pruners, optuna-dashboard)
            self.trial.report(float(values[0]), int(step))
        if self.mode == "none" or step + 1 < self.spec.after:
            return None
        if any(math.isnan(v) for v in values):  # ranks nowhere: compared to it, every trial looked no better
            return f"{self.mode} at step {step}: it reported NaN"
        if self.mode in ("median", "hyperband"):
            return f"{self.mode} pruner at step {step}" if self.trial.should_prune() else None
        point = as_point(values, self.directions)
        if self.mode == "halving":
            return self._halving(step, point)
        return self._dominated(step, point)

    def _at(self, states: tuple[TrialState, ...], step: int) -> list[tuple[int, tuple[float, float]]]:
        """(number, point) of the other trials in these states that reported this step."""
        found = []
        for t in self.study.get_trials(deepcopy=False, states=states):
            if t.number == self.trial.number:
                continue
            for row in t.user_attrs.get(STEPS_ATTR) or []:
                if int(row[0]) == step:
                    found.append((t.number, as_point(row[1:], self.directions)))
        return found

    def _halving(self, step: int, point: tuple[float, float]) -> str | None:
        if not is_rung(step, self.spec.after):
            return None
        others = [p for _, p in self._at((TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING), step)]
        if halving_keeps(point, others, use_cost=len(self.directions) == 2):
            return None
        n = len(others) + 1
        return f"halving at step {step}: not in the top {max(n // HALVING_RATE, 1)} of the {n} trials that reached it"

    def _dominated(self, step: int, point: tuple[float, float]) -> str | None:
        if len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < self.spec.startup:
            return None
        for number, other in self._at((TrialState.COMPLETE,), step):
            if dominates(other, point, self.spec.min_delta, strict=False):
                return f"dominated at step {step} by trial {number}"
        return None


def plain_values(value: Any) -> list[float]:
    """A report's value(s) as a list of floats: a number (numpy's and torch's scalars and one-element
    arrays and tensors included, as float() takes them) or a sequence of numbers."""
    if isinstance(value, (str, bytes)):
        raise SettingError(f"report(step, {value!r}): a number, or one per objective, not a string")
    try:
        return [float(value)]
    except (TypeError, ValueError):  # a sequence (several objectives), or no number at all
        pass
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError):
        raise SettingError(f"report(step, {value!r}): a number, or a sequence of one per objective") from None
