"""Out-of-distribution test sets (`dataset.ood`): image folders or .npz files with the training classes.

Each set is decoded like the training data (the same folder decoding, `src.data.parts`, and .npz
reading, `src.data.npz`, at the run's image size) and its labels are mapped onto the training classes: by folder name for an image
folder, so that a folder listing the classes in another order gets the same labels; by the optional
`classes` array for a .npz. Names match exactly, case included, after Unicode NFC normalisation (a folder
copied from macOS spells `é` as two code points). A set may hold a subset of the training classes
(accuracy is then over the classes it has), never a class training does not have, and never two names
for one training class (folders `café` in both spellings, a `classes` array that repeats a name): that
would pool two labels into one without a word. The run evaluates each set once, on the model
that validation selected (src/training/run.py); no set takes part in selection.

A .npz holds `images` (N x H x W or N x H x W x C, any pixel type `to_uint8` takes) and `labels`
(N class indices into the training classes), or a MedMNIST file's `test_images` / `test_labels`; an
optional `classes` array (strings) names its labels, and those names are then matched to training's.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from src.config import ConfigError, DataConfig
from src.data.folders import class_folders
from src.data.identity import ood_identity
from src.data.labels import match_names, to_labels
from src.data.npz import read_npz
from src.data.parts import read_parts, warn_skipped
from src.data.paths import absolute, one_line
from src.data.pixels import resize_uint8, to_nchw
from src.data.registry import reader_for
from src.data.splits import Split, limit_per_class

# The arrays a .npz OOD set may hold, in order of preference: (images, labels).
NPZ_LAYOUTS = (("images", "labels"), ("test_images", "test_labels"))


@dataclass
class OodSet:
    name: str  # the folder's name or the file's stem: the key in result.json's `ood`
    split: Split  # labels already numbered as the training classes are
    skipped: list[str] = field(default_factory=list)  # unreadable files left out (dataset.bad_images=skip)
    identity: str | None = None  # which images these are (src.data.identity.ood_identity): result.json's `id`


def ood_names(cfg: DataConfig) -> list[str]:
    """The name of each set (folder name or file stem); ConfigError naming both entries when two share one."""
    names: dict[str, int] = {}
    for i, path in enumerate(cfg.ood):
        whole = absolute(path)
        name = whole.stem if whole.is_file() else whole.name
        if name in names:
            raise ConfigError(f"dataset.ood[{i}]={path!r}: its name {name!r} is already that of "
                              f"dataset.ood[{names[name]}]={cfg.ood[names[name]]!r} (result.json keys OOD sets by name)")
        names[name] = i
    return list(names)


def known_classes(cfg: DataConfig) -> list[str] | None:
    """The training classes when they are known without loading the data (the reader's
    `known_classes`: digits; an image folder's train/ class folders, or its own when it has no
    train/), else None: the sets are then checked once the data is loaded."""
    return reader_for(cfg.kind)(cfg).known_classes()


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
                match_names(found, classes, where)
        elif p.suffix.lower() != ".npz":
            raise ConfigError(f"{where}: expected a folder of class folders or a .npz file")
        elif not p.is_file():
            raise ConfigError(f"{where}: no such file")


def _npz_set(path: Path, classes: list[str], where: str) -> Split:
    try:
        with zipfile.ZipFile(path) as archive:
            members = {n.removesuffix(".npy") for n in archive.namelist()}
    except (OSError, zipfile.BadZipFile) as err:
        raise ConfigError(f"{where}: not a readable .npz archive ({one_line(err)})") from None
    layout = next((pair for pair in NPZ_LAYOUTS if set(pair) <= members), None)
    if layout is None:
        raise ConfigError(f"{where}: expected arrays 'images' and 'labels' (or a MedMNIST file's "
                          f"'test_images' and 'test_labels'); it has {sorted(members)}")
    arrays = read_npz(path, [*layout, *(["classes"] if "classes" in members else [])], where)
    images = to_nchw(arrays[layout[0]], f"{where} array '{layout[0]}'")
    labels = to_labels(arrays[layout[1]], f"{where} array '{layout[1]}'")
    if len(images) != len(labels) or not len(labels):
        raise ConfigError(f"{where}: {len(images)} images and {len(labels)} labels; expected as many, at least one")
    if "classes" in arrays:  # its own names for its labels: matched to training's by name
        names = _class_list(arrays["classes"], f"{where} array 'classes'")
        mapping = match_names(names, classes, where)
        if int(labels.min()) < 0 or int(labels.max()) >= len(names):
            raise ConfigError(f"{where}: labels outside 0..{len(names) - 1} (its {len(names)} class names)")
        labels = torch.tensor(mapping, dtype=torch.int64)[labels]
    elif int(labels.min()) < 0 or int(labels.max()) >= len(classes):
        raise ConfigError(f"{where}: labels {int(labels.min())}..{int(labels.max())} are outside the "
                          f"{len(classes)} training classes 0..{len(classes) - 1}")
    return Split(images, labels)


def _class_list(array, where: str) -> list[str]:
    """A .npz's class names: a 1-d array of strings (bytes as UTF-8) or of whole numbers. A 0-d
    string would otherwise be read one character per class."""
    if array.ndim != 1:
        raise ConfigError(f"{where}: class names of shape {array.shape}; expected a list (a 1-d array)")
    if array.dtype.kind == "S":
        try:
            return [n.decode("utf-8") for n in array.tolist()]
        except UnicodeDecodeError:
            raise ConfigError(f"{where}: class names that are not UTF-8 text") from None
    if array.dtype.kind in "Uiu":
        return [str(n) for n in array.tolist()]
    raise ConfigError(f"{where}: class names of type {array.dtype}; expected strings")


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
            read = read_parts(cfg, p, progress=False)
            split, skipped = read.splits["train"], read.skipped
            warn_skipped(where, skipped)
            mapping = torch.tensor(match_names(read.classes, classes, where), dtype=torch.int64)
            split = Split(split.images, mapping[split.labels])
        else:
            split, skipped = _npz_set(p, classes, where), []
        if cfg.ood_per_class is not None:
            split = limit_per_class(split, cfg.ood_per_class, cfg.split_seed)
        identity = ood_identity(absolute(path), cfg.ood_per_class, cfg.split_seed)
        out.append(OodSet(name, Split(resize_uint8(split.images, cfg.image_size), split.labels), skipped, identity))
    return out
