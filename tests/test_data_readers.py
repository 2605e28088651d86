"""Data readers: found by name without an import order, one per source, each resizing to the bit as the
hand-written resize did (the default study's numbers depend on it), and a source of one's own is one
module plus one YAML: this file defines one and trains a tiny run on it through `python -m src.train`'s
own code path."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from src.config import ConfigError, DataConfig, RunConfig
from src.data import registry
from src.data.decode import read_image
from src.data.load import load_dataset
from src.data.pixels import resize_uint8
from src.data.registry import READERS, Reader, check_kind, reader_for, reader_names, register
from src.data.splits import DataBundle, Split
from tests.cli import REPO, env
from tests.conftest import TINY, merge

BUILT_IN = ["digits", "imagefolder", "medmnist", "torchvision"]


def test_every_reader_module_registers_its_own_name():
    assert registry._modules() == BUILT_IN
    for name in BUILT_IN:
        cls = reader_for(name)
        assert cls.name == name and cls.__module__ == f"src.data.readers.{name}"
        assert set(cls.keys) <= {f.name for f in dataclasses.fields(DataConfig)}, (name, cls.keys)


def test_readers_are_found_without_importing_them_first():
    """A fresh process: the names come without importing any reader (nor torch: the config check
    runs them), and a reader is imported by name on its first look-up, whatever was imported before."""
    code = ("import sys; from src.data.registry import reader_names, reader_for\n"
            "names = reader_names()\n"
            "assert 'torch' not in sys.modules and not any(m.startswith('src.data.readers.') for m in sys.modules)\n"
            "assert reader_for('medmnist').name == 'medmnist'\n"
            "print(','.join(names))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ",".join(BUILT_IN)


@pytest.mark.parametrize("kind", ["bogus", "", "Digits", "registry", "_private"])
def test_an_unknown_kind_is_one_line_naming_the_options(kind, tiny_config):
    with pytest.raises(ConfigError) as err:
        tiny_config(dataset={"kind": kind})
    assert str(err.value) == f"dataset.kind={kind!r} is not allowed (options: digits, imagefolder, medmnist, torchvision)"
    with pytest.raises(ConfigError, match=r"^dataset\.kind=.* is not allowed \(options: digits, imagefolder,"):
        load_dataset(DataConfig(kind=kind))  # a DataConfig built in code, never validated


def test_a_second_reader_under_a_taken_name_is_refused(monkeypatch):
    monkeypatch.setattr(registry, "READERS", dict(READERS))

    class Other(Reader):
        name = "digits"

    reader_for("digits")
    with pytest.raises(TypeError, match="'digits' is registered already"):
        register(Other)


# --- resize: torchvision's op, bit-identical to the hand-written one it replaced, on each source's path


def _hand_written(images: torch.Tensor, size: int) -> torch.Tensor:
    """The resize this project used before torchvision's: float, interpolate, round, clamp."""
    x = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8)


def test_digits_resize_is_bit_identical_at_the_default_study_s_96_px():
    """The default study's path: 8x8 digits upscaled to 96 px, and down to 16 (antialiased)."""
    native = load_dataset(DataConfig(kind="digits", image_size=8))  # no resize: the 8x8 pixels as split
    for size in (96, 16):
        resized = load_dataset(DataConfig(kind="digits", image_size=size))
        for split in ("train", "val", "test"):
            want = _hand_written(getattr(native, split).images, size)
            assert torch.equal(getattr(resized, split).images, want), (size, split)


