"""The Optuna sweep driver on real storages (sqlite, journal file), in real subprocesses."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna

from tests.cli import TINY_OVERRIDES as TINY
from tests.cli import env as _env


def _cmd(out: Path, n: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "src.sweep", f"sweep.n_trials={n}", f"sweep.out_dir={out}", *TINY, *extra]


def _load(out: Path, url: str | None = None) -> optuna.Study:
    storage = url or f"sqlite:///{out / 'optuna.db'}"
    if storage.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        storage = optuna.storages.JournalStorage(JournalFileBackend(storage.removeprefix("journal:")))
    return optuna.load_study(study_name="layerwise-default", storage=storage)


def _dominated(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """a is dominated by b (accuracy up, FLOPs down)."""
    return b[0] >= a[0] and b[1] <= a[1] and b != a


def test_tiny_multi_objective_sweep_on_sqlite(tmp_path):
    out = tmp_path / "study"
    proc = subprocess.run(_cmd(out, 3), cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = _load(out)
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) == 3
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    for t in done:
        result = json.loads((Path(t.user_attrs["run_dir"]) / "result.json").read_text())
        assert (result["val_acc"], result["train_flops"]) == tuple(t.values)
        assert result["strategy"] == "layerwise" and result["lr_decay"] == t.params["strategy.lr_decay"]
        assert 1.0 <= t.params["strategy.lr_decay"] <= 10.0
        assert 0 <= t.params["strategy.unfreeze_depth"] <= 6  # test_efficientnet: 6 backbone groups
    pareto = json.loads((out / "pareto.json").read_text())
    values = [tuple(t.values) for t in done]
    front = [(p["val_acc"], p["train_flops"]) for p in pareto]
    assert front and all(not any(_dominated(f, v) for v in values) for f in front)
    assert all(v in front or any(_dominated(v, f) for f in front) for v in values)
    assert "Pareto set of study layerwise-default" in proc.stdout


def test_killed_sweep_resumes_without_losing_or_repeating_trials(tmp_path):
    out = tmp_path / "study"
    cmd = _cmd(out, 4, "sweep.heartbeat_s=1", "sweep.grace_s=2")
    worker = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    completed: dict[int, tuple[float, ...]] = {}
    while time.time() < deadline and not completed:
        time.sleep(0.5)
        if (out / "optuna.db").exists():
            try:
                trials = _load(out).get_trials(states=(optuna.trial.TrialState.COMPLETE,))
            except Exception:  # study not created yet
                continue
            completed = {t.number: tuple(t.values) for t in trials}
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert completed, "no trial completed before the deadline"
    time.sleep(3)  # longer than grace_s: the killed worker's trial is now stale
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = _load(out)
    done = {t.number: tuple(t.values) for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
    assert len(done) == 4
    for number, values in completed.items():  # completed before the kill: kept as they were
        assert done[number] == values
    # nothing completed twice: every completed trial has its own parameters and run directory
    assert len({tuple(sorted(t.params.items())) for t in study.trials if t.number in done}) == 4
    assert len({t.user_attrs["run_dir"] for t in study.trials if t.number in done}) == 4
    # (the killed worker's trial is FAIL and retried once, or, if the kill landed before its first
    # heartbeat, stays RUNNING: Optuna treats a trial without heartbeats as never stale)


def test_two_workers_share_one_study_on_a_journal_file(tmp_path):
    out = tmp_path / "study"
    journal = f"journal:{tmp_path / 'study.log'}"
    cmd = _cmd(out, 4, f"sweep.storage={journal}")
    workers = [subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    outputs = [w.communicate(timeout=600) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [o[1][-2000:] for o in outputs]
    study = _load(out, journal)
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    # one shared budget: each worker stops once 4 are done (at most one more is in flight then)
    assert 4 <= len(done) <= 5
    assert len({tuple(sorted(t.params.items())) for t in done}) == len(done)  # no trial proposed twice
    dirs = [t.user_attrs["run_dir"] for t in done]
    assert len(set(dirs)) == len(dirs)
    assert all((Path(d) / "result.json").is_file() for d in dirs)
    pids = {json.loads((Path(d) / "result.json").read_text())["pid"] for d in dirs}
    assert len(pids) == 2  # both workers ran trials
