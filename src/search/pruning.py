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
import math
from typing import Any

import optuna

from src.config import ConfigError
from src.record.schema import EpochRecord
from src.reporting.pareto import dominates, pareto_ranks
from src.search.prune_spec import PruneSpec

__all__ = ["EpochReporter", "PruneSpec", "dominating_trial", "halving_keeps", "halving_rungs", "pareto_ranks", "resolve", "spread_order"]

log = logging.getLogger(__name__)

HALVING_RATE = 3  # successive halving keeps the top third at each rung (Li et al.'s eta = 3)
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
    if name == "median":
        # Optuna's steps are our 0-based epochs: step `after - 1` is the first that may prune.
        return optuna.pruners.MedianPruner(n_startup_trials=spec.startup, n_warmup_steps=spec.after - 1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=spec.after, max_resource=epochs, reduction_factor=3)
    return optuna.pruners.NopPruner()  # none, or our own rule (which does not go through Optuna)


def halving_rungs(after: int, epochs: int, rate: int = HALVING_RATE) -> list[int]:
    """The 0-based epochs at which successive halving judges: after, after*rate, ... (1-based)."""
    rungs, e = [], after
    while e < epochs:  # the last epoch is no rung: the trial has finished by then
        rungs.append(e - 1)
        e *= rate
    return rungs


def halving_keeps(point: tuple[float, float], others: list[tuple[float, float]], use_cost: bool,
                  rate: int = HALVING_RATE) -> bool:
    """Successive halving at one rung: is `point` among the top 1/rate of everyone who reached this
    epoch (itself included)? One objective: ranked by accuracy. With a cost: MO-ASHA's selection
    (Schmucker et al. 2021, "Multi-objective Asynchronous Successive Halving"): the quota is filled
    Pareto rank by Pareto rank, and within the rank that does not fit whole, by spread
    (`spread_order`). Ties go on, as in Optuna's halving. The first trials to reach a rung go on."""
    everyone = [*others, point]
    keep = max(len(everyone) // rate, 1)
    if not use_cost:
        return sum(p[0] > point[0] for p in others) < keep
    ranks = pareto_ranks(everyone)
    mine = ranks[-1]
    before = sum(r < mine for r in ranks)  # kept whole, ahead of point's rank
    same = [p for p, r in zip(everyone, ranks) if r == mine]
    if before + len(same) <= keep:
        return True
    if before >= keep:
        return False
    order = spread_order(same)
    return sum(key < order[point] for key in (order[p] for p in same if p != point)) < keep - before


def spread_order(points: list[tuple[float, float]]) -> dict[tuple[float, float], tuple[int, float]]:
    """Each point's place when one Pareto rank is cut: a sort key, lower first. NSGA-II's crowding
    distance (Deb et al. 2002), one of the two selections MO-ASHA studies: the rank's extremes
    first (in two objectives: its cheapest and its most accurate trial, the two ends an
    accuracy-vs-cost study is for), then by largest crowding distance, each objective scaled by its
    range in the rank. Chosen over the paper's other selection, the epsilon-net, because it needs
    neither a first point to grow the net from nor a scale for epsilon: the same points give the
    same order on every worker, and the cheap end is never left to a pick. The two ends share one
    key, so with one place left both go on (a rung of 3 to 5 may keep 2: the quota is soft there,
    as with ties). Equal points share one key too; a point with a NaN comes last."""
    distinct = sorted({p for p in points if not any(math.isnan(v) for v in p)})
    dist = dict.fromkeys(distinct, 0.0)
    if len(distinct) <= 2:
        return {p: (0, 0.0) if p in dist else (2, 0.0) for p in points}
    for axis in (0, 1):
        line = sorted(distinct, key=lambda p: p[axis])
        span = line[-1][axis] - line[0][axis] or 1.0
        for left, mid, right in zip(line, line[1:], line[2:]):
            dist[mid] += (right[axis] - left[axis]) / span
    # Within one rank no point dominates another, so accuracy and cost rise together: the cheapest
    # point is also the least accurate, and the most accurate the dearest.
    ends = {min(distinct, key=lambda p: (p[1], -p[0])), max(distinct, key=lambda p: (p[0], -p[1]))}
    return {p: (0, 0.0) if p in ends else (1, -dist[p]) if p in dist else (2, 0.0) for p in points}


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
    now when the rule says so (None: go on)."""

    def __init__(
        self, study: optuna.Study, trial: optuna.Trial, objectives: list[str], mode: str, spec: PruneSpec,
        running_best: bool, epochs: int = 0,
    ):
        self.study, self.trial, self.objectives, self.mode, self.spec = study, trial, objectives, mode, spec
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
        if self.mode == "none" or k + 1 < self.spec.after:
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
