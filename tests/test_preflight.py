"""The model-dependent checks stay light to import: the config gate of every `python -m src.train`
(a `--help` or a config error included) loads neither torch nor timm."""

from __future__ import annotations

import subprocess
import sys

import pytest

from src.config import ConfigError, RunConfig
from tests.cli import REPO, env
from tests.conftest import TINY, merge

HEAVY = ("torch", "timm", "wandb")


@pytest.mark.parametrize("module", ["src.gate", "src.training.preflight", "src.strategies"])
def test_importing_the_gate_side_loads_no_torch(module):
    code = f"import {module}, sys; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]", f"importing {module} loads {proc.stdout.strip()}"


def test_preflight_checks_the_model_and_counts_its_backbone_groups():
    from src.training.preflight import architecture_groups, preflight

    assert preflight(RunConfig.from_dict(TINY)) == 6  # test_efficientnet: stem, 5 stages (the head apart)
    groups = architecture_groups("test_efficientnet", 32, "coarse")
    assert all(isinstance(g.params, tuple) for g in groups)  # names and shapes: the cache holds no model
    with pytest.raises(ConfigError, match="strategy.unfreeze_depth=7 exceeds this model's 6 backbone groups"):
        preflight(RunConfig.from_dict(merge(TINY, {"strategy": {"name": "layerwise", "unfreeze_depth": 7}})))


def test_more_threads_than_the_cpus_a_run_may_use_is_refused_where_it_trains(tmp_path):
    # 1000 threads on 2 cores: a 1-epoch smoke run went from 0.3 s to minutes and the load average to
    # 900, its times the oversubscription's. The count is the run's affinity (a SLURM job's cpuset),
    # here one CPU by taskset, not the machine's.
    cmd = ["taskset", "-c", "0", sys.executable, "-m", "src.train", "experiment=smoke", "logger=none",
           f"paths.output_dir={tmp_path}"]
    proc = subprocess.run([*cmd, "trainer.num_threads=2", "trainer.dry_run=true"], cwd=REPO, env=env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: trainer.num_threads=2 is more than the 1 CPU this process may use: threads past them take turns "
        "on the same cores, slowing every step and the times measured; set at most 1, or null (torch's default)")
    proc = subprocess.run([*cmd, "trainer.num_threads=1", "trainer.dry_run=true"], cwd=REPO, env=env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