def test_medmnist_resize_is_bit_identical(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.integers(0, 256, (12, 28, 28, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(12) % 3).reshape(12, 1)
    np.savez(tmp_path / "toy.npz", **arrays)
    for size in (64, 20):
        d = load_dataset(DataConfig(kind="medmnist", root=str(tmp_path / "toy.npz"), image_size=size))
        raw = torch.from_numpy(arrays["test_images"]).permute(0, 3, 1, 2)
        assert torch.equal(d.test.images, _hand_written(raw, size)), size


def _local_torchvision(monkeypatch, name, data=None, items=None):
    """A torchvision-style dataset class in torchvision.datasets, as dataset.tv_name finds one."""
    import torchvision.datasets as tvd

    class Local(tvd.VisionDataset):
        classes = ["a", "b"]

        def __init__(self, root, train=True, download=False):
            super().__init__(root)
            self.data, self.targets = (data, [i % 2 for i in range(len(data))]) if data is not None else (None, None)

        def __len__(self):
            return len(items) if items is not None else len(self.data)

        def __getitem__(self, i):
            return items[i]

    monkeypatch.setattr(tvd, name, Local, raising=False)


def test_torchvision_array_and_item_resizes_are_bit_identical(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    colour = rng.integers(0, 256, (20, 30, 26, 3), dtype=np.uint8)  # N x H x W x C, as CIFAR holds them
    _local_torchvision(monkeypatch, "ArraySet", data=colour)
    cfg = DataConfig(kind="torchvision", tv_name="ArraySet", root=str(tmp_path), image_size=40)
    d = load_dataset(cfg)
    assert torch.equal(d.test.images, _hand_written(torch.from_numpy(colour).permute(0, 3, 1, 2), 40))
    # Datasets of image files: each item resized as it is read, from an H x W x C view (channels-last strides).
    pictures = [(Image.fromarray(colour[i]), i % 2) for i in range(20)]
    _local_torchvision(monkeypatch, "ItemSet", items=pictures)
    items = load_dataset(dataclasses.replace(cfg, tv_name="ItemSet"))
    assert torch.equal(items.test.images, d.test.images)
    one = torch.from_numpy(colour[0]).permute(2, 0, 1).unsqueeze(0)
    assert not one.is_contiguous() and torch.equal(resize_uint8(one, 40), _hand_written(one.contiguous(), 40))


def test_torchvision_uint8_resize_is_not_bit_identical_so_it_is_not_used():
    """Why resize_uint8 hands torchvision float pixels: its uint8 path (a native kernel on AVX2 CPUs)
    rounds some pixels the other way. On a CPU without one it converts to float itself, as here."""
    digits = load_dataset(DataConfig(kind="digits", image_size=8)).train.images[:200]
    ours = resize_uint8(digits, 96)
    theirs = TF.resize(digits, [96, 96], antialias=True)
    assert (ours.int() - theirs.int()).abs().max() <= 1
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        assert not torch.equal(ours, theirs)


def test_image_files_keep_their_own_resize_and_crop(tmp_path):
    """The image-folder path stays hand-written (src/data/decode.py says why): the short side to
    `size` with the long side rounded, a floored centre crop. It equals torchvision's resize at those
    explicit sizes, and differs from torchvision's Resize(size) + CenterCrop(size) on a 4:3 photo."""
    rng = np.random.default_rng(2)
    for (w, h), size in [((400, 300), 224), ((300, 400), 224), ((337, 224), 224), ((50, 91), 32)]:
        path = tmp_path / f"{w}x{h}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        pixels, _ = read_image(path, size)
        scale = size / min(w, h)
        new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
        resized = np.asarray(TF.resize(Image.open(path).convert("RGB"), [new_h, new_w]))
        top, left = (new_h - size) // 2, (new_w - size) // 2
        assert np.array_equal(pixels, resized[top : top + size, left : left + size].transpose(2, 0, 1)), (w, h)
    photo = Image.open(tmp_path / "400x300.png").convert("RGB")
    theirs = np.asarray(TF.center_crop(TF.resize(photo, 224), 224)).transpose(2, 0, 1)
    assert TF.resize(photo, 224).size == (298, 224) and not np.array_equal(read_image(tmp_path / "400x300.png", 224)[0],
                                                                            theirs)


# --- a source of one's own: one module (here, this file) and one YAML


class Stripes(Reader):
    """Two classes of 12 x 12 grey images: horizontal or vertical stripes, with noise; seeded."""

    name = "toy_stripes"
    keys = ("split_seed",)

    def read(self, progress: bool = False) -> DataBundle:
        rng = np.random.default_rng(self.cfg.split_seed)

        def split(n: int) -> Split:
            labels = np.arange(n) % 2
            stripes = (np.arange(12) % 4 < 2) * 200
            images = np.where(labels[:, None, None] == 0, stripes[None, :, None], stripes[None, None, :])
            noisy = np.clip(images + rng.integers(0, 40, (n, 12, 12)), 0, 255).astype(np.uint8)
            return Split(torch.from_numpy(noisy).unsqueeze(1), torch.from_numpy(labels))

        return DataBundle("stripes", ["horizontal", "vertical"], split(16), split(8), split(8), "generated")


YAML = """# A toy source: stripes (tests/test_data_readers.py)
kind: toy_stripes
image_size: 32
"""

RUN = ["model.name=test_efficientnet", "model.pretrained=false", "dataset.train_per_class=4", "trainer.epochs=1",
       "trainer.progress=false", "logger.kind=none", "trainer.drift_probe=0"]


@pytest.fixture
def toy(monkeypatch, tmp_path):
    monkeypatch.setitem(READERS, "toy_stripes", Stripes)  # removed again after the test
    register(Stripes)  # what @register on the class does in a module of its own
    conf = tmp_path / "conf" / "dataset"
    conf.mkdir(parents=True)
    (conf / "stripes.yaml").write_text(YAML)
    return tmp_path


def _train(argv, monkeypatch):
    from src import train

    monkeypatch.setattr(sys, "argv", ["src.train", *argv])
    train.cli(argv)


def test_a_toy_reader_defined_in_a_test_trains_end_to_end(toy, monkeypatch):
    out = toy / "run"
    _train(["dataset=stripes", f"hydra.searchpath=[file://{toy / 'conf'}]", f"hydra.run.dir={out}", *RUN], monkeypatch)
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "completed" and result["dataset"] == "stripes"
    assert result["num_classes"] == 2 and result["train_samples"] == 8 and result["test_samples"] == 8
    assert result["image_size"] == 32 and len(result["dataset_id"]) == 16  # its YAML's size; the reader's identity
    assert OmegaConf.load(out / "config.yaml").dataset.kind == "toy_stripes"


def test_a_toy_reader_is_among_the_options_and_a_typo_is_one_line(toy, monkeypatch, capsys):
    assert "toy_stripes" in reader_names()
    check_kind("toy_stripes")
    RunConfig.from_dict(merge(TINY, {"dataset": {"kind": "toy_stripes"}}))
    with pytest.raises(SystemExit) as stop:
        _train(["dataset=stripes", "dataset.kind=toy_stripe", f"hydra.searchpath=[file://{toy / 'conf'}]",
                f"hydra.run.dir={toy / 'bad'}", *RUN], monkeypatch)
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and err == ("error: dataset.kind='toy_stripe' is not allowed "
                                            "(options: digits, imagefolder, medmnist, torchvision, toy_stripes)")
    assert not (toy / "bad").exists()


@pytest.mark.parametrize("override, readers", [
    ("dataset.root={photos}", "imagefolder, medmnist, torchvision; e.g. dataset=imagefolder"),
    ("dataset.tv_name=CIFAR10", "torchvision; e.g. dataset=torchvision"),
    ("dataset.flag=pneumoniamnist", "medmnist; e.g. dataset=medmnist"),
    ("dataset.download=true", "medmnist, torchvision; e.g. dataset=medmnist"),
])
def test_a_data_key_the_source_does_not_read_is_refused_not_ignored(override, readers, tmp_path, monkeypatch, capsys):
    # `dataset.root=DIR` without `dataset=imagefolder` trained on digits, exit 0, DIR in its config.yaml.
    photos = tmp_path / "photos"
    for c in ("a", "b"):
        (photos / c).mkdir(parents=True)
    override = override.format(photos=photos)
    with pytest.raises(SystemExit) as stop:
        _train([override, f"hydra.run.dir={tmp_path / 'run'}", *RUN], monkeypatch)
    key, value = override.split("=")
    shown = "True" if value == "true" else repr(value)
    assert stop.value.code == 2 and capsys.readouterr().err == (
        f"error: {key}={shown} is not read by dataset.kind='digits': the run would train on digits without it "
        f"(sources that read {key.split('.')[1]}: {readers})\n")
    assert not (tmp_path / "run").exists()


def test_a_data_key_at_its_default_or_read_by_the_source_passes():
    registry.check_keys_read(DataConfig(root=None, download=False))  # digits, every key at its default
    registry.check_keys_read(DataConfig(kind="medmnist", root="x.npz", flag="pneumoniamnist", download=True))


def _readme_blocks(section: str, lang: str) -> list[str]:
    """The ```lang blocks of README.md's section `section` (up to the next heading)."""
    import re

    text = (REPO / "README.md").read_text()
    body = re.split(r"\n#{2,3} ", text.split(f"\n### {section}\n", 1)[1], maxsplit=1)[0]
    return re.findall(rf"```{lang}\n(.*?)```", body, flags=re.S)


@pytest.mark.parametrize("section", ["Adding a strategy", "Adding a data source"])
def test_the_readme_recipes_import_what_they_use_and_repeat_no_default(section):
    # Followed as written, the data source's YAML (`root: null`) failed tests/test_config.py's
    # repeated-default check, and neither recipe said where its names come from.
    (code,) = _readme_blocks(section, "python")
    imports = [line for line in code.splitlines() if line.startswith(("from ", "import "))]
    assert imports, "the recipe names its imports"
    exec("\n".join(imports), {})  # each import exists
    used = {"dataclass", "StrategyConfig", "Plan", "Strategy", "register"} if "strategy" in section else \
        {"Reader", "register", "DataBundle", "Split", "held_out", "to_nchw", "to_labels"}
    assert used <= {name.strip() for line in imports for name in line.split(" import ")[1].split(",")}
    if "data" in section:
        (yaml_text,) = _readme_blocks(section, "yaml")
        data = OmegaConf.to_container(OmegaConf.create(yaml_text))
        defaults = DataConfig()
        assert [k for k, v in data.items() if k != "kind" and v == getattr(defaults, k)] == []
