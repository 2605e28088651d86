"""A held-out split whose classes are far apart in size is named once when the data loads, with the
accuracy that always answering its largest class scores: before, an X-ray run whose val is 135
pneumonia / 14 normal logged `val_acc 0.9060` every epoch, and the report ranked it so, for a model that
called every image pneumonia (balanced accuracy 0.5), without a word."""

from __future__ import annotations

import logging

import numpy as np
import torch

from src.config import DataConfig
from src.data.balance import imbalance_warning
from src.data.load import load_dataset
from src.data.splits import DataBundle, Split


def _split(labels: list[int]) -> Split:
    return Split(torch.zeros((len(labels), 3, 4, 4), dtype=torch.uint8), torch.tensor(labels))


def test_a_split_whose_largest_class_is_four_times_its_smallest_is_named_with_the_majority_score():
    train = _split([0, 1] * 4)
    bundle = DataBundle("xray", ["normal", "pneumonia"], train, _split([0] * 2 + [1] * 9), _split([0, 1] * 3), "")
    warning = imbalance_warning(bundle)
    assert warning is not None and warning.startswith("dataset xray: classes far apart in size (val holds 9 "
                                                      "'pneumonia' and 2 'normal' images: always answering "
                                                      "'pneumonia' scores val_acc 0.818)")
    assert "test holds" not in warning and "--metric test_balanced_acc" in warning
    # 3 to 1 is below the threshold; a class absent from a split is no "smallest class" of it
    assert imbalance_warning(DataBundle("d", ["a", "b", "c"], train, _split([0] * 3 + [1]), _split([0, 0, 1, 1]), "")) is None
    assert "test holds 8 'a' and 2 'c'" in imbalance_warning(
        DataBundle("d", ["a", "b", "c"], train, _split([0, 2]), _split([0] * 8 + [2] * 2), ""))


def test_an_imbalanced_npz_warns_once_when_it_loads(tmp_path, caplog):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, (n0, n1) in {"train": (8, 8), "val": (2, 10), "test": (5, 5)}.items():
        arrays[f"{split}_images"] = rng.integers(0, 255, (n0 + n1, 8, 8), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.array([[0]] * n0 + [[1]] * n1, dtype=np.uint8)
    np.savez(tmp_path / "xray.npz", **arrays)
    with caplog.at_level(logging.WARNING, logger="src.data.load"):
        load_dataset(DataConfig(kind="medmnist", root=str(tmp_path / "xray.npz"), image_size=16))
    lines = [r.getMessage() for r in caplog.records if "far apart in size" in r.getMessage()]
    assert len(lines) == 1 and "val_acc 0.833" in lines[0]
