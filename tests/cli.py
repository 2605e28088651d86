"""Shared bits for tests that run the entrypoints as subprocesses, as a user would."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# A real timm architecture small enough to train in seconds, on a few digits, untracked.
TINY_OVERRIDES = [
    "model.name=test_efficientnet",
    "model.pretrained=false",
    "dataset.image_size=32",
    "dataset.train_per_class=3",
    "trainer.epochs=1",
    "logger=none",
]


def env() -> dict[str, str]:
    """The caller's environment, offline for model hubs. Nothing is added to PYTHONPATH: the package
    is installed (`make install`, editable), so `python -m src.train` imports this checkout's code
    from any working folder; `check_subprocesses_import_this_checkout` stops the tests where not."""
    check_subprocesses_import_this_checkout()
    return os.environ | {"HF_HUB_OFFLINE": "1"}


def python_c(code: str, timeout: int = 120) -> list[str]:
    """Run `python -c code` in a fresh interpreter (so nothing this test process imported counts) and
    return its printed words; a failure shows its stderr."""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env(), capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


@functools.cache
def check_subprocesses_import_this_checkout() -> None:
    """Raise, naming both folders, when a subprocess started outside the checkout would import `src`
    from somewhere else: the editable install of another clone, say, with no PYTHONPATH pointing
    here. Its tests would pass or fail on code other than the code under test."""
    with tempfile.TemporaryDirectory() as elsewhere:
        proc = subprocess.run([sys.executable, "-c", "import src; print(src.__file__)"], cwd=elsewhere,
                              env=os.environ, capture_output=True, text=True, timeout=120)
    found = proc.stdout.strip()
    mine = REPO / "src" / "__init__.py"
    if proc.returncode != 0 or not found or Path(found).resolve() != mine.resolve():
        where = found or (proc.stderr.strip().splitlines() or ["nowhere"])[-1]
        raise RuntimeError(f"a subprocess imports src from {where}, not from {mine.parent}: run `make install` "
                           f"in {REPO} (or set PYTHONPATH={REPO})")
