"""Out-of-distribution test sets (`dataset.ood`): image folders or .npz files with the training classes.

Each set is decoded like the training data (the same folder and .npz readers of `src.data.load`, at the
run's image size) and its labels are mapped onto the training classes: by folder name for an image
folder, so that a folder listing the classes in another order gets the same labels; by the optional
`classes` array for a .npz. A set may hold a subset of the training classes (accuracy is then over the
classes it has), never a class training does not have. The run evaluates each set once, on the model
that validation selected (src/training/run.py); no set takes part in selection.

A .npz holds `images` (N x H x W or N x H x W x C, any pixel type `to_uint8` takes) and `labels`
(N class indices into the training classes), or a MedMNIST file's `test_images` / `test_labels`; an
optional `classes` array (strings) names its labels, and those names are then matched to training's.
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from src.config import ConfigError, DataConfig
from src.data.load import (
    Split, _one_line, _read_npz, _to_labels, _to_nchw, class_folders, limit_per_class, part_dir, read_parts,
    resize_uint8,
)

log = logging.getLogger(__name__)

# The arrays a .npz OOD set may hold, in order of preference: (images, labels).
NPZ_LAYOUTS = (("images", "labels"), ("test_images", "test_labels"))


@dataclass
class OodSet:
    name: str  # the folder's name or the file's stem: the key in result.json's `ood`
    split: Split  # labels already numbered as the training classes are


def ood_names(cfg: DataConfig) -> list[str]:
    """The name of each set (folder name or file stem); ConfigError naming both entries when two share one."""
    names: dict[str, int] = {}
    for i, path in enumerate(cfg.ood):
        name = Path(path).stem if Path(path).is_file() else Path(path).name
        if name in names:
            raise ConfigError(f"dataset.ood[{i}]={path!r}: its name {name!r} is already that of "
                              f"dataset.ood[{names[name]}]={cfg.ood[names[name]]!r} (result.json keys OOD sets by name)")
        names[name] = i
    return list(names)


def known_classes(cfg: DataConfig) -> list[str] | None:
    """The training classes when they are known without loading the data (digits; an image folder's
    train/ class folders, or its own when it has no train/), else None: the sets are then checked once
    the data is loaded."""
    if cfg.kind == "digits":
        return [str(c) for c in range(10)]
    if cfg.kind == "imagefolder" and cfg.root and Path(cfg.root).is_dir():
        train = part_dir(Path(cfg.root), "train")
        return sorted(d.name for d in train.iterdir() if d.is_dir())  # none yet: the load says so
    return None


def _check_names(names: list[str], classes: list[str], where: str) -> None:
    """Every class of the set is a training class; ConfigError listing the ones that are not."""
    extra = [n for n in names if n not in classes]
    if extra:
        missing = [c for c in classes if c not in names]
        raise ConfigError(f"{where}: classes {extra} are not training classes (training has {classes}"
                          + (f"; this set lacks {missing}" if missing else "") + ")")


def check_ood(cfg: DataConfig, classes: list[str] | None = None) -> None:
    """What can be checked before anything trains: the names are unique, each path is a folder of
    class folders or a .npz, and a folder's classes are training classes (when `classes`, or
    `known_classes`, gives them). ConfigError (one line) naming `dataset.ood[i]`."""
    ood_names(cfg)
    classes = classes if classes is not None else known_classes(cfg)
    for i, path in enumerate(cfg.ood):
        where, p = f"dataset.ood[{i}]={path!r}", Path(path)
        if p.is_dir():
            found = class_folders(p, where)
            if classes is not None:
                _check_names(found, classes, where)
        elif p.suffix.lower() != ".npz":
            raise ConfigError(f"{where}: expected a folder of class folders or a .npz file")
        elif not p.is_file():
            raise ConfigError(f"{where}: no such file")


def _npz_set(path: Path, classes: list[str], where: str) -> Split:
    try:
        with zipfile.ZipFile(path) as archive:
            members = {n.removesuffix(".npy") for n in archive.namelist()}
    except (OSError, zipfile.BadZipFile) as err:
        raise ConfigError(f"{where}: not a readable .npz archive ({_one_line(err)})") from None
    layout = next((pair for pair in NPZ_LAYOUTS if set(pair) <= members), None)
    if layout is None:
        raise ConfigError(f"{where}: expected arrays 'images' and 'labels' (or a MedMNIST file's "
                          f"'test_images' and 'test_labels'); it has {sorted(members)}")
    arrays = _read_npz(path, [*layout, *(["classes"] if "classes" in members else [])], where)
    images, labels = _to_nchw(arrays[layout[0]], f"{where} array '{layout[0]}'"), _to_labels(arrays[layout[1]], where)
    if len(images) != len(labels) or not len(labels):
        raise ConfigError(f"{where}: {len(images)} images and {len(labels)} labels; expected as many, at least one")
    if "classes" in arrays:  # its own names for its labels: matched to training's by name
        names = [str(n) for n in arrays["classes"].tolist()]
        _check_names(names, classes, where)
        if int(labels.min()) < 0 or int(labels.max()) >= len(names):
            raise ConfigError(f"{where}: labels outside 0..{len(names) - 1} (its {len(names)} class names)")
        labels = torch.tensor([classes.index(n) for n in names], dtype=torch.int64)[labels]
    elif int(labels.min()) < 0 or int(labels.max()) >= len(classes):
        raise ConfigError(f"{where}: labels {int(labels.min())}..{int(labels.max())} are outside the "
                          f"{len(classes)} training classes 0..{len(classes) - 1}")
    return Split(images, labels)


def load_ood(cfg: DataConfig, classes: list[str]) -> list[OodSet]:
    """Every set of `cfg.ood`, decoded at `cfg.image_size` with labels numbered as `classes` (the
    training classes), at most `cfg.ood_per_class` images per class. ConfigError (one line) naming
    `dataset.ood[i]` on any mismatch."""
    check_ood(cfg, classes)
    out = []
    for i, (name, path) in enumerate(zip(ood_names(cfg), cfg.ood)):
        where, p = f"dataset.ood[{i}]={path!r}", Path(path)
        if p.is_dir():
            # All of its class folders, numbered in their own sorted order, then renumbered by name;
            # decoded like the training folder (the decoded-data cache, parallel decode).
            parts, found, skipped, _ = read_parts(cfg, p, progress=False)
            split = parts["train"]
            if skipped:
                log.warning("%s: skipped %d unreadable image files (dataset.bad_images=skip), e.g. %s",
                            where, len(skipped), skipped[0])
            split = Split(split.images, torch.tensor([classes.index(c) for c in found], dtype=torch.int64)[split.labels])
        else:
            split = _npz_set(p, classes, where)
        if cfg.ood_per_class is not None:
            split = limit_per_class(split, cfg.ood_per_class, cfg.split_seed)
        out.append(OodSet(name, Split(resize_uint8(split.images, cfg.image_size), split.labels)))
    return out
