"""Stopping hopeless sweep trials early: our own rule for any study, Optuna's for one objective.

A trial reports after every epoch (run()'s `on_epoch`). Optuna's pruners cannot judge a
multi-objective study (`trial.report` is not supported there), so for accuracy-vs-cost studies we
use a rule of our own, `dominated`:

    after epoch k, stop the trial if a finished trial had, at its epoch k, at least the same
    validation accuracy (plus `min_delta`) at no higher cumulative cost.

Both numbers are known exactly at epoch k (cost is counted, not estimated), so the rule only
bets that accuracy at epoch k ranks trials as their final accuracy would. With accuracy as the
only objective the cost condition drops out: a trial stops when a finished trial was at least as
accurate at the same epoch, i.e. when it is not ahead of the best curve so far. Optuna's median
and Hyperband pruners are on offer for a single objective too. Each trial's curve of (best val
accuracy so far, cumulative cost) is stored in the study (user attribute `curve`), so workers on
several machines judge against the same finished trials.

`EpochReporter` is run()'s `on_epoch` callback: it returns the reason to stop the trial now, or
None to go on. run() records a stopped trial as `status: pruned` with that reason and returns its
record; the sweep turns that record into `optuna.TrialPruned`. Nothing is raised through run().
"""

from __future__ import annotations

import logging
from typing import Any

import optuna

from src.config import ConfigError
from src.record.schema import EpochRecord
from hydra_plugins.ft_optuna_sweeper._pruners import EpochsHyperband
from hydra_plugins.ft_optuna_sweeper.halving import (HALVING_RATE, dominates, halving_keeps, halving_rungs, pareto_ranks,
                                                      spread_order)
from src.search.prune_spec import PruneSpec

__all__ = ["EpochReporter", "PruneSpec", "dominating_trial", "halving_keeps", "halving_rungs", "pareto_ranks", "resolve", "spread_order"]

log = logging.getLogger(__name__)

# Objectives that exist after every epoch (maximised), and the running total of each cost.
PER_EPOCH = ("val_acc", "val_balanced_acc")
CUM_COST = {"train_flops": "train_flops_cum", "train_time_s": "train_s_cum"}


def resolve(spec: PruneSpec, objectives: list[str]) -> str:
    """The pruner that applies to these objectives; an explicit choice that cannot apply is an error."""
    single = len(objectives) == 1 and objectives[0] in PER_EPOCH
    pair = len(objectives) == 2 and objectives[0] in PER_EPOCH and objectives[1] in CUM_COST
    if spec.name == "auto":
        return "halving" if single or pair else "none"
    if spec.name in ("median", "hyperband") and not single:
        raise ConfigError(
            f"hydra.sweeper.pruner.name={spec.name} needs a single per-epoch objective ({' | '.join(PER_EPOCH)}), "
            f"not objectives={objectives}; use pruner.name=dominated for accuracy vs cost"
        )
    if spec.name in ("dominated", "halving") and not (single or pair):
        raise ConfigError(
            f"hydra.sweeper.pruner.name={spec.name} needs objectives=[{' | '.join(PER_EPOCH)}] or "
            f"[{' | '.join(PER_EPOCH)}, {' | '.join(CUM_COST)}], not {objectives}"
        )
    return spec.name


def optuna_pruner(name: str, spec: PruneSpec, epochs: int) -> optuna.pruners.BasePruner:
    """The study's Optuna pruner: Optuna's own for median and hyperband, else none."""
    if name == "median":
        # Optuna's steps are our 0-based epochs: step `after - 1` is the first that may prune.
        return optuna.pruners.MedianPruner(n_startup_trials=spec.startup, n_warmup_steps=spec.after - 1)
    if name == "hyperband":
        # Resources are epochs trained (step + 1): first rung after epoch `after`, a trial's budget `epochs`.
        return EpochsHyperband(min_resource=spec.after, max_resource=epochs, reduction_factor=HALVING_RATE)
    return optuna.pruners.NopPruner()  # none, or our own rule (which does not go through Optuna)


