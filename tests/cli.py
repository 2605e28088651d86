"""Shared bits for tests that run the entrypoints as subprocesses, as a user would."""

from __future__ import annotations

import os
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
    """The caller's environment, offline for model hubs, with the repo importable."""
    return os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
