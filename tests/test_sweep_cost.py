"""A sweep says its cost up front and as it goes (issue 26, part 3): `trainer.dry_run=true` on a sweep
estimates a trial at the corners of the search space that move the cost (nothing trained, no study
opened), and a running sweep logs how many of its trials are done and the time left at its pace."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time

import optuna
import pytest

from src.config import ConfigError
from src.gate import compose_train, to_run_config
from src.search import dry_run
from src.search.launched import Pace, trials_done
from src.sweep_driver import split_space
from src.training.run import preflight, run
from tests.cli import REPO, env

TINY = ["model.name=test_efficientnet", "model.pretrained=false", "dataset.image_size=32",
        "dataset.train_per_class=4", "trainer.epochs=2", "trainer.progress=false", "logger=none"]
SPACE = ["strategy=layerwise", "strategy.lr_decay=tag(log, interval(1.0, 10.0))", "strategy.unfreeze_depth=range(0, groups)",
         "strategy.unfreeze_every=choice(0, 1)", "optim.lr=tag(log, interval(3.0e-4, 3.0e-3))"]


def _groups() -> int:
    return preflight(to_run_config(compose_train(["strategy=layerwise", *TINY])))


def test_the_corners_are_those_of_the_settings_that_move_the_cost_and_each_is_a_runs_own_estimate(tmp_path):
    groups = _groups()
    params, fixed = split_space(SPACE + TINY, groups)
    found, costly = dry_run.corners(params, fixed, groups)
    # the learning rate and its decay change no cost; gradual unfreezing changes it only at a depth
    # above 0, which a screen from the all-low corner alone would miss
    assert costly == ["strategy.unfreeze_depth", "strategy.unfreeze_every"]
    assert [tuple(c.values[k] for k in costly) for c in found] == [(0, 0), (0, 1), (groups, 0), (groups, 1)]
    by_corner = {tuple(c.values[k] for k in costly): c.estimate for c in found}
    assert by_corner[(0, 0)].train_flops == by_corner[(0, 1)].train_flops  # nothing to unfreeze at depth 0
    assert by_corner[(groups, 0)].train_flops > by_corner[(groups, 1)].train_flops > by_corner[(0, 0)].train_flops
    # what a run with the corner's settings estimates for itself: the same FLOPs, to the unit
    for corner in ((groups, 1), (0, 0)):
        c = next(c for c in found if tuple(c.values[k] for k in costly) == corner)
        overrides = ["strategy=layerwise", *TINY, "trainer.dry_run=true"] + [f"{k}={v}" for k, v in c.values.items()]
        own = run(to_run_config(compose_train(overrides)), tmp_path / f"run{corner}")
        assert own["train_flops"] == c.estimate.train_flops and own["feature_cache"] == c.estimate.feature_cache
    text = dry_run.report(found, costly, list(params), 20)
    assert "the cost moves with strategy.unfreeze_depth, strategy.unfreeze_every; not with strategy.lr_decay, optim.lr" in text
    low, high = min(c.estimate.train_flops for c in found), max(c.estimate.train_flops for c in found)
    assert f"({low:.3e} to {high:.3e} training FLOPs); 20 trials: ~" in text


def test_too_many_corners_is_one_line_naming_the_settings(monkeypatch):
    groups = _groups()
    params, fixed = split_space(SPACE + TINY, groups)
    monkeypatch.setattr(dry_run, "MAX_CORNERS", 3)
    with pytest.raises(ConfigError, match=r"would estimate 4 corners of strategy.unfreeze_depth, "
                                          r"strategy.unfreeze_every \(at most 3\): fix some"):
        dry_run.corners(params, fixed, groups)


def test_make_sweeps_dry_run_prints_the_bracket_and_opens_no_study(tmp_path):
    out = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, "-m", "src.train", "-m", "sweep=default", "trainer.dry_run=true",
                           f"hydra.sweep.dir={out}", *TINY], cwd=REPO, env=env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not out.exists()  # no study, no trial folder, no report
    lines = proc.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("sweep dry run: "))
    corners = [line for line in lines[start + 1:] if line.startswith("  strategy.unfreeze_depth=")]
    assert len(corners) == 4 and all(" training FLOPs, ~" in line for line in corners)
    assert re.search(r"^a trial: ~\S+ to ~\S+ \(.* training FLOPs\); 20 trials: ~.+ if none is pruned", proc.stdout, re.M)
    assert "dry-run jobs in" not in proc.stdout  # a multirun's sum of jobs: not a sweep's


def test_the_pace_line_counts_every_workers_trials_and_times_only_this_process(caplog):
    caplog.set_level(logging.INFO, logger="src.search.launched")
    pace = Pace(time.monotonic() - 60.0, done=5)  # resumed with 5 done; this process has run for 60 s
    pace.log(5, 20)  # nothing done here yet: no pace to tell
    assert not caplog.records
    pace.log(8, 20)  # 3 trials in 60 s: 12 left at 20 s each
    pace.log(8, 20)  # the same count again: said once
    [line] = [r.getMessage() for r in caplog.records]
    assert re.fullmatch(r"8 of 20 trials done in 60s; about 4\.0 min left at this pace", line), line
    pace.log(20, 20)
    assert caplog.records[-1].getMessage().startswith("20 of 20 trials done in ") and "left" not in caplog.records[-1].getMessage()


def test_a_budget_lowered_below_the_trials_done_is_said_to_be_met(caplog):
    caplog.set_level(logging.INFO, logger="src.search.launched")
    assert trials_done(2, 2) == "2 of 2 trials done"
    assert trials_done(3, 2) == "3 trials done, more than hydra.sweeper.n_trials=2: the budget is already met"
    Pace(time.monotonic() - 60.0, done=0).log(3, 2)
    assert re.fullmatch(r"3 trials done in 60s, more than hydra.sweeper.n_trials=2: the budget is already met",
                        caplog.records[-1].getMessage())



def test_a_dry_run_checks_every_setting_of_the_sweep_first(tmp_path):
    # the pruner's settings are checked after the search space's: a dry run must get that far too
    proc = subprocess.run([sys.executable, "-m", "src.train", "-m", "sweep=default", "trainer.dry_run=true",
                           "hydra.sweeper.pruner.name=nope", f"hydra.sweep.dir={tmp_path / 'sweep'}", *TINY],
                          cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: hydra.sweeper.pruner.name="), proc.stderr[-2000:]
    assert "sweep dry run" not in proc.stdout and not (tmp_path / "sweep").exists()


def test_the_summary_counts_unfinished_trials_epochs_apart_from_pruning_s_saving():
    from src.search.results import format_summary, summarise

    study = optuna.create_study(direction="maximize")
    for state, epochs, extra in [("COMPLETE", 4, {}), ("PRUNED", 2, {}), ("FAIL", 3, {"interrupted": True}),
                                 ("FAIL", 1, {}), ("FAIL", 0, {})]:
        trial = study.ask()
        trial.set_user_attr("epochs_trained", epochs)
        for key, value in extra.items():
            trial.set_user_attr(key, value)
        study.tell(trial, 0.5 if state == "COMPLETE" else None, state=optuna.trial.TrialState[state])
    s = summarise(study, ["val_acc"], epochs=4) | {"pruner": "none"}
    assert s["epochs_trained"] == 10 and s["epochs_unpruned"] == 8  # the complete and the pruned trial
    assert s["epochs_unfinished"] == 4 and s["trials_unfinished"] == 2
    assert "; epochs trained 6 of 8 (75%); 4 more in 2 failed, interrupted or running trials; best_val_acc 0.5 " \
           in format_summary(s)


@pytest.mark.parametrize("how", ["moved", "copied"])
def test_a_sweep_folder_moved_or_copied_counts_its_own_trials(tmp_path, how):
    # A trial recorded its folder by its absolute path only: a sweep moved to a bigger disk summed
    # its cost as 0, a copy read the original's files (a retry adopted its checkpoint from there too).
    import shutil

    from src.record.io import write_json
    from src.record.schema import RunRecord
    from src.search.results import pareto_rows, summarise, trial_dir, trial_dir_attrs

    old, new = tmp_path / "old", tmp_path / "new"
    study = optuna.create_study(direction="maximize", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    trial = study.ask()
    for key, value in trial_dir_attrs(old / "0_layerwise", old).items():
        trial.set_user_attr(key, value)
    study.tell(trial, 0.9)
    record = RunRecord(strategy="layerwise", seed=0, status="completed", val_acc=0.9, test_acc=0.9,
                       train_flops=4.66e9, train_time_s=2.0, trainable_params=100)
    write_json(old / "0_layerwise" / "result.json", record.to_json())
    assert summarise(study, ["val_acc"], 4, old)["total_train_flops"] == 4.66e9
    (shutil.move if how == "moved" else shutil.copytree)(old, new)
    if how == "copied":  # the copy's own file differs from the original's: which one is read shows
        write_json(new / "0_layerwise" / "result.json", record.to_json() | {"train_flops": 1.0e9})
    assert summarise(study, ["val_acc"], 4, new)["total_train_flops"] == 1.0e9 if how == "copied" else 4.66e9
    assert trial_dir(study.trials[0].user_attrs, new) == new / "0_layerwise"
    assert pareto_rows(study, ["val_acc"], new)[0]["run_dir"] == str(new / "0_layerwise")
    # a study of older code (absolute path alone) still reads where it points
    assert trial_dir({"run_dir": str(old / "0_layerwise")}, new) == old / "0_layerwise"


def test_a_retry_that_continues_a_stopped_trial_s_checkpoint_counts_its_epochs_and_cost_once(tmp_path, tiny_config):
    """A trial stopped in epoch 2 of 2 (SIGTERM; after its epoch-1 checkpoint) is retried from that
    checkpoint: the retry replays and records epoch 1, and its record holds the whole run's cost. The
    summary counted epoch 1 and its FLOPs in both trials: 4 epochs trained where 3 were."""
    from src.record.io import read_json_object
    from src.search.job import _continue_dead_attempt
    from src.search.results import record_trial_dir, summarise

    sweep = tmp_path / "sweep"
    cfg = tiny_config(trainer={"epochs": 2, "drift_probe": 0})
    study = optuna.create_study(study_name="s", direction="maximize", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    stopped = study.ask()
    record_trial_dir(stopped, sweep / "0_layerwise", sweep)

    def stop(row):
        stopped.set_user_attr("epochs_trained", row.epoch + 1)
        if row.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(cfg, sweep / "0_layerwise", on_epoch=stop)
    stopped.set_user_attr("interrupted", True)
    study.tell(stopped, state=optuna.trial.TrialState.FAIL)
    measured = read_json_object(sweep / "0_layerwise" / "result.json")["measured_before_stop"]
    retry = study.ask()
    retry.set_user_attr("retry_of", 0)
    record_trial_dir(retry, sweep / "1_layerwise", sweep)
    _continue_dead_attempt(study._storage, "s", 0, cfg, sweep / "1_layerwise", str(sweep), retry)
    # as src.search.pruning's reporter: the replayed epochs (metrics lines) and the new ones
    result = run(cfg, sweep / "1_layerwise", on_epoch=lambda row: retry.set_user_attr(
        "epochs_trained", (row["epoch"] if isinstance(row, dict) else row.epoch) + 1))
    study.tell(retry, result["val_acc"])
    s = summarise(study, ["val_acc"], 2, sweep)
    # the stopped trial's folder says where its work went, not "the same command resumes it" (it would not)
    from src.reporting.runs import resume_hint, unfinished_runs

    assert unfinished_runs([sweep]) == []  # it recorded itself as interrupted: listed by its record, not as lost
    (sweep / "0_layerwise" / "result.json").unlink()  # as a SIGKILL leaves it
    assert unfinished_runs([sweep]) == [sweep / "0_layerwise"]
    assert resume_hint(sweep / "0_layerwise") == (f"its trial 0 was retried as trial 1, in {sweep.resolve() / '1_layerwise'}: "
                                                  "nothing to resume here")
    (sweep / "0_layerwise" / "result.json").write_text(json.dumps({"status": "interrupted", "measured_before_stop": measured}))
    # epochs 1 and 2 by the stopped trial (2 lost with it), epoch 2 again by the retry
    assert s["epochs_trained"] == 3 and s["epochs_unfinished"] == 1 and s["trials_unfinished"] == 1
    per_epoch = measured["train_flops"] / 2
    assert s["total_train_flops"] == pytest.approx(result["train_flops"] + per_epoch)


@pytest.mark.slow  # two real runs, each starting W&B: about 40 s on 2 loaded cores
def test_a_retry_that_continues_a_dead_trial_leaves_one_wandb_run_of_it_to_sync(tmp_path, tiny_config):
    """The retry replays the dead trial's epochs in its own W&B run; the dead trial's offline run,
    left in its folder, was synced beside it: two W&B runs of one trial in the study's group, one cut
    short. It is set aside (superseded-offline-run-*) once the retry takes its work over."""
    from src.search.job import _continue_dead_attempt
    from src.search.results import record_trial_dir

    sweep = tmp_path / "sweep"
    cfg = tiny_config(trainer={"epochs": 2, "drift_probe": 0}, logger={"kind": "wandb", "mode": "offline", "project": "t"})
    study = optuna.create_study(study_name="s", direction="maximize", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    stopped = study.ask()
    record_trial_dir(stopped, sweep / "0_layerwise", sweep)

    def stop(row):
        if row.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(cfg, sweep / "0_layerwise", on_epoch=stop)
    study.tell(stopped, state=optuna.trial.TrialState.FAIL)
    [dead_run] = (sweep / "0_layerwise" / "wandb").glob("offline-run-*")
    retry = study.ask()
    record_trial_dir(retry, sweep / "1_layerwise", sweep)
    _continue_dead_attempt(study._storage, "s", 0, cfg, sweep / "1_layerwise", str(sweep), retry)
    run(cfg, sweep / "1_layerwise")
    assert not dead_run.exists() and dead_run.with_name("superseded-" + dead_run.name).is_dir()
    assert len(list(sweep.glob("*/wandb/offline-run-*"))) == 1  # the retry's: what `wandb sync` finds


def test_the_summary_names_the_best_trials_folder(tmp_path):
    # summary.json said "best_trial": 3 and nothing of where its files (model_best.pt, config.yaml) are
    from src.search.results import summarise, trial_dir_attrs

    study = optuna.create_study(direction="maximize", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    for value in (0.5, 0.9, 0.7):
        trial = study.ask()
        for key, attr in trial_dir_attrs(tmp_path / f"{trial.number}_layerwise", tmp_path).items():
            trial.set_user_attr(key, attr)
        study.tell(trial, value)
    s = summarise(study, ["val_acc"], 4, tmp_path)
    assert s["best_trial"] == 1 and s["best_run_dir"] == str(tmp_path / "1_layerwise")
    moved = tmp_path.parent / (tmp_path.name + "_moved")  # read where the sweep folder is now
    assert summarise(study, ["val_acc"], 4, moved)["best_run_dir"] == str(moved / "1_layerwise")
    assert summarise(optuna.create_study(), ["val_acc"], 4, tmp_path)["best_run_dir"] is None
