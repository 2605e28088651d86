"""Images that are in the data twice, pixel for pixel: a held-out image that is a training image, and
one training image under two labels. Counted in one warning when the data loads (real sources have
them: PneumoniaMNIST's val split holds 3 training images); never silently."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from src.config import DataConfig
from src.data.duplicates import duplicates_warning
from src.data.load import load_dataset
from src.data.splits import DataBundle, Split


def _split(values: list[int], labels: list[int]) -> Split:
    images = torch.stack([torch.full((1, 4, 4), v, dtype=torch.uint8) for v in values])
    return Split(images, torch.tensor(labels))


def test_held_out_images_that_are_training_images_and_images_of_two_labels_are_counted():
    train = _split([1, 2, 3, 3, 4], [0, 0, 1, 0, 1])  # 3 is class 1 and class 0
    bundle = DataBundle("d", ["a", "b"], train, _split([2, 9, 4], [0, 0, 1]), _split([5, 6], [0, 1]), "")
    assert duplicates_warning(bundle) == (
        "dataset d: 2 of the 3 val images are training images, pixel for pixel (their accuracy counts what the "
        "model saw in training); 1 training image is also a training image of another class (one image, two labels)")
    # the same image twice in one class, and held-out images of their own: nothing to say
    clean = DataBundle("d", ["a", "b"], _split([1, 1, 2], [0, 0, 1]), _split([7], [0]), _split([8], [1]), "")
    assert duplicates_warning(clean) is None


def test_an_image_folder_whose_test_holds_a_copy_of_a_training_photo_warns_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(root / split / cls / f"{i}.png")
    shutil.copy(root / "train" / "cat" / "0.png", root / "test" / "cat" / "copy.png")  # the same photo, twice
    (root / "train" / "dog" / "link.png").symlink_to(root / "train" / "cat" / "1.png")  # one photo, two classes
    with caplog.at_level(logging.WARNING, logger="src.data.load"):
        bundle = load_dataset(DataConfig(kind="imagefolder", root=str(root), image_size=16, num_workers=0))
    said = [r.getMessage() for r in caplog.records if r.name == "src.data.load"]
    assert said == ["dataset photos: 1 of the 5 test images is a training image, pixel for pixel (their accuracy "
                    "counts what the model saw in training); 1 training image is also a training image of another "
                    "class (one image, two labels)"], said
    assert len(bundle.test) == 5  # counted, not removed: the data is the user's


def test_a_mapped_split_is_read_a_few_megabytes_at_a_time(tmp_path):
    """A split bigger than memory is read from the mapped cache; the check must not hold a large
    part of it at once (1,024 images of 224 x 224 were 154 MB on top of the run's batch)."""
    from src.data import duplicates
    from src.data.mapped import MappedImages

    n, shape = 300, (3, 224, 224)
    array = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.uint8, shape=(n, *shape))
    array[:] = np.arange(n, dtype=np.uint8)[:, None, None, None]
    reads: list[int] = []

    class Counted(MappedImages):
        def __getitem__(self, idx):
            out = super().__getitem__(idx)
            reads.append(out.numel())
            return out

    split = Split(Counted(array), torch.arange(n) % 2)
    assert len(duplicates._digests(split)) == n
    assert sum(reads) == array.size and max(reads) <= duplicates._CHUNK_BYTES  # every pixel, a chunk at a time
    assert len(reads) > 1
