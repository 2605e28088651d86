"""Datasets as in-memory uint8 tensors with fixed, seeded train/val/test splits: `load_dataset`, the one
way in for every source (timm's `create_dataset`).

The fine-tuning questions this tool answers live in the small-data regime, so every split is decoded
and resized once and held in memory (about image_size^2 * 3 bytes per image: 10k images at 224 px is
1.5 GB), or memory-mapped from the decoded-data cache. Batches are cut from those tensors with no
DataLoader workers or per-sample Python, and normalised on the device (src/data/batches.py).

Where things are: each source's reader in src/data/readers/ (found by name: src/data/registry.py);
pixel values and the resize in pixels.py; splits and per-class limits in splits.py; label checks in
labels.py; images that are in the data twice in duplicates.py; image folders in folders.py (listing), decode.py and workers.py (decoding), parts.py
(decoded or cached split folders) and the cache in cache.py.
"""

from __future__ import annotations

import logging
import time

from src.config import DataConfig
from src.data.balance import imbalance_warning
from src.data.duplicates import duplicates_warning
from src.data.labels import check_labels_from
from src.data.pixels import resize_uint8
from src.data.registry import reader_for
from src.data.splits import DataBundle, Split, limit_per_class

log = logging.getLogger(__name__)


def load_dataset(cfg: DataConfig, progress: bool = False) -> DataBundle:
    """Read `cfg.kind`'s source, check the labels, subsample train (`train_per_class`) and resize to
    `cfg.image_size`. `progress`: a bar while image files decode (on a terminal only)."""
    start = time.perf_counter()
    bundle = reader_for(cfg.kind)(cfg).read(progress)
    if cfg.name:
        bundle.name = cfg.name
    check_labels_from(bundle)
    if cfg.train_per_class is not None:
        bundle.train = limit_per_class(bundle.train, cfg.train_per_class, cfg.split_seed)
        check_labels_from(bundle)  # subsampling keeps every class today; this keeps it so
    if warning := duplicates_warning(bundle):  # on the images the run uses, before the resize
        log.warning(warning)
    if warning := imbalance_warning(bundle):
        log.warning(warning)
    for split_name in ("train", "val", "test"):
        split = getattr(bundle, split_name)
        setattr(bundle, split_name, Split(resize_uint8(split.images, cfg.image_size), split.labels))
    bundle.load_s = time.perf_counter() - start
    return bundle
