"""`make sweep` (`python -m src.train -m sweep=default`, the preset over `hydra/sweeper=optuna`) on
real storages (sqlite, journal file, PostgreSQL), in real subprocesses."""

from __future__ import annotations

import itertools
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest

from src.search.pruning import halving_keeps
from src.record.io import read_jsonl

from tests.cli import TINY_OVERRIDES as TINY
from tests.cli import env as _env


def _cmd(out: Path, n: int, *extra: str) -> list[str]:
    """`make sweep ARGS=...` with tiny trials in the fixed folder `out`."""
    return [sys.executable, "-m", "src.train", "-m", "sweep=default", f"hydra.sweeper.n_trials={n}",
            f"hydra.sweep.dir={out}", *TINY, *extra]


def trial_dir(out: Path, number: int, strategy: str = "layerwise") -> Path:
    """A trial's folder: its Hydra job's, numbered by the trial number."""
    return out / f"{number}_{strategy}"


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
        assert result["strategy"] == "layerwise"
        assert result["strategy_params"]["lr_decay"] == t.params["strategy.lr_decay"]
        # the preset's training settings reach every trial: BatchNorm on pretrained statistics
        assert result["frozen_bn"] == "all"
        assert "progress: false" in (Path(t.user_attrs["run_dir"]) / "config.yaml").read_text()
        assert 1.0 <= t.params["strategy.lr_decay"] <= 10.0
        assert 0 <= t.params["strategy.unfreeze_depth"] <= 6  # range(0, groups): test_efficientnet has 6
    pareto = json.loads((out / "pareto.json").read_text())
    values = [tuple(t.values) for t in done]
    front = [(p["val_acc"], p["train_flops"]) for p in pareto]
    assert front and all(not any(_dominated(f, v) for v in values) for f in front)
    assert all(v in front or any(_dominated(v, f) for f in front) for v in values)
    assert "Pareto set of study layerwise-default" in proc.stdout
    # its pace after each trial (tests/test_sweep_cost.py checks the arithmetic)
    both = proc.stdout + proc.stderr
    assert re.search(r"1 of 3 trials done in \S+; about \S+ left at this pace", both), both[-3000:]
    assert re.search(r"3 of 3 trials done in \S+\n", both), both[-3000:]
    # the sweep ends with its report: every trial, pooled by configuration
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert sorted(d for r in summary for d in r["run_dirs"]) == sorted(t.user_attrs["run_dir"] for t in done)
    assert (out / "report" / "index.html").is_file()


@pytest.mark.slow
def test_killed_sweep_resumes_without_losing_or_repeating_trials(tmp_path):
    out = tmp_path / "study"
    cmd = _cmd(out, 4, "hydra.sweeper.heartbeat_s=1", "hydra.sweeper.grace_s=2")
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
    # the killed worker's trial is FAIL (also when the kill landed before its first heartbeat) and
    # nothing is left running
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))


def _two_workers_share_one_study(tmp_path: Path, url: str) -> None:
    out = tmp_path / "study"
    cmd = _cmd(out, 4, f"hydra.sweeper.storage={url}")
    workers = [subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    outputs = [w.communicate(timeout=600) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [o[1][-2000:] for o in outputs]
    study = _load(out, url)
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
    # one shared budget, exact: a trial that lost the last place to another worker's trains nothing
    assert len(done) == 4
    assert len([t for t in study.trials if not t.user_attrs.get("surplus")]) == 4
    assert len({tuple(sorted(t.params.items())) for t in done}) == len(done)  # no trial proposed twice
    dirs = [t.user_attrs["run_dir"] for t in done]
    assert len(set(dirs)) == len(dirs)
    assert all((Path(d) / "result.json").is_file() for d in dirs)
    pids = {json.loads((Path(d) / "result.json").read_text())["pid"] for d in dirs}
    assert len(pids) == 2  # both workers ran trials


@pytest.mark.slow  # end-to-end subprocess run(s): moved out of the fast tier (issue 24: under 8 min)
def test_two_workers_share_one_study_on_a_journal_file(tmp_path):
    _two_workers_share_one_study(tmp_path, f"journal:{tmp_path / 'study.log'}")


@pytest.fixture(scope="module")
def postgres_url():
    """A throw-away PostgreSQL server from Debian's packages (`postgresql`); skipped when there is none."""
    initdb = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not initdb:
        pytest.skip("no PostgreSQL server binaries (Debian package postgresql); .ci/run installs them")
    pytest.importorskip("psycopg", reason="the PostgreSQL driver (pip install 'psycopg[binary]')")
    bindir = initdb[-1].parent
    root = Path(tempfile.mkdtemp(prefix="optuna-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run the server as")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data, log = root / "data", root / "server.log"
    try:
        subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                        "--no-sync"], check=True, capture_output=True, timeout=120)
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
                        "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"],
                       check=True, capture_output=True, timeout=120)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as err:
        detail = log.read_text()[-500:] if log.exists() else getattr(err, "stderr", b"") or b""
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"PostgreSQL did not start: {err}; {detail!r}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_share_one_study_on_postgresql(tmp_path, postgres_url):
    _two_workers_share_one_study(tmp_path, postgres_url)


