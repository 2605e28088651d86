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
