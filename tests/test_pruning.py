"""Pruning rules on a real in-memory Optuna study, and the stats behind the re-run table."""

from __future__ import annotations

import math
import re

import optuna
import pytest

from src.config import ConfigError
from src.search.pruning import (
    EpochReporter, PruneSpec, dominating_trial, halving_keeps, halving_rungs, pareto_ranks, resolve,
)
from src.record.schema import EpochRecord
from src.reporting.stats import mean_ci


def _finished(study: optuna.Study, curve: list[list[float]]) -> None:
    trial = study.ask()
    trial.set_user_attr("curve", curve)
    study.tell(trial, [curve[-1][0], curve[-1][1]])


def _record(epoch: int, acc: float, flops: float) -> EpochRecord:
    return EpochRecord(epoch=epoch, val_acc=acc, train_flops_cum=flops, train_s_cum=1.0)


def test_resolve_picks_the_rule_that_fits_the_objectives():
    assert PruneSpec().after == PruneSpec.from_dict({}).after == 2
    assert resolve(PruneSpec(), ["val_acc"]) == "halving"
    assert resolve(PruneSpec(), ["val_acc", "train_flops"]) == "halving"
    assert resolve(PruneSpec(), ["val_acc", "train_time_s"]) == "halving"
    assert resolve(PruneSpec(name="dominated"), ["val_acc", "train_flops"]) == "dominated"
    assert resolve(PruneSpec(), ["train_flops"]) == "none"  # nothing per epoch to judge
    with pytest.raises(ConfigError, match="pruner.name=median needs a single"):
        resolve(PruneSpec(name="median"), ["val_acc", "train_flops"])
    assert resolve(PruneSpec(name="dominated"), ["val_acc"]) == "dominated"  # accuracy alone
    with pytest.raises(ConfigError, match="pruner.name=dominated needs"):
        resolve(PruneSpec(name="dominated"), ["train_flops"])
    with pytest.raises(ConfigError, match="pruner.name='bogus' is not allowed"):
        PruneSpec.from_dict({"name": "bogus"})
    with pytest.raises(ConfigError, match="pruner.patience is not a key"):
        PruneSpec.from_dict({"patience": 3})
    with pytest.raises(ConfigError, match="after=0 must be >= 1"):
        PruneSpec.from_dict({"after": 0})


def test_dominated_rule_compares_at_the_same_epoch_and_no_higher_cost():
    study = optuna.create_study(directions=["maximize", "minimize"])
    _finished(study, [[0.50, 100.0], [0.80, 200.0]])
    finished = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert dominating_trial(0, 0.40, 100.0, finished, 0.0) == 0  # worse at equal cost
    assert dominating_trial(0, 0.50, 100.0, finished, 0.0) == 0  # equal is dominated (no better)
    assert dominating_trial(0, 0.50, 100.0, finished, 0.01) is None  # within min_delta
    assert dominating_trial(0, 0.40, 99.0, finished, 0.0) is None  # cheaper: may still be on the front
    assert dominating_trial(1, 0.79, 300.0, finished, 0.0) == 0
    assert dominating_trial(1, 0.81, 300.0, finished, 0.0) is None  # more accurate
    assert dominating_trial(2, 0.10, 999.0, finished, 0.0) is None  # nobody finished an epoch 2


def test_reporter_waits_for_startup_and_after_then_prunes_dominated_trials():
    study = optuna.create_study(directions=["maximize", "minimize"])
    spec = PruneSpec(name="dominated", after=2, startup=2)
    _finished(study, [[0.5, 10.0], [0.9, 20.0], [0.95, 30.0]])
    trial = study.ask()
    reporter = EpochReporter(study, trial, ["val_acc", "train_flops"], "dominated", spec, running_best=True)
    assert reporter(_record(0, 0.1, 10.0)) is None
    assert reporter(_record(1, 0.2, 20.0)) is None  # dominated, but only one trial has finished (startup 2)
    _finished(study, [[0.6, 10.0], [0.7, 20.0], [0.8, 30.0]])
    # the running best (0.2) is what is judged
    assert re.search("dominated after epoch 3 by trial 0", reporter(_record(2, 0.05, 30.0)) or "")
    stored = study.trials[trial.number].user_attrs
    assert stored["curve"] == [[0.1, 10.0], [0.2, 20.0], [0.2, 30.0]] and stored["epochs_trained"] == 3


def test_dominated_with_one_objective_judges_accuracy_alone():
    study = optuna.create_study(direction="maximize")
    for curve in ([[0.5, 1.0], [0.9, 2.0]], [[0.7, 9.0], [0.8, 18.0]]):
        trial = study.ask()
        trial.set_user_attr("curve", curve)
        study.tell(trial, curve[-1][0])
    finished = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert dominating_trial(0, 0.6, None, finished, 0.0) == 1  # more accurate at epoch 1, whatever it cost
    assert dominating_trial(0, 0.71, None, finished, 0.0) is None  # ahead of every finished curve
    assert dominating_trial(1, 0.85, None, finished, 0.0) == 0
    spec = PruneSpec(name="dominated", after=1, startup=2)
    trial = study.ask()
    reporter = EpochReporter(study, trial, ["val_acc"], "dominated", spec, running_best=True)
    assert reporter(_record(0, 0.75, 1e12)) is None  # ahead at epoch 1: goes on (cost is no objective here)
    assert re.search(r"dominated after epoch 2 by trial 0: val_acc 0.8500 is no better$",
                     reporter(_record(1, 0.85, 2e12)) or "")


