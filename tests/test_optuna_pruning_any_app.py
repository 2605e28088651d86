"""Pruning for any Hydra app: the task calls `report(step, value)` each epoch (tests/apps/epochs), and the
sweeper's pruner, ours (halving, dominated) or Optuna's (median, hyperband), stops hopeless trials; in
the sweeper's process (the basic launcher) and in a launcher's worker processes (joblib)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hydra_plugins.ft_optuna_sweeper import report
from tests.test_optuna_upstream import APPS, multirun


def _epochs(job: Path) -> list[tuple[int, int]]:
    """(epoch, process id) of each epoch the job ran."""
    return [tuple(map(int, line.split())) for line in (job / "epochs.log").read_text().splitlines()]


def _sweep(tmp_path, monkeypatch, *args: str) -> list[optuna.trial.FrozenTrial]:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    assert multirun(monkeypatch, "epochs.app", f"hydra.sweep.dir={tmp_path / 'out'}", f"hydra.sweeper.storage={storage}",
                    "hydra.sweeper.study_name=epochs", *args) == 0
    return optuna.load_study(study_name="epochs", storage=storage).trials


def test_report_outside_a_sweep_does_nothing():
    assert report(0, 1.0) is None


@pytest.mark.parametrize("pruner, target", [
    ("halving", "ft_optuna_sweeper"), ("median", "ft_optuna_sweeper"),
    ("halving", "hydra_optuna_sweeper"),  # 1.3's class path, as lightning-hydra-template's configs name it
])
def test_a_task_that_reports_each_epoch_is_pruned_in_the_sweeper_s_process(tmp_path, monkeypatch, pruner, target):
    trials = _sweep(tmp_path, monkeypatch, f"hydra.sweeper.pruner.name={pruner}", "hydra.sweeper.pruner.startup=2",
                    f"hydra.sweeper._target_=hydra_plugins.{target}.optuna_sweeper.OptunaSweeper")
    states = [t.state for t in trials]
    assert len(trials) == 9 and TrialState.PRUNED in states and TrialState.COMPLETE in states
    assert TrialState.FAIL not in states
    for t in trials:
        ran = _epochs(tmp_path / "out" / str(t.number))
        assert [pid for _, pid in ran] == [os.getpid()] * len(ran)  # the basic launcher: this process
        assert [e for e, _ in ran] == sorted(t.intermediate_values) == [int(s[0]) for s in t.user_attrs["steps"]]
        assert len(ran) == 6 if t.state == TrialState.COMPLETE else len(ran) < 6
    if pruner == "halving":  # judged at rungs only: epochs 1 and 3 (steps 0 and 2, with after=1)
        assert {len(_epochs(tmp_path / "out" / str(t.number))) for t in trials if t.state == TrialState.PRUNED} <= {1, 3}


def test_a_task_in_joblib_workers_reports_to_the_stored_study_and_is_pruned(tmp_path, monkeypatch):
    trials = _sweep(tmp_path, monkeypatch, "hydra/launcher=joblib", "hydra.launcher.n_jobs=3", "hydra.sweeper.n_jobs=3",
                    "hydra.sweeper.pruner.name=halving")
    states = [t.state for t in trials]
    assert TrialState.PRUNED in states and TrialState.FAIL not in states
    pids = {pid for t in trials for _, pid in _epochs(tmp_path / "out" / str(t.number))}
    assert os.getpid() not in pids  # each job ran in a worker process, and reached its trial there
    assert all(t.intermediate_values for t in trials)


def test_reporting_from_a_worker_to_an_in_memory_study_is_refused_naming_the_storage(tmp_path, monkeypatch, capsys):
    code = multirun(monkeypatch, "epochs.app", f"hydra.sweep.dir={tmp_path}", "hydra/launcher=joblib",
                    "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=2")
    # the jobs' SettingError ends the sweep as a bad setting does: one line, exit 2 (ending.py)
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("error: report() in a launcher's worker needs the study in a storage")
    assert "hydra.sweeper.storage=null keeps it in the sweeper's process" in last


@pytest.mark.slow
def test_a_task_in_submitit_local_jobs_reports_to_the_stored_study_and_is_pruned(tmp_path, monkeypatch):
    """hydra-submitit-launcher's submitit_local: each job a process of its own, started by submitit."""
    trials = _sweep(tmp_path, monkeypatch, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5",
                    "hydra.sweeper.n_jobs=3", "hydra.sweeper.n_trials=6")
    assert TrialState.PRUNED in [t.state for t in trials] and TrialState.FAIL not in [t.state for t in trials]
    pids = {pid for t in trials for _, pid in _epochs(tmp_path / "out" / str(t.number))}
    assert os.getpid() not in pids and len(pids) == 6  # one process per job



