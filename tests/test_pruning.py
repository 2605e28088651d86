"""Pruning rules on a real in-memory Optuna study, and the stats behind the re-run table."""

from __future__ import annotations

import math

import optuna
import pytest

from src.config import ConfigError
from src.pruning import EpochReporter, PruneSpec, dominating_trial, resolve
from src.run import RunPruned
from src.stats import mean_ci


def _finished(study: optuna.Study, curve: list[list[float]]) -> None:
    trial = study.ask()
    trial.set_user_attr("curve", curve)
    study.tell(trial, [curve[-1][0], curve[-1][1]])


def _record(epoch: int, acc: float, flops: float) -> dict:
    return {"epoch": epoch, "val_acc": acc, "train_flops_cum": flops, "train_s_cum": 1.0}


def test_resolve_picks_the_rule_that_fits_the_objectives():
    assert PruneSpec().after == PruneSpec.from_dict({}).after == 2
    assert resolve(PruneSpec(), ["val_acc"]) == "median"
    assert resolve(PruneSpec(), ["val_acc", "train_flops"]) == "dominated"
    assert resolve(PruneSpec(), ["val_acc", "train_time_s"]) == "dominated"
    assert resolve(PruneSpec(), ["train_flops"]) == "none"  # nothing per epoch to judge
    with pytest.raises(ConfigError, match="pruner.name=median needs a single"):
        resolve(PruneSpec(name="median"), ["val_acc", "train_flops"])
    with pytest.raises(ConfigError, match="pruner.name=dominated needs"):
        resolve(PruneSpec(name="dominated"), ["val_acc"])
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
    reporter(_record(0, 0.1, 10.0))
    reporter(_record(1, 0.2, 20.0))  # dominated, but only one trial has finished (startup 2)
    _finished(study, [[0.6, 10.0], [0.7, 20.0], [0.8, 30.0]])
    with pytest.raises(RunPruned, match="dominated after epoch 3 by trial 0"):
        reporter(_record(2, 0.05, 30.0))  # the running best (0.2) is what is judged
    stored = study.trials[trial.number].user_attrs
    assert stored["curve"] == [[0.1, 10.0], [0.2, 20.0], [0.2, 30.0]] and stored["epochs_trained"] == 3


def test_reporter_with_median_pruner_stops_below_median_trials():
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=2))
    spec = PruneSpec(name="median", after=1, startup=2)
    for accs in ([0.5, 0.6], [0.7, 0.8]):
        trial = study.ask()
        r = EpochReporter(study, trial, ["val_acc"], "median", spec, running_best=True)
        for k, a in enumerate(accs):
            r(_record(k, a, 0.0))
        study.tell(trial, accs[-1])
    good = study.ask()
    r = EpochReporter(study, good, ["val_acc"], "median", spec, running_best=True)
    r(_record(0, 0.9, 0.0))  # above the median of 0.5 and 0.7: goes on
    bad = study.ask()
    r = EpochReporter(study, bad, ["val_acc"], "median", spec, running_best=True)
    with pytest.raises(RunPruned, match="median pruner after epoch 1"):
        r(_record(0, 0.4, 0.0))


def test_mean_ci_matches_the_t_distribution():
    mean, half = mean_ci([0.9, 0.92, 0.94])
    assert mean == pytest.approx(0.92)
    # sd 0.02, n 3, t(0.975, 2) = 4.3027
    assert half == pytest.approx(4.302653 * 0.02 / math.sqrt(3), rel=1e-5)
    assert math.isnan(mean_ci([0.5])[1])