@pytest.mark.slow  # end-to-end subprocess run(s): moved out of the fast tier (issue 24: under 8 min)
@pytest.mark.parametrize("pruner", ["dominated", "halving"])
def test_pruned_trials_are_recorded_counted_and_pareto_rerun_on_seeds(tmp_path, pruner):
    out = tmp_path / "study"
    cmd = _cmd(out, 6, "trainer.epochs=3", f"hydra.sweeper.pruner.name={pruner}", "hydra.sweeper.pruner.startup=1",
               "hydra.sweeper.pruner.after=1", "hydra.sweeper.rerun_seeds=[1,2]")
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = _load(out)
    trials = study.get_trials()
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(trials) == 6 and pruned and complete, [t.state for t in trials]
    for t in pruned:
        result = json.loads((Path(t.user_attrs["run_dir"]) / "result.json").read_text())
        assert result["status"] == "pruned" and result["epochs_trained"] < 3
        k = result["pruned_epoch"]
        acc, cost = t.user_attrs["curve"][k]
        if pruner == "dominated":  # really dominated at its epoch by a trial that had finished before it started
            assert any(c.number < t.number and c.user_attrs["curve"][k][0] >= acc and c.user_attrs["curve"][k][1] <= cost
                       for c in complete), (t.number, t.user_attrs["curve"])
        else:  # at a rung (epoch 1 of 3), and not in the top third of the earlier trials that reached it
            earlier = [tuple(c.user_attrs["curve"][k]) for c in trials if c.number < t.number]
            assert k == 0 and not halving_keeps((acc, cost), earlier, use_cost=True), (t.number, earlier)
    for t in trials:  # the judged value is the run's objective so far: its best epoch (select=best_val)
        vals = [m["val_acc"] for m in read_jsonl(Path(t.user_attrs["run_dir"]) / "metrics.jsonl")]
        assert [a for a, _ in t.user_attrs["curve"]] == list(itertools.accumulate(vals, max))
    summary = json.loads((out / "summary.json").read_text())
    trained = sum(len((Path(t.user_attrs["run_dir"]) / "metrics.jsonl").read_text().splitlines()) for t in trials)
    assert summary["epochs_trained"] == trained < summary["epochs_unpruned"] == 18
    assert summary["states"] == {"complete": len(complete), "pruned": len(pruned)}
    used = [json.loads((Path(t.user_attrs["run_dir"]) / "result.json").read_text())["train_flops"] for t in trials]
    assert summary["total_train_flops"] == pytest.approx(sum(used)) and summary["span_s"] > 0
    # the console line rounds what summary.json keeps in full
    assert f"; best_val_acc {summary['best_val_acc']:.4g} (trial {summary['best_trial']})\n" in proc.stdout
    # the Pareto set, re-run on two more seeds and evaluated on test
    rerun = json.loads((out / "pareto_rerun.json").read_text())
    front = {p["trial"] for p in json.loads((out / "pareto.json").read_text())}
    assert {e["trial"] for e in rerun} == front
    for e in rerun:
        runs = [json.loads((out / "rerun" / f"trial_{e['trial']:04d}" / f"seed_{s}" / "result.json").read_text())
                for s in (1, 2)]
        assert [r["seed"] for r in runs] == [1, 2]
        assert e["test_acc_values"] == [r["test_acc"] for r in runs]
        assert e["test_acc"] == pytest.approx(sum(e["test_acc_values"]) / 2)
    assert "Pareto set re-run on seeds [1, 2]" in proc.stdout

