"""Splits: what every reader returns (`DataBundle` of three `Split`s), and the seeded, stratified ways
to cut them: a held-out split carved off train where the source has none, and at most N training
images per class. Every refusal is in the user's terms (which class has too few images, and how many),
not scikit-learn's traceback."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from src.config import ConfigError, DataConfig
from src.data.labels import label_name
from src.data.mapped import MappedImages


@dataclass
class Split:
    """One split's images and their labels."""

    # uint8, N x C x H x W, C in {1, 3}; MappedImages for an image folder read from the decoded-data
    # cache (memory-mapped: a batch reads its rows only).
    images: torch.Tensor | MappedImages
    labels: torch.Tensor  # int64, N

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class DataBundle:
    """A dataset as a reader returns it (and load_dataset finishes it): three splits, class names, and
    what the result records about how they were read."""

    name: str
    classes: list[str]
    train: Split
    val: Split
    test: Split
    split_note: str  # how val/test were obtained, recorded with the result
    skipped_files: list[str] = field(default_factory=list)  # unreadable images left out (bad_images=skip)
    cache: str = "off"  # decoded-data cache: hit | miss | refresh | off (src.data.cache)
    cache_entry: str | None = None  # the cache entry's folder the images and labels were read from
    load_s: float | None = None  # wall time of load_dataset

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out) with `fraction` of each class held out, seeded."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    keep, held = train_test_split(idx, test_size=fraction, random_state=seed, stratify=labels)
    return np.sort(keep), np.sort(held)


def subset(split: Split, idx: np.ndarray) -> Split:
    """The images and labels at `idx`; a mapped split stays mapped (a narrower index, no pixel read)."""
    if isinstance(split.images, MappedImages):
        return Split(split.images.subset(idx), split.labels[torch.from_numpy(idx)])
    index = torch.from_numpy(idx)
    return Split(split.images[index], split.labels[index])


def limit_per_class(split: Split, per_class: int, seed: int) -> Split:
    """At most `per_class` images of each class, drawn with a seeded permutation."""
    rng = np.random.default_rng(seed)
    labels = split.labels.numpy()
    keep = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        keep.append(rng.permutation(members)[:per_class])
    return subset(split, np.sort(np.concatenate(keep)))


def split_off(split: Split, fraction: float, seed: int, *, dataset: str, classes: list[str], source: str,
               held: str, option: str) -> tuple[Split, Split]:
    """Carve a stratified `held` split (val or test) off `source`, refusing what sklearn would
    refuse with a traceback, in the user's terms: which class has too few images, and how many."""
    labels = split.labels.numpy()
    values, counts = np.unique(labels, return_counts=True)
    for label, count in zip(values.tolist(), counts.tolist()):
        if count < 2:
            raise ConfigError(
                f"dataset {dataset}: class {label_name(classes, label)} has {count} image in {source}; "
                f"splitting off {held} (stratified, {option}={fraction:g}) needs at least 2 images per class")
    n = len(labels)
    n_held = math.ceil(fraction * n)  # sklearn's rounding of test_size
    for part, size in ((held, n_held), (f"the rest of {source}", n - n_held)):
        if size < len(values):
            raise ConfigError(
                f"dataset {dataset}: splitting off {held} ({option}={fraction:g} of {n} {source} images) leaves "
                f"{size} images in {part} for {len(values)} classes; stratifying needs at least one per class")
    keep, held_idx = stratified_split(labels, fraction, seed)
    # Stratifying rounds each class's share: a class of 2 can end with none in val (its val accuracy
    # then silently averages over fewer classes), which is refused as the class of 1 image is.
    for part, idx in ((held, held_idx), (f"the rest of {source}", keep)):
        absent = sorted(set(values.tolist()) - set(labels[idx].tolist()))
        if absent:
            label = absent[0]
            raise ConfigError(
                f"dataset {dataset}: class {label_name(classes, label)} has {int(counts[values == label][0])} images "
                f"in {source}; splitting off {held} (stratified, {option}={fraction:g} of {n} {source} images) leaves "
                f"it none in {part}; a class needs at least {_always_both(n, n - n_held)} images here to have one on "
                f"both sides whatever the seed (add images of it, or change {option})")
    return subset(split, keep), subset(split, held_idx)


def _always_both(n: int, n_keep: int) -> int:
    """The fewest images a class needs to keep one and hold out one whatever the seed, when `n_keep`
    of `n` images are kept: scikit-learn gives a class of c images floor(c * n_keep / n) kept, or
    one more (remainders are handed out by seeded draw), and the rest held out."""
    c = 2
    while c * n_keep // n < 1 or c - c * n_keep // n - 1 < 1:
        c += 1
    return c


def held_out(train: Split, held: str, given: Split | None, cfg: DataConfig, *, dataset: str,
             classes: list[str], after: str | None = None) -> tuple[Split, Split, str | None]:
    """(train, the `held` split, a note for the bundle's split_note): `given` where the source has
    that split, else a stratified `dataset.<held>_fraction` of train (seed `dataset.split_seed`).
    `after`: the split carved off train before this one, which the note names: the fraction is of
    what it left (0.2 after a val of 0.2 is 16 % of the images), not of the whole."""
    if given is not None:
        return train, given, None
    fraction = getattr(cfg, f"{held}_fraction")
    train, split = split_off(train, fraction, cfg.split_seed, dataset=dataset, classes=classes, source="train",
                             held=held, option=f"dataset.{held}_fraction")
    of = f"train after {after} was split off" if after else "train"
    return train, split, f"{held} = stratified {fraction} of {of} (seed {cfg.split_seed})"
