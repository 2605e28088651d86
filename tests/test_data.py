"""Datasets: splits, subsampling, file formats, errors, and the batches the model sees."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from src.config import ConfigError, DataConfig
from src.data.batches import Batches
from src.data.load import load_dataset
from src.models import Normalization


def _ids(split):
    return {tuple(img.flatten().tolist()) + (int(y),) for img, y in zip(split.images, split.labels)}


def test_digits_splits_are_seeded_stratified_and_disjoint():
    a = load_dataset(DataConfig(kind="digits", image_size=16))
    b = load_dataset(DataConfig(kind="digits", image_size=16))
    assert (len(a.train), len(a.val), len(a.test)) == (1077, 360, 360)
    assert torch.equal(a.test.labels, b.test.labels) and torch.equal(a.train.images, b.train.images)
    assert a.train.images.shape[1:] == (1, 16, 16) and a.train.images.dtype == torch.uint8
    for split in (a.train, a.val, a.test):  # stratified: every class in every split
        assert set(split.labels.tolist()) == set(range(10))
    c = load_dataset(DataConfig(kind="digits", image_size=16, split_seed=1))
    assert not torch.equal(a.test.labels, c.test.labels)


def test_train_per_class_subsamples_train_only():
    d = load_dataset(DataConfig(kind="digits", image_size=16, train_per_class=5))
    assert torch.bincount(d.train.labels).tolist() == [5] * 10
    assert len(d.val) == 360 and len(d.test) == 360


def _npz(path, n=12, classes=3, labels_shape=None, drop=None):
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % classes).reshape(labels_shape or (n, 1)).astype(np.uint8)
    if drop:
        del arrays[drop]
    np.savez(path, **arrays)
    return path


def test_medmnist_npz_official_splits(tmp_path):
    d = load_dataset(DataConfig(kind="medmnist", root=str(_npz(tmp_path / "toy.npz")), image_size=32))
    assert (len(d.train), len(d.val), len(d.test), d.num_classes) == (12, 12, 12, 3)
    assert d.name == "toy" and d.train.images.shape == (12, 1, 32, 32)


def test_medmnist_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="missing array 'val_labels'"):
        load_dataset(DataConfig(kind="medmnist", root=str(_npz(tmp_path / "a.npz", drop="val_labels"))))
    with pytest.raises(ConfigError, match="multi-label"):
        load_dataset(DataConfig(kind="medmnist", root=str(_npz(tmp_path / "b.npz", labels_shape=(6, 2)))))
    with pytest.raises(ConfigError, match="no such .npz file"):
        load_dataset(DataConfig(kind="medmnist", root=str(tmp_path / "missing.npz")))


def _folder(root, splits=("train", "val"), classes=("cat", "dog"), n=6, sizes=((40, 30), (20, 50))):
    for split in splits:
        for ci, cls in enumerate(classes):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                w, h = sizes[i % len(sizes)]
                arr = np.full((h, w, 3), 40 + 100 * ci, dtype=np.uint8)
                Image.fromarray(arr).save(root / split / cls / f"{i}.png")
    return root


def test_imagefolder_with_and_without_val_and_test(tmp_path):
    d = load_dataset(DataConfig(kind="imagefolder", root=str(_folder(tmp_path / "a")), image_size=24))
    assert d.classes == ["cat", "dog"] and d.train.images.shape[1:] == (3, 24, 24)
    # val/ is used as given; test is split off train/ since there is no test/ folder
    assert len(d.val) == 12 and len(d.train) + len(d.test) == 12 and len(d.test) >= 2
    assert "test = stratified" in d.split_note
    d2 = load_dataset(
        DataConfig(kind="imagefolder", root=str(_folder(tmp_path / "b", splits=("train",), n=10)), image_size=24)
    )
    assert len(d2.train) + len(d2.val) + len(d2.test) == 20
    assert "val = stratified" in d2.split_note
    # non-square images are resized on the short side and centre-cropped: the class colour survives
    assert int(d.train.images[d.train.labels == 1].float().mean()) == 140


def test_imagefolder_errors(tmp_path):
    root = _folder(tmp_path / "c")
    (root / "val" / "bird").mkdir()
    with pytest.raises(ConfigError, match="differ from train"):
        load_dataset(DataConfig(kind="imagefolder", root=str(root)))
    (root / "train" / "bird").mkdir()
    with pytest.raises(ConfigError, match="bird: class folder has no images"):
        load_dataset(DataConfig(kind="imagefolder", root=str(root)))
    with pytest.raises(ConfigError, match="nothing'. no such folder"):
        load_dataset(DataConfig(kind="imagefolder", root=str(tmp_path / "nothing")))
    with pytest.raises(ConfigError, match="no class folders"):
        load_dataset(DataConfig(kind="imagefolder", root=str(root / "train" / "bird")))


def test_imagefolder_of_class_folders_without_train(tmp_path):
    """A folder whose sub-folders are the classes (no train/) is the training set; val and test are
    split off it, and it reads the same images as the same classes under train/."""
    root = _folder(tmp_path / "c")
    shutil.rmtree(root / "val")
    flat = DataConfig(kind="imagefolder", root=str(root / "train"), val_fraction=0.25, test_fraction=0.25)
    nested = DataConfig(kind="imagefolder", root=str(root), val_fraction=0.25, test_fraction=0.25)
    a, b = load_dataset(flat), load_dataset(nested)
    assert a.classes == b.classes and len(a.train.labels) + len(a.val.labels) + len(a.test.labels) == \
        len(b.train.labels) + len(b.val.labels) + len(b.test.labels)
    assert torch.equal(torch.as_tensor(a.test.images[:]), torch.as_tensor(b.test.images[:]))


def test_batches_normalise_gray_to_three_channels():
    images = torch.tensor([[[[0, 255]]], [[[255, 0]]], [[[128, 128]]]], dtype=torch.uint8)
    split = type("S", (), {"images": images, "labels": torch.tensor([0, 1, 2])})()
    batches = Batches(split, 2, Normalization((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), torch.device("cpu"))
    xs = list(batches)
    assert len(xs) == len(batches) == 2
    x, y = xs[0]
    assert x.shape == (2, 3, 1, 2) and y.tolist() == [0, 1]
    assert torch.allclose(x[0, :, 0, 0], torch.tensor(-1.0)) and torch.allclose(x[0, :, 0, 1], torch.tensor(1.0))


def test_shuffle_is_seeded_and_augment_keeps_shapes():
    d = load_dataset(DataConfig(kind="digits", image_size=16, train_per_class=3))
    norm = Normalization((0.5,) * 3, (0.5,) * 3)
    cpu = torch.device("cpu")
    order = lambda seed: torch.cat([y for _, y in Batches(d.train, 8, norm, cpu, shuffle=True, seed=seed)])  # noqa: E731
    assert torch.equal(order(1), order(1)) and not torch.equal(order(1), order(2))
    aug = Batches(d.train, 8, norm, cpu, shuffle=False, augment=True, hflip=True, seed=0)
    plain = Batches(d.train, 8, norm, cpu)
    (xa, ya), (xp, yp) = next(iter(aug)), next(iter(plain))
    assert xa.shape == xp.shape and torch.equal(ya, yp) and not torch.equal(xa, xp)


FASHION = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion_mnist"


@pytest.mark.skipif(not (FASHION / "train-images-idx3-ubyte.gz").is_file(), reason="shared Fashion-MNIST not present")
def test_torchvision_dataset_offline_from_a_local_root(tmp_path):
    import gzip
    import shutil

    raw = tmp_path / "FashionMNIST" / "raw"  # where torchvision looks for the official files
    raw.mkdir(parents=True)
    for gz in FASHION.glob("*-ubyte.gz"):
        with gzip.open(gz) as src, open(raw / gz.stem, "wb") as dst:
            shutil.copyfileobj(src, dst)
    d = load_dataset(
        DataConfig(kind="torchvision", tv_name="FashionMNIST", root=str(tmp_path), download=False,
                   image_size=32, train_per_class=10)
    )
    assert d.num_classes == 10 and d.classes[0] == "T-shirt/top"
    assert torch.bincount(d.train.labels).tolist() == [10] * 10
    assert len(d.test) == 10000 and len(d.val) == 12000  # val split off the 60k train, stratified
    assert d.train.images.shape[1:] == (1, 32, 32)


def test_unknown_torchvision_dataset_is_a_config_error():
    with pytest.raises(ConfigError, match="dataset.tv_name='NoSuchSet'"):
        load_dataset(DataConfig(kind="torchvision", tv_name="NoSuchSet"))
