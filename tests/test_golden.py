"""Golden values: the default study's first two epochs, pinned.

The default study (`python -m src.train -m strategy=frozen,full,layerwise`: EfficientNet-Lite0 with its
real ImageNet weights on digits at 96 px, seed 0, channels_last as `trainer.channels_last=auto` gives on
CPU since the layout measured faster there) was run once and its first two epochs stored in
fixtures/golden_default_study.json. Here each strategy runs the same default config and is stopped
after epoch 1 (an `on_epoch` callback; stopping draws no random numbers, so epochs 0 and 1 are those of
the full 6-epoch run). A refactor that silently changes a number (the head's initialisation, the data
order, a learning rate, the loss) fails here, instead of surfacing weeks later as a moved table.

Losses are compared with a small relative tolerance: a CPU with other vector instructions rounds
differently in the last bits, but nothing that changes what is computed stays within 1e-4. Learning
rates are arithmetic on the config and FLOPs are counted: both must match exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from src.config import RunConfig
from src.record.io import read_jsonl
from src.training.run import run

GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "golden_default_study.json").read_text())


def _first_two_epochs(strategy: str, run_dir: Path) -> list[dict]:
    cfg = RunConfig.from_dict({"strategy": {"name": strategy}, "logger": {"kind": "none"},
                               "trainer": {"progress": False}})
    result = run(cfg, run_dir, on_epoch=lambda record: "golden: two epochs" if record.epoch == 1 else None)
    assert result["status"] == "pruned" and result["pruned_epoch"] == 1
    return read_jsonl(run_dir / "metrics.jsonl")


def _check(strategy: str, tmp_path: Path) -> None:
    got = _first_two_epochs(strategy, tmp_path)
    want = GOLDEN["strategies"][strategy]
    assert [m["epoch"] for m in got] == [0, 1]
    for g, w in zip(got, want):
        for key in ("train_loss", "val_loss"):
            torch.testing.assert_close(g[key], w[key], rtol=1e-4, atol=0, msg=f"{strategy} epoch {w['epoch']} {key}")
        # one validation image of 360 is 0.0028: a rounding difference may flip at most one
        assert abs(g["val_acc"] - w["val_acc"]) <= 1 / 360 + 1e-12, (strategy, w["epoch"], g["val_acc"], w["val_acc"])
        assert g["trainable_params"] == w["trainable_params"]
        assert g["train_flops_cum"] == w["train_flops_cum"]
        assert {k: v for k, v in g.items() if k.startswith("lr/")} == w["lrs"]


# Frozen (the feature-cache path) is the fast tier's; layer-wise (every group at its own LR, 33 s)
# and full train the whole network and run with the slow tier.
@pytest.mark.parametrize("strategy", ["frozen", pytest.param("layerwise", marks=pytest.mark.slow)])
def test_default_study_first_two_epochs_match_the_stored_values(strategy, tmp_path):
    _check(strategy, tmp_path)


@pytest.mark.slow
def test_default_study_full_fine_tuning_first_two_epochs_match_the_stored_values(tmp_path):
    _check("full", tmp_path)
