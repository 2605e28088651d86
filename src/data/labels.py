"""Labels: one whole-number class per image, read from any source, and the checks that refuse labels
which would make a valid-looking but meaningless result (one class, a class only val or test has, a
gap in the numbering), and class names matched by name (`match_names`: OOD sets, split folders). Every
message names the dataset, split and labels (with class names where the source has them)."""

from __future__ import annotations

import unicodedata
from typing import TYPE_CHECKING

import numpy as np
import torch

from src.config import ConfigError
from src.data.paths import shown

if TYPE_CHECKING:
    from src.data.splits import DataBundle

INT64_MAX = 2**63 - 1


def to_labels(array, where: str) -> torch.Tensor:
    """One whole-number label per image as int64; a float label such as 0.5 would otherwise be
    truncated into another class without a word, and a uint64 or float label past int64's range
    would wrap around into another (negative) number."""
    labels = np.asarray(array)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim == 0:
        raise ConfigError(f"{where}: a single value (a 0-d array), not one label per image")
    if labels.ndim != 1:
        raise ConfigError(f"{where}: labels of shape {labels.shape}; expected one label per image")
    if labels.dtype.kind == "f":
        if not np.isfinite(labels).all() or (labels != np.round(labels)).any():
            raise ConfigError(f"{where}: labels must be whole numbers (found non-integer or non-finite values)")
    elif labels.dtype.kind not in "iub":
        raise ConfigError(f"{where}: labels of type {labels.dtype}; expected integers")
    if labels.size and labels.dtype.kind in "uf":
        lo, hi = labels.min(), labels.max()
        # int() of a uint64 is exact; 2.0**63 is exact as a float.
        if int(hi) > INT64_MAX if labels.dtype.kind == "u" else max(-float(lo), float(hi)) >= 2.0**63:
            worst = str(int(hi)) if labels.dtype.kind == "u" else f"{float(hi if hi >= -lo else lo):g}"
            raise ConfigError(f"{where}: label {worst} does not fit a 64-bit signed integer "
                              "(labels number the classes 0..K-1)")
    return torch.from_numpy(labels.astype(np.int64))


def nfc(name: str) -> str:
    """A class name as it is compared: Unicode NFC (a folder copied from macOS spells `é` as two code
    points, `e` and a combining accent)."""
    return unicodedata.normalize("NFC", name)


def match_names(names: list[str], classes: list[str], where: str) -> list[int]:
    """The training label of each of the set's class names. ConfigError (one line, naming `where`)
    when a name is not a training class, when two of the set's names are one class (a repeat, or two
    spellings of it), or when a name is two training classes (training's own list repeats it)."""
    train: dict[str, list[int]] = {}
    for label, cls in enumerate(classes):
        train.setdefault(nfc(cls), []).append(label)
    extra = [n for n in names if nfc(n) not in train]
    if extra:
        missing = [c for c in classes if nfc(c) not in {nfc(n) for n in names}]
        folded = {c.casefold(): c for c in classes}
        near = [f"{n!r} ~ {folded[n.casefold()]!r}" for n in extra if n.casefold() in folded]
        raise ConfigError(f"{where}: classes {extra} are not training classes (training has {classes}"
                          + (f"; this set lacks {missing}" if missing else "")
                          + (f"; names match exactly, case included: {', '.join(near)}" if near else "") + ")")
    seen: dict[str, list[str]] = {}
    for n in names:
        seen.setdefault(nfc(n), []).append(n)
    twice = [spellings for spellings in seen.values() if len(spellings) > 1]
    if twice:
        raise ConfigError(f"{where}: {' and '.join(repr(n) for n in twice[0])} name one training class "
                          f"({classes[train[nfc(twice[0][0])][0]]!r}); each class may appear once, or its images "
                          "would be pooled under one label")
    ambiguous = [n for n in names if len(train[nfc(n)]) > 1]
    if ambiguous:
        labels = train[nfc(ambiguous[0])]
        raise ConfigError(f"{where}: class {ambiguous[0]!r} is training's labels {labels} (its class list names it "
                          f"{len(labels)} times), so the set's images of it have no one label")
    return [train[nfc(n)][0] for n in names]


