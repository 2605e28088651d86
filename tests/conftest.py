from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from src.config import RunConfig

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Nothing in the tests may reach the network: hub look-ups fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")
# The decoded-data cache (src/data/cache.py) defaults to the user's cache folder: tests must not
# write there, so the default points into a temporary folder for this session (a test that
# checks the cache passes its own dataset.cache_dir).
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="ft-compare-test-cache-")
atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], ignore_errors=True)


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


TINY = {
    # A real timm architecture, small enough to train in seconds on a CPU.
    "model": {"name": "test_efficientnet", "pretrained": False},
    "dataset": {"kind": "digits", "image_size": 32, "train_per_class": 4},
    "trainer": {"epochs": 2, "batch_size": 16, "progress": False},
    "logger": {"kind": "none"},
}


@pytest.fixture
def tiny_config():
    def make(**sections) -> RunConfig:
        return RunConfig.from_dict(merge(TINY, sections))

    return make


@pytest.fixture(autouse=True)
def fresh_process_stores():
    """Every test starts as a fresh process would: nothing kept from another test's runs
    (src/training/reuse.py; tests/test_reuse.py checks the reuse itself). And it ends as a process
    does: the empty output folders its in-process composing claimed (`${unique_dir:...}`, resolved
    in the checkout when no output_dir is given) are released, as src.gate's exit hook does for a
    real process. Released only at the session's end, a claim made while a subprocess test's date
    folder existed left that folder behind, empty, in the checkout."""
    import sys

    reuse = sys.modules.get("src.training.reuse")
    if reuse is not None:
        reuse.clear()
    tracking = sys.modules.get("src.reporting.tracking")
    if tracking is not None:  # a W&B server another test could not reach (tests/test_tracking.py)
        tracking._online_failed = None
    yield
    gate = sys.modules.get("src.gate")
    if gate is not None:
        gate.release_unused_dirs()


# In-process composing resolves `${unique_dir:...}` in the checkout (no output_dir given), and with
# `-n 2` two workers do it at once: a date folder one worker made holds the other's claim when it
# releases its own, so neither removes it and an empty multirun/DATE/ was left in the checkout.
# Tidied once every worker has finished (never by a worker: another may be claiming in it), and only
# the empty folders of a tree the session made.
_LITTER = [REPO / "multirun", REPO / "outputs"]


def pytest_sessionstart(session):
    session.config._absent_before = [p for p in _LITTER if not p.exists()]


def pytest_sessionfinish(session):
    if hasattr(session.config, "workerinput"):
        return
    for top in getattr(session.config, "_absent_before", []):
        for folder, _, _ in sorted(os.walk(top), key=lambda entry: -len(entry[0])):  # deepest first
            with contextlib.suppress(OSError):  # a folder that holds anything stays
                os.rmdir(folder)
