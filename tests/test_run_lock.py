"""One process trains in a run folder at a time (src/record/lock.py): the same command started twice,
or two configs given one hydra.run.dir, trained in one folder at once and left it with one run's
config.yaml beside the other's result.json. The second process is refused in one line, and the lock
goes with the process that held it, however it ends, and not with the workers it forked."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from src.record.lock import FolderInUse, held
from tests.cli import REPO, env


def test_a_held_folder_refuses_a_second_holder_until_released(tmp_path):
    run_dir = tmp_path / "run"
    with held(run_dir):
        assert run_dir.is_dir() and list(run_dir.iterdir()) == []  # no lock file: a refusal writes nothing
        with pytest.raises(FolderInUse, match=f"the run folder {run_dir} is in use"):
            with held(run_dir):
                pass
    with held(run_dir):  # released with the block
        pass


def test_a_worker_forked_while_held_does_not_keep_the_folder_locked(tmp_path):
    # data decoding workers are forked while the run holds its folder; one that outlives a killed run
    # for a moment must not keep the folder from the run's resume
    ready, tell = os.pipe()
    with held(tmp_path):
        child = os.fork()
        if child == 0:  # the worker: alive past its parent's release (fork's callbacks have run by now)
            os.write(tell, b"up")
            time.sleep(5)
            os._exit(0)
        assert os.read(ready, 2) == b"up"  # (until the child runs at all, its copy is still open)
    try:
        with held(tmp_path):  # the worker is still alive here
            assert os.waitpid(child, os.WNOHANG) == (0, 0)
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)
        os.close(ready)
        os.close(tell)


def test_a_run_in_a_folder_another_process_trains_in_is_one_line_and_writes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from src.record.lock import held\n"
         f"with held(Path({str(run_dir)!r})):\n    print('held', flush=True); time.sleep(120)"],
        cwd=REPO, env=env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        proc = subprocess.run([sys.executable, "-m", "src.train", "experiment=smoke", "logger=none",
                               f"hydra.run.dir={run_dir}"], cwd=REPO, env=env(), capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 2, proc.stderr[-2000:]
        [line] = proc.stderr.strip().splitlines()
        assert line.startswith(f"error: the run folder {run_dir} is in use: another process is training in it now")
        # the holder's folder: nothing of the refused run (no config.yaml, no record, no .hydra/ saying
        # what the holder did not run), at most Hydra's log
        assert not {"result.json", "config.yaml", "metrics.jsonl", ".hydra"} & {p.name for p in run_dir.iterdir()}
    finally:
        holder.kill()
        holder.wait()
    # killed, the holder's lock is gone with it: the same command runs
    proc = subprocess.run([sys.executable, "-m", "src.train", "experiment=smoke", "logger=none",
                           f"hydra.run.dir={run_dir}"], cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (run_dir / "result.json").is_file()


def test_prune_removes_every_write_a_kill_cut_short_and_nothing_else(tmp_path):
    # a kill while model_best.pt was written left .model_best.pt.HEX.tmp (13 MiB) for good: only the
    # checkpoints' temporaries were removed; with the folder held, no other process writes one there
    from src.training import checkpoint

    cut = [".model_best.pt.0123456789ab.tmp", ".result.json.abcdef012345.tmp", ".checkpoint_epoch001.pt.00ff00ff00ff.tmp"]
    kept = [".keepme.tmp", "notes.tmp", ".model_best.pt.xyz.tmp", "model_best.pt"]
    for name in cut + kept:
        (tmp_path / name).write_bytes(b"x")
    checkpoint.prune(tmp_path, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)


def test_a_multiruns_job_refused_its_folder_ends_the_multirun_with_exit_2(tmp_path):
    # README: the line ends a multirun, exit 2 (the user's to settle). It went out through the full
    # disk's exit, 1, as a failure of the tool.

    busy = tmp_path / "m" / "0_frozen"
    with held(busy):
        proc = subprocess.run([sys.executable, "-m", "src.train", "-m", "experiment=smoke", "logger=none",
                               "strategy=frozen", f"hydra.sweep.dir={tmp_path / 'm'}"], cwd=REPO, env=env(),
                              capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: the run folder {busy} is in use")
