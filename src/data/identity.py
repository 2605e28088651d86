"""What a run's data is, as a short hash recorded in result.json (`dataset_id`), so that reports pool
and compare runs by the data they measured, not by a name: two image folders both called `photos`
are two datasets, and one dataset given two display names is one.

The hash covers what decides which images and labels land in train, val and test, and nothing about
how they are decoded or resized (image size, augmentation and the training subset are settings of
the run, in its configuration):

- an image folder: its resolved path and every file under it (relative path and size), like the
  decoded-data cache's key (src/data/cache.py) but without modification times (touching a file does
  not change what it holds) or decode settings. Which of those files are images is the suffix list's
  (src.data.folders.IMAGE_SUFFIXES): a folder holding a file that only a later list reads (a .jfif)
  also hashes the suffixes it reads, so the two readings are two datasets, while every other folder
  keeps the id it had before the list grew (recorded studies still pool with new runs). A copy of
  the folder elsewhere is another dataset;
- a .npz file: a hash of its bytes, wherever it lies;
- scikit-learn's digits, a downloaded MedMNIST flag, a torchvision dataset: the source's name;
- in every case the settings that split off val and test where the source has no split of its own
  (`val_fraction`, `test_fraction`, `split_seed`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from src.config import DataConfig
from src.data.folders import FIRST_SUFFIXES, IMAGE_SUFFIXES
from src.data.registry import reader_for

ID_LENGTH = 16  # hex digits: 64 bits, no collision in any study's handful of datasets
VERSION = 1  # bump when what the hash covers changes: older ids then stop matching newer ones
_CHUNK = 1 << 20


def dataset_identity(cfg: DataConfig) -> str:
    """The dataset's identity (`ID_LENGTH` hex digits), for data that `load_dataset(cfg)` has read
    already: its files exist. OSError if one cannot be listed or read. What is hashed is the reader's
    to say (`Reader.identify`, src/data/registry.py): its source's name, or its files."""
    head = {"version": VERSION, "kind": cfg.kind, "val_fraction": cfg.val_fraction,
            "test_fraction": cfg.test_fraction, "split_seed": cfg.split_seed}
    digest = hashlib.sha256()
    reader_for(cfg.kind)(cfg).identify(digest, head)
    return digest.hexdigest()[:ID_LENGTH]


def dataset_identity_or_none(cfg: DataConfig) -> str | None:
    """`dataset_identity`, or None where the data's files cannot be listed or read: the loader then
    says what is wrong in its own words, and whoever checks data against it says it could not."""
    try:
        return dataset_identity(cfg)
    except OSError:
        return None


def ood_identity(path: Path, per_class: int | None, split_seed: int) -> str:
    """An OOD set's identity (`ID_LENGTH` hex digits): its folder's listing or its .npz's bytes, as a
    dataset's (`hash_folder`, `hash_file`), and the draw that picks its images (`ood_per_class` and, for
    a draw, `split_seed`). Reports key an OOD set's accuracies by its name *and* this: two sets that
    share a folder name (another copy of `art_painting`, another `ood_per_class`) are other images,
    and their accuracies averaged over seeds or paired across strategies would compare unlike things."""
    head = {"version": VERSION, "ood_per_class": per_class, "split_seed": split_seed if per_class is not None else None}
    digest = hashlib.sha256()
    if path.is_dir():
        hash_folder(digest, head, path, IMAGE_SUFFIXES - FIRST_SUFFIXES)
    else:
        hash_file(digest, head, path)
    return digest.hexdigest()[:ID_LENGTH]


def short_id(identity: str | None) -> str:
    """An identity as one-line messages and the report's tables show it (its first 6 hex digits)."""
    return identity[:6] if identity else "unknown"


def hash_folder(digest, head: dict, root: Path, newer_suffixes: frozenset[str] = frozenset()) -> None:
    """A folder as a dataset: its resolved path, then every file under it (relative path and size).
    `newer_suffixes`: suffixes read as data since the id was first defined; the ones present are
    hashed too (see the module's docstring)."""
    root = root.resolve()
    files = _files(root)
    present = sorted({Path(path).suffix.lower() for path, _ in files} & newer_suffixes)
    digest.update(json.dumps(head | {"root": str(root)} | ({"newer_suffixes": present} if present else {}),
                             sort_keys=True).encode())
    for path, size in files:
        digest.update(f"{path}\0{size}\n".encode())


def hash_file(digest, head: dict, path: Path) -> None:
    """A file as a dataset, wherever it lies: its bytes."""
    digest.update(json.dumps(head, sort_keys=True).encode())
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)


def _files(root: Path) -> list[tuple[str, int]]:
    """Every file under `root`, as (relative POSIX path, size), sorted. Links are followed, to files
    and into folders (class folders are often links to the data), each real folder once, so that a
    link back up the tree cannot loop."""
    out = []
    seen = {os.path.realpath(root)}
    for folder, dirs, files in os.walk(root, followlinks=True):
        keep = []
        for name in sorted(dirs):
            real = os.path.realpath(os.path.join(folder, name))
            if real not in seen:
                seen.add(real)
                keep.append(name)
        dirs[:] = keep
        for name in files:
            path = Path(folder, name)
            try:
                size = path.stat().st_size
            except FileNotFoundError:  # a dangling link: no data behind it
                continue
            out.append((path.relative_to(root).as_posix(), size))
    return sorted(out)
