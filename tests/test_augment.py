"""Augmentation presets (src/data/augment.py): shapes and ranges, per-image randomness, seeding, the
old `augment: true` unchanged, the config and record, the feature cache kept off."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from src.config import ConfigError, DataConfig, RunConfig
from src.data.augment import PRESETS, augment_params, crop_boxes, preset
from src.data.batches import Batches
from src.data.splits import Split
from src.models import Normalization
from src.record.schema import RunRecord
from src.reporting.configs import group_configs
from src.reporting.runs import load_runs


def _batch(n: int = 6, c: int = 3, size: int = 24) -> torch.Tensor:
    # smooth random images: a crop of noise would look like noise, and differ by chance only
    low = torch.rand(n, c, 4, 4, generator=torch.Generator().manual_seed(1)) * 255
    return F.interpolate(low, size=(size, size), mode="bilinear").round().to(torch.uint8)


def _apply(name: str, x: torch.Tensor, seed: int, hflip: bool = False) -> torch.Tensor:
    return preset(name).apply(x, torch.Generator().manual_seed(seed), hflip)


@pytest.mark.parametrize("name", list(PRESETS))
@pytest.mark.parametrize("channels", [1, 3])
def test_each_preset_keeps_shape_and_range_and_is_seeded(name, channels):
    x = _batch(c=channels)
    out = _apply(name, x, seed=0)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 255
    assert torch.equal(out, _apply(name, x, seed=0))  # the same seed, the same batch
    if name == "none":
        assert torch.equal(out, x.float())
    else:
        assert not torch.equal(out, x.float())
        assert not torch.equal(out, _apply(name, x, seed=1))


def test_standard_draws_a_crop_and_a_flip_per_image():
    boxes = crop_boxes(64, 24, 24, torch.Generator().manual_seed(0))
    sides = boxes[:, 2:] - boxes[:, :2]
    assert len({tuple(b) for b in boxes.tolist()}) > 32  # not one box for the whole batch
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 24).all() and (boxes[:, 3] <= 24).all()
    area = sides.prod(dim=1) / 24**2
    assert area.min() >= 0.2 and area.max() <= 1.0  # CROP_SCALE (0.25, 1), up to pixel rounding
    # the same image repeated comes out different in one batch
    x = _batch(n=1).expand(8, -1, -1, -1).contiguous()
    out = _apply("standard", x, seed=0)
    assert len({out[i].sum().item() for i in range(8)}) > 4


def test_randaugment_applies_different_operations_within_a_batch():
    x = _batch(n=1).expand(16, -1, -1, -1).contiguous()
    from src.data.augment import randaugment

    out = randaugment(x, torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert len({out[i].float().sum().item() for i in range(16)}) > 8


def _old_shift(x: torch.Tensor, generator: torch.Generator, hflip: bool) -> torch.Tensor:
    # Batches._augment as it was before presets (commit a1a0903), verbatim: `augment: true` must not change.
    n, _, h, w = x.shape
    pad = max(1, h // 8)
    padded = F.pad(x.float(), (pad, pad, pad, pad), mode="replicate")
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, :, None]
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, :]
    out = padded[torch.arange(n, device=x.device)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
    if hflip:
        flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    return out


@pytest.mark.parametrize("hflip", [False, True])
def test_shift_is_the_old_augment_true_draw_for_draw(hflip):
    x = _batch(n=8)
    split = Split(x, torch.arange(8))
    norm = Normalization((0.0,) * 3, (1 / 255,) * 3)  # x * 1 + 0: the batch as augmented
    new = Batches(split, 4, norm, torch.device("cpu"), shuffle=True, seed=3, augment=True, hflip=hflip, passes=2)
    old_gen = torch.Generator().manual_seed(3)
    for (xb, yb), idx in zip(new, _old_order(8, 4, old_gen, hflip, x), strict=True):
        assert torch.equal(yb, idx[1]) and torch.equal(xb, idx[0])


def _old_order(n: int, batch: int, generator: torch.Generator, hflip: bool, x: torch.Tensor):
    from src.data.batches import batch_indices

    for idx in batch_indices(n, batch, True, generator, 2, torch.device("cpu")):
        yield _old_shift(x[idx], generator, hflip), idx


def test_config_takes_presets_and_the_old_booleans():
    assert RunConfig.from_dict({"dataset": {"augment": "standard"}}).dataset.augment == "standard"
    assert RunConfig.from_dict({"dataset": {"augment": True}}).dataset.augment == "shift"
    assert RunConfig.from_dict({"dataset": {"augment": False}}).dataset.augment == "none"
    assert DataConfig(augment=True).augment == "shift"  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^dataset\.augment='crop' is not allowed \(expected 'none' \|") as err:
        RunConfig.from_dict({"dataset": {"augment": "crop"}})
    assert "\n" not in str(err.value)


def test_hydra_override_of_the_old_spelling():
    from src.gate import compose_train, to_run_config

    # Hydra reads `true` as a boolean, and the schema's str field makes it "True"
    assert to_run_config(compose_train(["dataset.augment=true"])).dataset.augment == "shift"


def test_params_say_what_each_preset_does():
    assert augment_params("none", False) == {"preset": "none"}
    assert augment_params(True, True)["hflip_p"] == 0.5 and augment_params("shift", False)["hflip_p"] == 0.0
    std = augment_params("standard", False)
    assert std["crop_scale"] == [0.25, 1.0] and std["hflip_p"] == 0.5
    assert augment_params("randaugment", False)["randaugment"] | {} == {
        "num_ops": 2, "magnitude": 9, "num_magnitude_bins": 31, "interpolation": "nearest", "fill": 0}
    json.dumps(augment_params("randaugment", True))  # it goes into result.json


def test_old_records_load_and_group_by_augment(tmp_path):
    def write(name: str, augment: object, in_result: bool) -> None:
        d = tmp_path / name
        d.mkdir()
        result = {"schema_version": 2, "strategy": "full", "seed": int(name[-1]), "status": "completed", "val_acc": 0.5}
        if in_result:
            result["augment"] = augment
        (d / "result.json").write_text(json.dumps(result))
        (d / "config.yaml").write_text(f"dataset:\n  augment: {json.dumps(augment)}\n")

    write("plain0", False, False)  # written before presets: config.yaml only
    write("plain1", "none", True)
    write("shifted0", True, False)
    write("shifted1", True, True)  # a boolean in result.json itself
    assert RunRecord.from_json({"augment": True}).augment == "shift"
    configs = group_configs(load_runs([tmp_path]))
    by_augment = {dict(c.key)["augment"]: sorted(r.dir.name for r in c.runs) for c in configs}
    assert by_augment == {"none": ["plain0", "plain1"], "shift": ["shifted0", "shifted1"]}
    assert sorted(c.label for c in configs) == ["full (augment=none)", "full (augment=shift)"]


def test_augmented_run_records_its_preset_and_keeps_the_feature_cache_off(tiny_config, tmp_path):
    from src.training.run import run

    result = run(tiny_config(strategy={"name": "frozen"}, dataset={"augment": "standard"},
                             trainer={"epochs": 1, "count_flops": False, "drift_probe": 0}),
                 tmp_path)
    assert result["feature_cache"] is False and result["feature_cache_blocker"].startswith("augmentation (standard)")
    written = json.loads((tmp_path / "result.json").read_text())
    assert written["augment"] == "standard" and written["augment_params"]["crop_scale"] == [0.25, 1.0]
    assert written["status"] == "completed"


@pytest.mark.parametrize("augment", ["shift", "randaugment", True])
def test_cache_blocker_names_any_augmentation(augment):
    from src.measurement.feature_cache import cache_blocker

    assert cache_blocker(torch.nn.Identity(), [], None, augment).startswith("augmentation")  # type: ignore[arg-type]