def dominating_trial(
    k: int, acc: float, cost: float | None, finished: list[optuna.trial.FrozenTrial], min_delta: float
) -> int | None:
    """The number of a finished trial that dominated (acc, cost) at epoch k, if any; cost None:
    accuracy alone (a single-objective study)."""
    for t in finished:
        curve = t.user_attrs.get("curve") or []
        if len(curve) > k and dominates((curve[k][0], 0.0 if cost is None else curve[k][1]),
                                        (acc, 0.0 if cost is None else cost), min_delta, strict=False):
            return t.number
    return None


class EpochReporter:
    """run()'s `on_epoch` for one trial: records the curve, and returns why the trial should stop
    now when the rule says so (None: go on). `epochs` is the trial's whole run: no rule judges its
    last epoch, since stopping a trial that has trained in full would only throw its result away."""

    def __init__(
        self, study: optuna.Study, trial: optuna.Trial, objectives: list[str], mode: str, spec: PruneSpec,
        running_best: bool, *, epochs: int,
    ):
        self.study, self.trial, self.objectives, self.mode, self.spec = study, trial, objectives, mode, spec
        self.epochs = epochs
        self.rungs = halving_rungs(spec.after, epochs)
        self.running_best = running_best  # the run keeps its best epoch: judge that, not the last one
        self.curve: list[list[float]] = []
        self.best = float("-inf")

    def __call__(self, record: EpochRecord | dict[str, Any]) -> str | None:
        rec = record if isinstance(record, EpochRecord) else EpochRecord.from_json(record)
        k = int(rec.epoch or 0)
        value = float(rec.get(self.objectives[0])) if self.objectives[0] in PER_EPOCH else float("nan")
        self.best = max(self.best, value) if self.running_best else value
        cost_key = CUM_COST.get(self.objectives[1]) if len(self.objectives) > 1 else None
        cost = float(rec.get(cost_key)) if cost_key and rec.get(cost_key) is not None else float("nan")
        self.curve.append([self.best, cost])
        self.trial.set_user_attr("curve", self.curve)
        self.trial.set_user_attr("epochs_trained", k + 1)
        if len(self.objectives) == 1 and self.objectives[0] in PER_EPOCH:
            # Optuna's convention (its pruners, optuna-dashboard's intermediate values): one value
            # per step. Optuna has no intermediate values for a multi-objective study.
            self.trial.report(self.best, k)
        # Every rule passes here: none judges before epoch `after` nor at the last one.
        if self.mode == "none" or k + 1 < self.spec.after or k + 1 >= self.epochs:
            return None
        if self.mode in ("median", "hyperband"):
            if self.trial.should_prune():
                return f"{self.mode} pruner after epoch {k + 1}: {self.objectives[0]} {self.best:.4f}"
            return None
        if self.mode == "halving":
            return self._halving(k, cost_key, cost)
        return self._dominated(k, cost_key, cost)

    def _dominated(self, k: int, cost_key: str | None, cost: float) -> str | None:
        finished = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if len(finished) < self.spec.startup:
            return None
        by = dominating_trial(k, self.best, cost if cost_key else None, finished, self.spec.min_delta)
        if by is None:
            return None
        if cost_key:
            return (f"dominated after epoch {k + 1} by trial {by}: {self.objectives[0]} {self.best:.4f} "
                    f"at {self.objectives[1]} {cost:.4g} is no better at no lower cost")
        return f"dominated after epoch {k + 1} by trial {by}: {self.objectives[0]} {self.best:.4f} is no better"

    def _halving(self, k: int, cost_key: str | None, cost: float) -> str | None:
        if k not in self.rungs:
            return None
        # Everyone who reached epoch k: finished and stopped trials, and those still running on
        # other workers (their curves so far are in the study), as asynchronous halving does.
        # No start-up wait: the first trials to reach a rung go on.
        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING)
        others = [
            (float(c[k][0]), float(c[k][1]))
            for t in self.study.get_trials(deepcopy=False, states=states)
            if t.number != self.trial.number and len(c := t.user_attrs.get("curve") or []) > k
        ]
        if halving_keeps((self.best, cost), others, use_cost=cost_key is not None):
            return None
        n = len(others) + 1
        return (
            f"halving after epoch {k + 1}: {self.objectives[0]} {self.best:.4f}"
            + (f" at {self.objectives[1]} {cost:.4g}" if cost_key else "")
            + f" is not in the top {max(n // HALVING_RATE, 1)} of the {n} trials that reached it"
        )
