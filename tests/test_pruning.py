"""Pruning rules on a real in-memory Optuna study, and the stats behind the re-run table."""

from __future__ import annotations

import math
import re

import optuna
import pytest

from hydra_plugins.ft_optuna_sweeper.errors import SettingError

from src.config import ConfigError
from src.search.pruning import (
    EpochReporter, PruneSpec, dominating_trial, halving_keeps, halving_rungs, pareto_ranks, resolve, spread_order,
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
    # PruneSpec is the plugin's (any app has it): its refusals are the plugin's SettingError
    with pytest.raises(SettingError, match="pruner.name='bogus' is not allowed"):
        PruneSpec.from_dict({"name": "bogus"})
    with pytest.raises(SettingError, match="pruner.patience is not a key"):
        PruneSpec.from_dict({"patience": 3})
    with pytest.raises(SettingError, match="after=0 must be >= 1"):
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
    reporter = EpochReporter(study, trial, ["val_acc", "train_flops"], "dominated", spec, running_best=True, epochs=4)
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
    reporter = EpochReporter(study, trial, ["val_acc"], "dominated", spec, running_best=True, epochs=3)
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
        r = EpochReporter(study, trial, ["val_acc"], "median", spec, running_best=True, epochs=2)
        for k, a in enumerate(accs):
            assert r(_record(k, a, 0.0)) is None
        study.tell(trial, accs[-1])
    good = study.ask()
    r = EpochReporter(study, good, ["val_acc"], "median", spec, running_best=True, epochs=2)
    assert r(_record(0, 0.9, 0.0)) is None  # above the median of 0.5 and 0.7: goes on
    bad = study.ask()
    r = EpochReporter(study, bad, ["val_acc"], "median", spec, running_best=True, epochs=2)
    assert re.search("median pruner after epoch 1", r(_record(0, 0.4, 0.0)) or "")


def test_mean_ci_matches_the_t_distribution():
    mean, half = mean_ci([0.9, 0.92, 0.94])
    assert mean == pytest.approx(0.92)
    # sd 0.02, n 3, t(0.975, 2) = 4.3027
    assert half == pytest.approx(4.302653 * 0.02 / math.sqrt(3), rel=1e-5)
    assert math.isnan(mean_ci([0.5])[1])


def test_reporter_takes_a_metrics_line_as_written_too():
    study = optuna.create_study(direction="maximize")
    reporter = EpochReporter(study, study.ask(), ["val_acc"], "none", PruneSpec(name="none"), running_best=True, epochs=1)
    assert reporter({"schema_version": 2, "epoch": 0, "val_acc": 0.5, "lr/head": 0.1}) is None
    assert reporter.curve == [[0.5, math.nan]] or (reporter.curve[0][0] == 0.5 and math.isnan(reporter.curve[0][1]))


# MO-ASHA's selection at one rung (Schmucker et al. 2021): rank by rank, then spread within the rank
# that does not fit whole. Points are (val accuracy, cumulative cost).
CHEAP, MIDDLE, ACCURATE = (0.70, 1.0), (0.85, 5.0), (0.95, 10.0)  # one front: its two ends and a middle
DOMINATED = [(0.60, 5.0), (0.80, 9.0), (0.65, 2.0)]


def _kept(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points that go on when each is judged against all the others."""
    return [p for i, p in enumerate(points) if halving_keeps(p, points[:i] + points[i + 1:], use_cost=True)]


def test_halving_keeps_both_ends_of_the_front_before_any_dominated_point():
    # 6 reached the rung, 2 go on: the cheap end and the accurate end. Ranked by accuracy after the
    # Pareto rank (the old rule), the cheap end was stopped for the middle one.
    assert _kept([CHEAP, MIDDLE, ACCURATE, *DOMINATED]) == [CHEAP, ACCURATE]
    assert spread_order([MIDDLE, ACCURATE, CHEAP]) == {CHEAP: (0, 0.0), ACCURATE: (0, 0.0), MIDDLE: (1, -2.0)}
    # A front that fits whole goes on whole, and the next rank gets the places left.
    # (9 reached it, 3 go on: the front of 2, and the one point of rank 1 ahead of six of rank 2.)
    third = [(0.60, 9.5), (0.50, 9.6), (0.40, 9.7), (0.30, 9.8), (0.20, 9.9), (0.10, 9.95)]
    assert _kept([CHEAP, ACCURATE, (0.65, 2.0), *third]) == [CHEAP, ACCURATE, (0.65, 2.0)]


def test_halving_with_a_quota_smaller_than_the_front_keeps_the_extremes_then_the_widest_gap():
    # 9 reached the rung, 3 go on, the front has 5: both ends, then the largest crowding distance
    # (0.80 at 6: gaps 0.29 of 0.40 in accuracy and 7.9 of 9 in cost), not the crowded pair at 2.
    front = [(0.50, 1.0), (0.60, 2.0), (0.61, 2.1), (0.80, 6.0), (0.90, 10.0)]
    behind = [(0.40, 5.0), (0.50, 8.0), (0.55, 9.0), (0.30, 3.0)]
    assert _kept(front + behind) == [(0.50, 1.0), (0.80, 6.0), (0.90, 10.0)]
    # One place (3 reached the rung): the two ends tie for it and both go on; the middle stops.
    assert _kept([CHEAP, MIDDLE, ACCURATE]) == [CHEAP, ACCURATE]
    assert halving_keeps(CHEAP, [ACCURATE], use_cost=True) and halving_keeps(ACCURATE, [CHEAP], use_cost=True)


def test_halving_ties_go_on_together_and_nan_comes_last():
    # Equal points share a place: two equal cheap ends both go on.
    assert _kept([CHEAP, CHEAP, MIDDLE, ACCURATE, *DOMINATED]) == [CHEAP, CHEAP, ACCURATE]
    nan_point = (0.99, math.nan)  # no cost measured: never on a front, never ahead of a point with one
    order = spread_order([nan_point, CHEAP, MIDDLE, ACCURATE])
    assert order[nan_point] == (2, 0.0) and order[CHEAP] == order[ACCURATE] == (0, 0.0)
    assert not halving_keeps(nan_point, [CHEAP, MIDDLE, ACCURATE, *DOMINATED], use_cost=True)


def test_halving_never_keeps_a_worse_rank_over_a_stopped_better_one():
    import random

    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 12)
        points = [(round(rng.random(), 2), float(rng.randint(1, 9))) for _ in range(n)]
        ranks = pareto_ranks(points)
        kept = [halving_keeps(p, points[:i] + points[i + 1:], use_cost=True) for i, p in enumerate(points)]
        assert sum(kept) >= max(n // 3, 1)  # the quota is filled (ties may add to it)
        # no point goes on while a point of a better Pareto rank stops
        assert not any(kept[i] and not kept[j] and ranks[j] < ranks[i] for i in range(n) for j in range(n)), points
        front = [p for p, r in zip(points, ranks) if r == 0]
        ends = {min(front, key=lambda p: (p[1], -p[0])), max(front, key=lambda p: (p[0], -p[1]))}
        assert all(k for p, k in zip(points, kept) if p in ends)  # both ends of the front always go on


def test_reporter_halving_keeps_a_cheap_front_trial_end_to_end_on_sqlite(tmp_path):
    """Four trials with known curves, one after another, in a real (sqlite) study: the accurate and
    the cheap one go on past the rung, the dominated and the middle one stop there."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="s", directions=["maximize", "minimize"])
    spec = PruneSpec(name="halving", after=1)
    curves = {  # name: (val acc per epoch, cost per epoch)
        "accurate": ([0.90, 0.95, 0.96, 0.97], 10.0),
        "cheap": ([0.70, 0.72, 0.73, 0.74], 1.0),
        "dominated": ([0.60, 0.90, 0.95, 0.99], 5.0),  # would have caught up: halving bets it will not
        "middle": ([0.80, 0.85, 0.86, 0.87], 5.0),
    }
    reasons = {}
    for name, (accs, cost) in curves.items():
        trial = study.ask()
        reporter = EpochReporter(study, trial, ["val_acc", "train_flops"], "halving", spec, running_best=True, epochs=4)
        for k, acc in enumerate(accs):
            if reason := reporter(_record(k, acc, cost * (k + 1))):
                reasons[name] = reason
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            study.tell(trial, [accs[-1], cost * len(accs)])
    stored = optuna.load_study(study_name="s", storage=storage).trials
    assert [t.state.name for t in stored] == ["COMPLETE", "COMPLETE", "PRUNED", "PRUNED"]
    assert stored[1].user_attrs["epochs_trained"] == 4 and stored[2].user_attrs["epochs_trained"] == 1
    assert re.search(r"halving after epoch 1: val_acc 0.6000 at train_flops 5 is not in the top 1 of the 3", reasons["dominated"])
    assert re.search(r"halving after epoch 1: val_acc 0.8000 at train_flops 5 is not in the top 1 of the 4", reasons["middle"])
    assert set(reasons) == {"dominated", "middle"}


def _benchmark():
    """benchmarks/pruning_hypervolume.py as a module."""
    return _load_benchmark("pruning_hypervolume")


def test_hypervolume_2d_of_the_benchmark_is_the_dominated_area():
    hv = _benchmark().hypervolume_2d
    ref = (0.0, 4.0)
    # (0.5 at cost 1) covers costs 1..3 up to 0.5, (0.8 at 3) covers 3..4 up to 0.8: 1.0 + 0.8;
    # (0.4 at 2) is dominated and adds nothing.
    assert hv([(0.5, 1.0), (0.8, 3.0), (0.4, 2.0)], ref) == pytest.approx(1.8)
    assert hv([(0.8, 3.0), (0.5, 1.0)], ref) == pytest.approx(1.8)  # order does not matter
    assert hv([(0.5, 5.0), (0.0, 1.0)], ref) == 0.0  # beyond the reference: nothing
    assert hv([], ref) == 0.0 and hv([(1.0, 0.0)], ref) == pytest.approx(4.0)


def test_the_benchmark_reads_the_selected_trials_test_accuracy(tmp_path):
    import json

    bench = _benchmark()
    for n, (val, test) in enumerate([(0.90, 0.91), (0.95, 0.88), (0.93, 0.97)]):
        (tmp_path / f"{n}_layerwise").mkdir()
        (tmp_path / f"{n}_layerwise" / "result.json").write_text(json.dumps(
            {"status": "completed", "val_acc": val, "test_acc": test, "train_flops": 1e9 * (n + 1)}))
    (tmp_path / "summary.json").write_text(json.dumps({"best_val_acc": 0.95, "best_trial": 1}))
    study = bench.read_study(tmp_path)
    # the trial the study selected (best validation accuracy), not the best test accuracy
    assert study["best_test_acc"] == 0.88 and sorted(study["points"])[-1] == (0.95, 2e9)


def _load_benchmark(name: str):
    """benchmarks/NAME.py as a module (benchmarks/ is not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_early_signal_rules_synchronous_see_every_trial_asynchronous_only_the_earlier_ones():
    from src.record.schema import EpochRecord

    bench = _load_benchmark("early_signal")

    def curve(accs):  # 4 epochs of 10 FLOPs each
        return [EpochRecord(epoch=e, val_acc=a, val_loss=1 - a, train_flops_cum=10 * (e + 1)) for e, a in enumerate(accs)], 40.0

    # The best trial (0.95 at the end) comes last and is second at epoch 1; trial 0 leads epoch 1.
    curves = [curve([0.6, 0.7, 0.8, 0.80]), curve([0.3, 0.4, 0.5, 0.50]), curve([0.2, 0.3, 0.4, 0.40]),
              curve([0.5, 0.8, 0.9, 0.95])]
    rule = [(0, 0.5)]  # judge after epoch 1, keep the top half
    # Synchronous: trials 0 and 3 go on, 1 and 2 stop after one epoch: (40+10+10+40)/160.
    assert bench.rule_outcome(curves, rule, "val_acc", synchronous=True) == (pytest.approx(0.0), pytest.approx(100 / 160))
    # Asynchronous: trial 1 is judged against trial 0 alone (quota 1: stopped), trial 2 against
    # two (quota 1: stopped), trial 3 against three (quota 2: it is second, it goes on).
    assert bench.rule_outcome(curves, rule, "val_acc", synchronous=False) == (pytest.approx(0.0), pytest.approx(100 / 160))
    # Keeping a quarter, synchronous keeps trial 0 only and loses the best by 15 points ...
    assert bench.rule_outcome(curves, [(0, 0.25)], "val_acc", synchronous=True)[0] == pytest.approx(-15.0)
    # ... and asynchronous keeps trial 0 (first to arrive) and stops the rest at quota 1.
    delta, share = bench.rule_outcome(curves, [(0, 0.25)], "val_acc", synchronous=False)
    assert delta == pytest.approx(-15.0) and share == pytest.approx(70 / 160)
    # The order matters only asynchronously: a weak first trial goes on, and the best, third to
    # arrive and second of three at epoch 1, is stopped (quota int(0.5 * 3) = 1).
    late = [curve([0.1, 0.1, 0.2, 0.20]), curve([0.6, 0.7, 0.8, 0.80]), curve([0.5, 0.8, 0.9, 0.95]),
            curve([0.3, 0.4, 0.5, 0.50])]
    assert bench.rule_outcome(late, rule, "val_acc", synchronous=True) == (pytest.approx(0.0), pytest.approx(100 / 160))
    assert bench.rule_outcome(late, rule, "val_acc", synchronous=False) == (pytest.approx(-15.0), pytest.approx(100 / 160))
    # val_loss is ranked lower-is-better: the same ranking here, so the same outcome.
    assert bench.rule_outcome(curves, rule, "val_loss", synchronous=True) == bench.rule_outcome(curves, rule, "val_acc", synchronous=True)


def _sweep_curves(mode: str, spec: PruneSpec, epochs: int, curves: list[list[float]]) -> list[tuple[str, int]]:
    """Each curve (val acc per epoch, judged as it is: no running best) run as one trial of a study
    with the pruner src.train builds: (state, epochs trained) per trial."""
    from src.search.pruning import optuna_pruner

    study = optuna.create_study(study_name="sweep", direction="maximize", pruner=optuna_pruner(mode, spec, epochs))
    out = []
    for accs in curves:
        trial = study.ask()
        reporter = EpochReporter(study, trial, ["val_acc"], mode, spec, running_best=False, epochs=epochs)
        for k, acc in enumerate(accs[:epochs]):
            if reporter(_record(k, acc, float(k + 1))):
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                out.append(("pruned", k + 1))
                break
        else:
            study.tell(trial, accs[epochs - 1])
            out.append(("complete", epochs))
    return out


@pytest.mark.parametrize("mode, epochs, after", [("dominated", 2, 1), ("dominated", 4, 1), ("median", 2, 2),
                                                 ("median", 4, 4), ("halving", 4, 1), ("hyperband", 3, 1),
                                                 ("hyperband", 4, 1)])
def test_no_rule_stops_a_trial_after_its_last_epoch(mode, epochs, after):
    # Each trial is ahead of those before it until its last epoch, then behind them all (median
    # judges a trial's best so far: with after = epochs the last epoch is its first judgement).
    # Judged there, all but the first would be stopped having trained in full.
    curves = [[0.5 + 0.01 * i] * (epochs - 1) + [0.4 - 0.02 * i] for i in range(12)]
    if mode == "median":
        curves = [[0.5 - 0.02 * i] * epochs for i in range(12)]
    spec = PruneSpec(name=mode, after=after, startup=1)
    assert _sweep_curves(mode, spec, epochs, curves) == [("complete", epochs)] * 12
    # The same rule does stop trials that fall behind before their last epoch.
    early = [[0.5 - 0.02 * i] * epochs for i in range(12)]
    spec = PruneSpec(name=mode, after=1, startup=1)
    assert any(state == "pruned" and k < epochs for state, k in _sweep_curves(mode, spec, epochs, early))


@pytest.mark.parametrize("after, epochs, rungs", [(1, 4, {1, 3}), (2, 4, {2}), (2, 8, {2, 6}), (1, 10, {1, 3, 9})])
def test_hyperband_judges_after_epoch_after_and_then_every_third_power_like_halving(after, epochs, rungs):
    # Each trial worse than the one before from its first epoch: stopped at the first rung it meets in
    # its bracket (Hyperband's brackets start at after, 3 x after, ...: their rungs are halving's).
    curves = [[1.0 - 0.02 * i] * epochs for i in range(40)]
    spec = PruneSpec(name="hyperband", after=after)
    stopped = {k for state, k in _sweep_curves("hyperband", spec, epochs, curves) if state == "pruned"}
    assert stopped and stopped <= {r for r in rungs if r < epochs} and after in stopped
    assert {e - 1 for e in rungs if e < epochs} == set(halving_rungs(after, epochs))  # the same rungs as halving


def test_plugin_hyperband_judges_steps_counted_from_one_like_its_halving():
    """The plugin's pruner for any app: report(step, ...) with steps from 0; `after` counts steps done."""
    from hydra_plugins.ft_optuna_sweeper._pruners import StepJudge, optuna_pruner as plugin_pruner

    spec = PruneSpec(name="hyperband", after=2)
    study = optuna.create_study(study_name="sweep", direction="maximize", pruner=plugin_pruner("hyperband", spec))
    stopped = set()
    for i in range(40):
        trial = study.ask()
        judge = StepJudge(study, trial, "hyperband", spec)
        for step in range(8):
            if judge(step, [1.0 - 0.02 * i]):
                stopped.add(step)
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            study.tell(trial, 1.0 - 0.02 * i)
    assert stopped and stopped <= {1, 5}  # after 2 and 6 steps, as halving's rungs (is_rung)


def test_replay_pruning_names_a_missing_study_in_one_line_and_creates_no_database(tmp_path, capsys):
    """`benchmarks/replay_pruning.py DIR STUDY` (docs/sweeps-measured.md) read sys.argv by hand: no
    arguments or --help was an IndexError traceback, and a folder without optuna.db got an empty one
    made in it by sqlite, then a KeyError traceback. Now: argparse's one line, exit 2, nothing written;
    a real study is replayed."""
    import optuna

    bench = _load_benchmark("replay_pruning")
    with pytest.raises(SystemExit) as exit_:
        bench.main([])
    assert exit_.value.code == 2
    with pytest.raises(SystemExit) as exit_:
        bench.main([str(tmp_path), "bench"])
    assert exit_.value.code == 2
    assert f"{tmp_path / 'optuna.db'}: no such file" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="bench", storage=storage, directions=["maximize", "minimize"])
    for accs in ([0.5, 0.6, 0.7], [0.3, 0.4, 0.45], [0.6, 0.7, 0.8]):
        trial = study.ask()
        trial.set_user_attr("curve", [[a, 10.0 * (e + 1)] for e, a in enumerate(accs)])
        study.tell(trial, [accs[-1], 30.0])
    with pytest.raises(SystemExit) as exit_:
        bench.main([str(tmp_path), "other"])
    assert exit_.value.code == 2
    assert "holds no study named 'other' (it holds: bench)" in capsys.readouterr().err
    assert bench.main([str(tmp_path), "bench"]) == 0
    assert "bench: 3 trials, 9 epochs, best val acc 0.8000" in capsys.readouterr().out