def label_name(classes: list[str], label: int) -> str:
    """A label as the user knows it: `2`, or `2 ('bird')` when the class has a name (a folder)."""
    if 0 <= label < len(classes) and classes[label] != str(label):
        return f"{label} ({classes[label]!r})"
    return str(label)


def label_list(classes: list[str], labels) -> str:
    """Labels sorted and named, the first ten of them (and how many in all)."""
    labels = sorted(int(x) for x in labels)
    text = ", ".join(label_name(classes, x) for x in labels[:10])
    return text + (f", ... ({len(labels)} in all)" if len(labels) > 10 else "")


def one_class(name: str, classes: list[str], labels) -> ConfigError:
    """The error for a training split of a single class."""
    return ConfigError(f"dataset {name}: train has a single class ({label_list(classes, labels)}); "
                       "a classifier needs at least 2")


def check_labels(bundle: DataBundle) -> None:
    """Refuse labels that would make a valid-looking but meaningless result: one class (accuracy
    1.0 for free), a label only val or test has (an extra class no model can learn), a class with
    no training images (a gap in the numbering), labels outside the class list."""
    name, classes = bundle.name, bundle.classes
    for split_name in ("train", "val", "test"):
        split = getattr(bundle, split_name)
        if len(split.images) != len(split.labels):
            raise ConfigError(f"dataset {name}: {split_name} has {len(split.images)} images "
                              f"but {len(split.labels)} labels")
        if len(split) == 0:
            raise ConfigError(f"dataset {name}: the {split_name} split is empty")
    seen = {s: set(torch.unique(getattr(bundle, s).labels).tolist()) for s in ("train", "val", "test")}
    for split_name, labels in seen.items():
        negative = [x for x in labels if x < 0]
        if negative:
            raise ConfigError(f"dataset {name}: negative labels in {split_name} ({label_list(classes, negative)}); "
                              "labels number the classes 0..K-1")
    outside = [x for x in seen["train"] if not 0 <= x < len(classes)]
    if outside:
        raise ConfigError(f"dataset {name}: train labels {label_list(classes, outside)} are outside "
                          f"0..{len(classes) - 1} ({len(classes)} classes)")
    for split_name in ("val", "test"):  # covers their labels outside the class list too
        extra = seen[split_name] - seen["train"]
        if extra:
            verb = "appears" if len(extra) == 1 else "appear"
            raise ConfigError(f"dataset {name}: label{'s' if len(extra) > 1 else ''} {label_list(classes, extra)} "
                              f"{verb} in {split_name} but not in train")
    if len(seen["train"]) < 2:
        raise one_class(name, classes, seen["train"])
    missing = set(range(len(classes))) - seen["train"]
    if missing:
        raise ConfigError(f"dataset {name}: class{'es' if len(missing) > 1 else ''} {label_list(classes, missing)} "
                          f"ha{'ve' if len(missing) > 1 else 's'} no images in train (train labels: "
                          f"{label_list(classes, seen['train'])}); labels must number the classes 0..K-1 without gaps")


def check_labels_from(bundle: DataBundle) -> None:
    """check_labels, whose error names the decoded-data cache entry when the labels were read from
    one. A folder's labels number its class folders, so for a folder that passed its own checks
    (classes with readable images; more than one class) a label error means the entry's labels are
    not the folder's, although they match their checksum (an entry rewritten whole, or written by a
    faulty version): the user must know which copy was read, to delete it."""
    try:
        check_labels(bundle)
    except ConfigError as err:
        if bundle.cache_entry is None:
            raise
        raise ConfigError(f"{err} (labels read from the decoded-data cache entry {shown(bundle.cache_entry)})") from None