@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2"]])
def test_relative_sweep_dir_and_storage_reach_the_study_from_a_job_that_changed_folder(tmp_path, launcher):
    """The epochs app runs with hydra.job.chdir=true, as many apps do: each job in its own folder. A sweep
    folder and a storage given relative to the launch folder (Hydra's default multirun/DATE/TIME is
    relative) were looked for from the job's folder: report() found no optuna_study.yaml there and failed
    every trial, and a worker opened a new, empty rel.db in its job folder (KeyError: 'Record does not exist').
    A fresh process started in tmp_path, as a user starts it (joblib's workers start in its folder)."""
    from tests.cli import env

    proc = subprocess.run([sys.executable, str(APPS / "epochs" / "app.py"), "-m", "hydra.sweep.dir=out",
                           "hydra.sweeper.storage=sqlite:///rel.db", "hydra.sweeper.study_name=rel",
                           "hydra.sweeper.n_trials=4", *launcher], cwd=tmp_path, env=env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    trials = optuna.load_study(study_name="rel", storage=f"sqlite:///{tmp_path / 'rel.db'}").trials
    assert len(trials) == 4 and TrialState.FAIL not in [t.state for t in trials]
    assert all(t.intermediate_values for t in trials)  # every job reported to the study
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.db")) == ["rel.db"]



def _reports(tmp_path, monkeypatch, *args: str) -> list[optuna.trial.FrozenTrial]:
    storage = f"sqlite:///{tmp_path / 'r.db'}"
    code = multirun(monkeypatch, "reports.app", "hydra/sweeper=optuna", f"hydra.sweep.dir={tmp_path}",
                    f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=r", "hydra.sweeper.n_jobs=1",
                    "hydra.sweeper.pruner.after=1", "hydra.sweeper.max_failure_rate=1.0", *args)
    assert code == 0
    return optuna.load_study(study_name="r", storage=storage).trials


@pytest.mark.parametrize("kind", ["float32", "tensor", "array"])
def test_report_takes_a_numpy_or_torch_scalar_as_float_does(tmp_path, monkeypatch, kind):
    """Before: `report(epoch, np.float32(loss))` failed the trial, "TypeError: 'numpy.float32' object is not
    iterable" (a torch tensor: "iteration over a 0-d tensor"): only Python's float was taken as one value."""
    trials = _reports(tmp_path, monkeypatch, "+lr=interval(0.1,0.5)", f"+kind={kind}", "+diverge=false",
                      "hydra.sweeper.n_trials=2")
    assert len(trials) == 2 and "FAIL" not in [t.state.name for t in trials]
    assert all(sorted(t.intermediate_values) == list(range(len(t.intermediate_values))) for t in trials)
    assert trials[0].intermediate_values[0] == pytest.approx(10 * (1 - trials[0].params["+lr"]), rel=1e-6)


@pytest.mark.parametrize("pruner", ["halving", "dominated"])
def test_a_trial_that_reports_nan_is_pruned_at_its_first_judged_step(tmp_path, monkeypatch, pruner):
    """Before: NaN compared as no worse than anything, so halving never stopped a diverged trial: it
    trained to its last epoch (then failed on its NaN return)."""
    trials = _reports(tmp_path, monkeypatch, "+lr=0.1", "+kind=float", "+diverge=true", "hydra.sweeper.n_trials=3",
                      f"hydra.sweeper.pruner.name={pruner}", "hydra.sweeper.pruner.startup=0")
    assert [t.state.name for t in trials] == ["PRUNED"] * 3
    ran = (tmp_path / "epochs.log").read_text().split("\n")
    assert sorted(line for line in ran if line) == ["0 0", "1 0", "2 0"]  # one epoch each


def test_a_step_reported_twice_counts_once(tmp_path, monkeypatch):
    """Before: each report was appended to the trial's `steps`, so a trial that reported a step twice was
    counted twice at that rung by every later trial (the rung's "top k of n" grew) and its second value
    was judged; Optuna's own trial.report keeps the first and ignores the rest."""
    trials = _reports(tmp_path, monkeypatch, "+lr=choice(0.1,0.2,0.3,0.4)", "+kind=float", "+diverge=false",
                      "+twice=true", "hydra.sweeper.n_trials=4", "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=0")
    for t in trials:
        steps = [int(row[0]) for row in t.user_attrs["steps"]]
        assert steps == list(range(len(steps))), steps
        assert t.user_attrs["steps"][0][1] == pytest.approx(10 * (1 - t.params["+lr"]))  # the first report