"""The Hydra entrypoint as a user runs it: a multirun over the three strategies, the table, errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pathlib import Path

from tests.cli import TINY_OVERRIDES, env, python_c

TINY = [*TINY_OVERRIDES, "trainer.progress=false"]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env(), capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # end-to-end subprocess run(s): moved out of the fast tier (issue 24: under 8 min)
def test_multirun_of_three_strategies_prints_the_table(tmp_path):
    sweep = tmp_path / "multi"
    proc = _run(["-m", "src.train", "-m", "strategy=frozen,full,layerwise", *TINY, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {json.loads(p.read_text())["strategy"]: p.parent for p in sweep.glob("*/result.json")}
    assert set(results) == {"frozen", "full", "layerwise"}
    for run_dir in results.values():
        for name in ("config.yaml", "metrics.jsonl", "param_groups.json", "result.json", ".hydra/overrides.yaml"):
            assert (run_dir / name).is_file(), run_dir / name
    table = proc.stdout[proc.stdout.index("3 runs in") :]
    for strategy, run_dir in results.items():
        line = next(line for line in table.splitlines() if line.startswith(strategy + " "))
        assert run_dir.name in line and "completed" in line
    frozen = json.loads((results["frozen"] / "result.json").read_text())
    full = json.loads((results["full"] / "result.json").read_text())
    assert frozen["trainable_params"] < full["trainable_params"] == full["total_params"]
    assert frozen["train_flops"] < full["train_flops"]

    again = _run(["-m", "src.report", str(sweep)], tmp_path)
    assert again.returncode == 0
    assert again.stdout.strip() == table.split("\n", 1)[1].strip()


def test_bad_override_is_one_line_and_nonzero(tmp_path):
    proc = _run(["-m", "src.train", *TINY, "strategy.lr_decay=-1", "hydra.run.dir=" + str(tmp_path / "r")], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: strategy.lr_decay=-1.0 must be >= 1: ")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()  # checked before Hydra makes the run folder


def test_depth_beyond_model_is_rejected_before_training(tmp_path):
    proc = _run(["-m", "src.train", *TINY, "strategy.unfreeze_depth=40", "hydra.run.dir=" + str(tmp_path / "r")], tmp_path)
    assert proc.returncode == 2
    assert "strategy.unfreeze_depth=40 exceeds this model's 6 backbone groups" in proc.stderr
    assert not (tmp_path / "r" / "metrics.jsonl").exists()


def test_report_on_missing_folder_is_an_error(tmp_path):
    proc = _run(["-m", "src.report", str(tmp_path / "nothing")], tmp_path)
    assert proc.returncode == 2 and "no such folder" in proc.stderr


@pytest.mark.slow  # end-to-end subprocess run(s): moved out of the fast tier (issue 24: under 8 min)
def test_a_failed_job_does_not_stop_the_multirun(tmp_path):
    sweep = tmp_path / "multi"
    proc = _run(
        ["-m", "src.train", "-m", "strategy=full", "optim.lr=1e30,1e-3", "optim.warmup_epochs=0", *TINY,
         f"hydra.sweep.dir={sweep}"],
        tmp_path,
    )
    assert proc.returncode == 1
    statuses = sorted(json.loads(p.read_text())["status"] for p in sweep.glob("*/result.json"))
    assert statuses == ["completed", "failed"]
    assert "2 runs in" in proc.stdout and " failed " in proc.stdout
    assert "error: 1 of 2 runs did not complete: 0_full" in proc.stderr


def _fanned_out(sweep: Path, proc: subprocess.CompletedProcess) -> list[dict]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/result.json"))]
    assert [r["strategy"] for r in results] == ["frozen", "full", "layerwise"]
    assert all(r["status"] == "completed" for r in results)
    assert "3 runs in" in proc.stdout  # the table still prints once, in the driver
    return results


@pytest.mark.slow
def test_joblib_launcher_runs_jobs_in_parallel_worker_processes(tmp_path):
    sweep = tmp_path / "multi"
    proc = _run(["-m", "src.train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "trainer.num_threads=1",
                 "strategy=frozen,full,layerwise", *TINY, f"hydra.sweep.dir={sweep}"], tmp_path)
    results = _fanned_out(sweep, proc)
    assert len({r["pid"] for r in results}) >= 2 and all(r["cpu_threads"] == 1 for r in results)


@pytest.mark.slow
def test_submitit_local_launcher_runs_each_job_as_its_own_process(tmp_path):
    # submitit_local is the SLURM launcher's local twin: same plugin, same job files, no cluster.
    sweep = tmp_path / "multi"
    proc = _run(["-m", "src.train", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
                 "strategy=frozen,full,layerwise", *TINY, f"hydra.sweep.dir={sweep}"], tmp_path)
    results = _fanned_out(sweep, proc)
    assert len({r["pid"] for r in results}) == 3


def test_the_entrypoint_loads_no_torch_before_a_job_runs():
    # A refused command line, --help and completion are answered before any job: the entrypoint's own
    # imports stay light (0.4 s instead of 5.9). The job imports torch, timm and scipy itself.
    heavy = ("torch", "timm", "torchvision", "scipy", "matplotlib", "optuna")
    loaded = python_c(f"import sys, src.train; print(*[m for m in {heavy!r} if m in sys.modules])")
    assert loaded == [], loaded


@pytest.mark.slow  # a dry run end to end: 20-30 s on 2 shared cores
def test_relative_paths_under_hydra_job_chdir_name_files_where_the_command_ran(tmp_path):
    # Seen: `dataset.root=pm.npz hydra.job.chdir=true` passed the checks (run from pm.npz's folder), then the job,
    # moved into its own folder by Hydra, said "dataset.root='pm.npz': no such .npz file" there.
    import numpy as np

    rng = np.random.default_rng(0)
    arrays = {f"{split}_{what}": (rng.integers(0, 255, (n, 28, 28), dtype=np.uint8) if what == "images"
                                  else np.arange(n, dtype=np.uint8).reshape(n, 1) % 2)
              for split, n in (("train", 12), ("val", 6), ("test", 6)) for what in ("images", "labels")}
    np.savez(tmp_path / "tiny.npz", **arrays)
    run = tmp_path / "r"
    proc = _run(["-m", "src.train", *TINY, "dataset=medmnist", "dataset.root=tiny.npz", "hydra.job.chdir=true",
                 "trainer.dry_run=true", f"hydra.run.dir={run}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "error" not in json.loads((run / "estimate.json").read_text())


def test_from_cwd_makes_only_relative_paths_whole(tmp_path):
    from src.config import from_cwd
    from src.gate import check_overrides, to_run_config

    cfg = to_run_config(check_overrides(["dataset=medmnist", "dataset.root=a.npz", "dataset.cache_dir=/abs/cache",
                                         "model.checkpoint_path=w/b.pt"]))
    moved = from_cwd(cfg, tmp_path)
    assert (moved.dataset.root, moved.dataset.cache_dir) == (str(tmp_path / "a.npz"), "/abs/cache")
    assert moved.model.checkpoint_path == str(tmp_path / "w" / "b.pt")
    assert moved.dataset.ood == () and moved.trainer == cfg.trainer


@pytest.mark.slow  # a dry multirun end to end: 20-40 s on 2 shared cores
def test_a_dry_multirun_job_that_cannot_start_names_the_file_that_says_so(tmp_path):
    # Seen: "run failed (...); recorded in .../1_full/result.json", a file a dry run never writes: its estimate.json says why.
    sweep = tmp_path / "dry"
    proc = _run(["-m", "src.train", "-m", *TINY, "strategy=frozen,full", "trainer.feature_cache=on", "trainer.dry_run=true",
                 f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    failed = [line for line in (proc.stdout + proc.stderr).splitlines() if "run failed (" in line]
    assert len(failed) == 1 and failed[0].endswith(f"recorded in {sweep / '1_full' / 'estimate.json'}"), failed
    assert not (sweep / "1_full" / "result.json").exists() and "error" in json.loads((sweep / "1_full" / "estimate.json").read_text())
