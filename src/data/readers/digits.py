"""scikit-learn's 1,797 handwritten digits (8 x 8, 10 classes), bundled with scikit-learn: offline.
Test and val are seeded, stratified splits (`dataset.test_fraction`, `dataset.val_fraction`)."""

from __future__ import annotations

import numpy as np
import torch

from src.data.registry import Reader, register
from src.data.splits import DataBundle, Split, split_off


@register
class Digits(Reader):
    name = "digits"

    def read(self, progress: bool = False) -> DataBundle:
        from sklearn.datasets import load_digits

        cfg = self.cfg
        digits = load_digits()
        # 8x8 images with values 0..16; scale to the 0..255 range the pretrained normalisation expects.
        images = torch.from_numpy((digits.images * (255.0 / 16.0)).round().astype(np.uint8)).unsqueeze(1)
        full = Split(images, torch.from_numpy(digits.target.astype(np.int64)))
        classes = self.known_classes()
        where = {"dataset": cfg.name or "digits", "classes": classes}
        rest, test = split_off(full, cfg.test_fraction, cfg.split_seed, **where, source="digits", held="test",
                               option="dataset.test_fraction")
        # val's share of what test left, so that val is val_fraction of all the digits
        train, val = split_off(rest, cfg.val_fraction / (1 - cfg.test_fraction), cfg.split_seed, **where,
                               source="train", held="val", option="dataset.val_fraction")
        note = f"stratified split seed={cfg.split_seed}: test {cfg.test_fraction}, val {cfg.val_fraction}"
        return DataBundle("digits", classes, train, val, test, note)

    def known_classes(self) -> list[str]:
        return [str(c) for c in range(10)]
