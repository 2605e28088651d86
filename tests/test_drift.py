"""Drift from the pretrained weights: the measures on known cases, and recorded by real runs."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import timm
import torch

from src.config import ModelConfig
from src.measurement.drift import drift, group_output_modules, linear_cka, relative_weight_change
from src.models import load_pretrained
from src.strategies import layer_groups
from tests.cli import TINY_OVERRIDES, env


def test_linear_cka_is_invariant_to_rotation_and_scale_and_low_for_unrelated_features():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 32, generator=g)
    q, _ = torch.linalg.qr(torch.randn(32, 32, generator=g))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 3.0 * x @ q + 1.0) == pytest.approx(1.0)  # rotation, scale, offset
    assert linear_cka(x, torch.randn(64, 32, generator=g)) < 0.6
    assert linear_cka(x.view(64, 2, 4, 4), x.view(64, 2, 4, 4)) == pytest.approx(1.0)  # maps are flattened


def test_weight_change_is_per_group_and_exact():
    model = timm.create_model("test_efficientnet", num_classes=10)
    reference = copy.deepcopy(model)
    groups = layer_groups(model)
    with torch.no_grad():
        for n in groups[2].param_names:
            dict(model.named_parameters())[n].mul_(1.1)
    change = relative_weight_change(model, reference, groups)
    assert list(change) == [g.name for g in groups[:-1]]  # the new head has no pretrained start
    assert change[groups[2].name] == pytest.approx(0.1)
    assert all(v == 0.0 for k, v in change.items() if k != groups[2].name)


def test_group_outputs_come_from_modules_that_hold_only_that_group():
    model = timm.create_model("resnet18", num_classes=10)
    assert group_output_modules(model, layer_groups(model)) == {
        "conv1+bn1": "bn1", "layer1": "layer1", "layer2": "layer2", "layer3": "layer3", "layer4": "layer4",
    }


def test_imagenet_agreement_with_the_real_pretrained_weights():
    reference = load_pretrained(ModelConfig(name="tf_efficientnet_lite0"))
    model = copy.deepcopy(reference)
    model.reset_classifier(10)
    groups = layer_groups(model)
    images = torch.randn(16, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    same = drift(model, reference, groups, images, imagenet_head=True)
    assert same.imagenet_agreement == 1.0 and same.cka_features == pytest.approx(1.0)
    with torch.no_grad():  # a top stage retrained far from its start
        for n in groups[-2].param_names:
            p = dict(model.named_parameters())[n]
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * p.std())
    moved = drift(model, reference, groups, images, imagenet_head=True)
    assert moved.imagenet_agreement < 0.9
    assert moved.weight_change[groups[-2].name] > 0.2 and moved.cka[groups[-2].name] < 0.99
    assert moved.weight_change[groups[0].name] == 0.0 and moved.cka[groups[0].name] == pytest.approx(1.0)


@pytest.mark.parametrize("strategy", ["frozen", pytest.param("full", marks=pytest.mark.slow)])
def test_runs_record_drift_frozen_stays_put_and_full_moves(tmp_path, strategy):
    cmd = [sys.executable, "-m", "src.train", f"strategy={strategy}", *TINY_OVERRIDES, "trainer.epochs=2",
           "optim.lr=0.01", "trainer.drift_probe=32", f"hydra.run.dir={tmp_path}", "trainer.progress=false"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["drift_probe_images"] == 32 and result["imagenet_agreement"] is None  # random start
    changes, ckas = list(result["weight_change"].values()), list(result["cka"].values())
    assert len(changes) == len(ckas) == result["num_groups"] - 1
    if strategy == "frozen":  # BatchNorm frozen too (frozen_bn=eval): nothing below the head moved
        assert changes == [0.0] * len(changes) and ckas == pytest.approx([1.0] * len(ckas))
    else:
        assert all(c > 0 for c in changes) and min(ckas) < 0.999


def test_drift_off_trains_the_same_model_and_records_none(tiny_config, tmp_path):
    from src.record.io import read_jsonl
    from src.training.run import run

    on = run(tiny_config(trainer={"epochs": 2}), tmp_path / "on")
    off = run(tiny_config(trainer={"epochs": 2, "drift_probe": 0}), tmp_path / "off")
    assert "weight_change" in on and "weight_change" not in off and "imagenet_agreement" not in off
    # the reference copy made for drift draws no random numbers: the same head, the same training
    assert read_jsonl(tmp_path / "on" / "metrics.jsonl")[-1]["train_loss"] == read_jsonl(
        tmp_path / "off" / "metrics.jsonl")[-1]["train_loss"]
    assert on["test_acc"] == off["test_acc"]