def test_halving_rungs_and_top_third_by_accuracy_or_pareto_rank():
    assert halving_rungs(2, 8) == [1, 5]  # epochs 2 and 6 (0-based 1, 5)
    assert halving_rungs(1, 4) == [0, 2] and halving_rungs(2, 2) == []  # the last epoch is no rung
    assert pareto_ranks([(0.9, 1.0), (0.8, 2.0), (0.95, 3.0), (0.7, 0.5)]) == [0, 1, 0, 0]
    assert halving_keeps((0.5, 9.0), [], use_cost=False)  # the first to reach a rung goes on
    others = [(0.9, 5.0), (0.8, 1.0), (0.7, 1.0), (0.6, 1.0), (0.5, 1.0)]
    # 6 reached the rung: the top 2 go on. By accuracy alone 0.85 is second.
    assert halving_keeps((0.85, 9.0), others, use_cost=False)
    assert not halving_keeps((0.75, 9.0), others, use_cost=False)
    # With cost, 0.85 at cost 9 is dominated by 0.9 at cost 5: second Pareto rank, behind the front.
    assert not halving_keeps((0.85, 9.0), others, use_cost=True)
    assert halving_keeps((0.85, 0.5), others, use_cost=True)  # cheapest and second most accurate
    assert halving_keeps((0.8, 1.0), others, use_cost=True)  # ties go on, as in Optuna's halving


def test_reporter_halving_judges_against_every_trial_that_reached_the_rung():
    study = optuna.create_study(directions=["maximize", "minimize"])
    spec = PruneSpec(name="halving", after=1)
    for acc in (0.9, 0.8, 0.7):  # one finished, one pruned, one running on another worker
        t = study.ask()
        t.set_user_attr("curve", [[acc, 1.0], [acc, 2.0], [acc, 3.0]])
    study.tell(0, [0.9, 3.0])
    study.tell(1, state=optuna.trial.TrialState.PRUNED)
    trial = study.ask()
    reporter = EpochReporter(study, trial, ["val_acc", "train_flops"], "halving", spec, running_best=True, epochs=4)
    assert reporter.rungs == [0, 2]
    assert re.search("halving after epoch 1: val_acc 0.7500 at train_flops 1 is not in the top 1 of the 4",
                     reporter(_record(0, 0.75, 1.0)) or "")
    trial = study.ask()
    reporter = EpochReporter(study, trial, ["val_acc", "train_flops"], "halving", spec, running_best=True, epochs=4)
    assert reporter(_record(0, 0.95, 1.0)) is None  # the best at the rung goes on
    assert reporter(_record(1, 0.10, 2.0)) is None  # epoch 2 is no rung


def test_reporter_with_median_pruner_stops_below_median_trials():
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=2))
    spec = PruneSpec(name="median", after=1, startup=2)
    for accs in ([0.5, 0.6], [0.7, 0.8]):
        trial = study.ask()
        r = EpochReporter(study, trial, ["val_acc"], "median", spec, running_best=True)
        for k, a in enumerate(accs):
            assert r(_record(k, a, 0.0)) is None
        study.tell(trial, accs[-1])
    good = study.ask()
    r = EpochReporter(study, good, ["val_acc"], "median", spec, running_best=True)
    assert r(_record(0, 0.9, 0.0)) is None  # above the median of 0.5 and 0.7: goes on
    bad = study.ask()
    r = EpochReporter(study, bad, ["val_acc"], "median", spec, running_best=True)
    assert re.search("median pruner after epoch 1", r(_record(0, 0.4, 0.0)) or "")


def test_mean_ci_matches_the_t_distribution():
    mean, half = mean_ci([0.9, 0.92, 0.94])
    assert mean == pytest.approx(0.92)
    # sd 0.02, n 3, t(0.975, 2) = 4.3027
    assert half == pytest.approx(4.302653 * 0.02 / math.sqrt(3), rel=1e-5)
    assert math.isnan(mean_ci([0.5])[1])


def test_reporter_takes_a_metrics_line_as_written_too():
    study = optuna.create_study(direction="maximize")
    reporter = EpochReporter(study, study.ask(), ["val_acc"], "none", PruneSpec(name="none"), running_best=True)
    assert reporter({"schema_version": 2, "epoch": 0, "val_acc": 0.5, "lr/head": 0.1}) is None
    assert reporter.curve == [[0.5, math.nan]] or (reporter.curve[0][0] == 0.5 and math.isnan(reporter.curve[0][1]))
