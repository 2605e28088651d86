"""The default study end to end (slow): real pretrained EfficientNet-Lite0 on digits, three strategies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "pneumoniamnist" / "pneumoniamnist.npz"


@pytest.mark.slow
def test_default_study_finishes_in_time_and_reaches_accuracy(tmp_path):
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "src.train", "-m", "strategy=frozen,full,layerwise", "logger=none",
         "trainer.progress=false", f"hydra.sweep.dir={tmp_path}"],
        cwd=REPO, env=os.environ | {"HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=900,
    )
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {r["strategy"]: r for r in (json.loads(p.read_text()) for p in tmp_path.glob("*/result.json"))}
    assert set(results) == {"frozen", "full", "layerwise"}
    print(proc.stdout[proc.stdout.index("3 runs in") :], f"\nwall {elapsed:.0f}s")
    assert elapsed < 600
    assert max(results["full"]["test_acc"], results["layerwise"]["test_acc"]) >= 0.95
    for r in results.values():
        assert r["model"] == "tf_efficientnet_lite0" and r["status"] == "completed"
