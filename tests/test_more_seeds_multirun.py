"""Adding values to a finished multirun in its folder (`strategy=frozen,full seed=0,1`, then `seed=0,1,2`):
Hydra numbers the jobs by their place in the sweep, so a job's folder may hold another job's run. Each
job finds its own run by config (src/training/job_dir.py): finished runs are kept, not trained again, the
new seeds train beside them, and nothing is refused or overwritten."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from src.training.job_dir import multirun_job_dir
from src.training.run import run
from tests.cli import TINY_OVERRIDES, env

TINY = [*TINY_OVERRIDES, "trainer.progress=false", "trainer.num_threads=1", "trainer.drift_probe=0"]


def test_a_job_finds_its_run_by_config_not_by_its_number(tiny_config, tmp_path):
    seed = lambda s: tiny_config(seed=s, trainer={"epochs": 1, "drift_probe": 0})  # noqa: E731
    sweep = tmp_path / "multi"
    run(seed(0), sweep / "0_x")
    run(seed(1), sweep / "1_x")
    kept = {d.name: (d / "result.json").read_bytes() for d in sweep.iterdir()}
    assert multirun_job_dir(sweep / "0_x", seed(0)) == sweep / "0_x"  # its own: kept there
    assert multirun_job_dir(sweep / "1_x", seed(0)) == sweep / "0_x"  # numbered another's: found by config
    assert multirun_job_dir(sweep / "2_x", seed(1)) == sweep / "1_x"
    assert multirun_job_dir(sweep / "2_x", seed(2)) == sweep / "2_x"  # new: the folder Hydra named
    # its folder holds another config's finished run, and its own is nowhere: a new folder beside it,
    # the same one every time the command is run again (its run kept or resumed there)
    assert multirun_job_dir(sweep / "1_x", seed(2)) == sweep / "1_x_1"
    run(seed(2), sweep / "1_x_1")
    assert multirun_job_dir(sweep / "1_x", seed(2)) == sweep / "1_x_1"
    assert multirun_job_dir(sweep / "1_x", seed(3)) == sweep / "1_x_2"
    assert {d: (sweep / d / "result.json").read_bytes() for d in kept} == kept  # nothing overwritten


class Killed(BaseException):
    pass


def test_a_killed_run_found_by_config_resumes_unless_a_process_trains_in_it(tiny_config, tmp_path, monkeypatch):
    from src.record import lock
    from src.training import checkpoint

    cfg = tiny_config(seed=1, trainer={"epochs": 2, "drift_probe": 0})
    sweep = tmp_path / "multi"
    save = checkpoint.save

    def save_then_die(run_dir, state, keep):
        save(run_dir, state, keep)
        raise Killed()

    monkeypatch.setattr(checkpoint, "save", save_then_die)
    with pytest.raises(Killed):
        run(cfg, sweep / "1_x")  # killed after epoch 0 under the earlier numbering
    monkeypatch.setattr(checkpoint, "save", save)
    assert checkpoint.checkpoints(sweep / "1_x")
    assert multirun_job_dir(sweep / "2_x", cfg) == sweep / "1_x"  # resumed there, its epoch 0 kept
    with lock.held(sweep / "1_x"):  # a process trains it now (a twin job under joblib): its own folder
        assert multirun_job_dir(sweep / "2_x", cfg) == sweep / "2_x"


@pytest.mark.slow  # three multiruns of the tiny model, about 40 s on the 2-core host
def test_adding_seeds_to_a_finished_multirun_trains_only_the_new_ones(tmp_path):
    sweep = tmp_path / "multi"

    def multirun(seeds: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "src.train", "-m", "strategy=frozen,full", f"seed={seeds}", *TINY,
                               f"hydra.sweep.dir={sweep}"], cwd=tmp_path, env=env(), capture_output=True, text=True,
                              timeout=600)

    first = multirun("0,1")
    assert first.returncode == 0, first.stderr[-3000:]
    kept = {d.name: (d / "result.json").read_bytes() for d in sweep.iterdir() if (d / "result.json").is_file()}
    for _ in range(2):  # seeds added; then the same command again, which trains nothing
        more = multirun("0,1,2")
        assert more.returncode == 0, more.stderr[-3000:]  # was: job 3's folder held full seed 1, refused, exit 2
        assert {d: (sweep / d / "result.json").read_bytes() for d in kept} == kept
        runs = [json.loads(p.read_text()) for p in sweep.glob("*/result.json")]
        assert sorted((r["strategy"], r["seed"]) for r in runs) == [(s, n) for s in ("frozen", "full") for n in range(3)]
        assert "6 runs in" in more.stdout and "duplicate" not in more.stdout + more.stderr
