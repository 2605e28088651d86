"""Batches: mini-batches cut from an in-memory (or memory-mapped) split, with no DataLoader workers
or per-sample Python, normalised and augmented on the device; and the epoch's batch indices, shared
with the frozen-feature cache (src/measurement/feature_cache.py) so both see the same samples in the
same order."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch

from src.config import augment_name
from src.data.augment import preset
from src.data.splits import Split
from src.models import Normalization


def batches_per_pass(n: int, batch_size: int, drop_single: bool = True) -> int:
    """Optimizer steps in one pass over n samples (a last batch of one sample is dropped when
    training, see Batches)."""
    full, rest = divmod(n, batch_size)
    return full + (1 if rest > 1 or (rest == 1 and (not drop_single or n == 1)) else 0)


def trained_images(n: int, batch_size: int, passes: int) -> int:
    """The images an epoch trains on: `passes` passes over n samples, each less a last batch of one
    (batch_indices drops it), as batches_per_pass counts its steps."""
    return passes * (n - (1 if n > 1 and n % batch_size == 1 else 0))


def batch_indices(
    n: int, batch_size: int, shuffle: bool, generator: torch.Generator | None, passes: int, device: torch.device
) -> Iterator[torch.Tensor | slice]:
    """The batches of one epoch as indices into n samples: `passes` passes, each a fresh seeded
    permutation when shuffling (in order otherwise). Shared by images and cached features, so
    both see the same samples in the same order."""
    for _ in range(passes):
        order = torch.randperm(n, generator=generator).to(device) if shuffle else None
        for start in range(0, n, batch_size):
            if shuffle and n - start == 1 and n > 1:
                # A last training batch of one sample would stop BatchNorm ("expected more than 1
                # value per channel"); that one sample, a different one each epoch, is left out.
                break
            yield order[start : start + batch_size] if order is not None else slice(start, start + batch_size)


def passes_for(n: int, batch_size: int, min_steps: int) -> int:
    """Passes over n training samples that make an epoch at least `min_steps` optimizer steps."""
    per_pass = batches_per_pass(n, batch_size)
    return max(1, -(-min_steps // per_pass)) if min_steps > 0 and per_pass > 0 else 1


class Batches:
    """Mini-batches cut from an in-memory split: normalised, 3-channel, augmented by a preset of
    src/data/augment.py (`augment`; `hflip` adds flips to `shift`).

    Shuffling uses its own seeded generator, so data order does not depend on anything else
    that consumes random numbers.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        norm: Normalization,
        device: torch.device,
        shuffle: bool = False,
        seed: int = 0,
        augment: str | bool = "none",
        hflip: bool = False,
        channels_last: bool = False,
        passes: int = 1,
    ) -> None:
        self.images = split.images.to(device)
        self.labels = split.labels.to(device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment_name(augment)  # a preset of src/data/augment.py (true/false: shift/none)
        self.preset = preset(self.augment)
        self.hflip = hflip
        self.channels_last = channels_last
        # Passes over the data per epoch (trainer.min_epoch_steps): each pass a fresh permutation.
        self.passes = passes
        self.generator = torch.Generator().manual_seed(seed)
        shape = (1, 3, 1, 1)
        # Folding /255 into the affine normalisation saves one pass over every batch.
        std = torch.tensor(norm.std, device=device).view(shape)
        self.scale = (1.0 / (255.0 * std)).float()
        self.shift = (-torch.tensor(norm.mean, device=device).view(shape) / std).float()

    def __len__(self) -> int:
        return self.passes * batches_per_pass(len(self.labels), self.batch_size, self.shuffle)

    def unshuffled(self) -> Batches:
        """The same images in order and unaugmented, once (a one-off pass, e.g. feature caching);
        it shares the generator but draws nothing from it."""
        view = copy.copy(self)
        view.shuffle, view.augment, view.preset = False, "none", preset("none")
        view.passes = 1
        return view

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for idx in batch_indices(len(self.labels), self.batch_size, self.shuffle, self.generator, self.passes,
                                 self.labels.device):
            x = self.images[idx]
            # float in [0, 255]; augmentation runs here, inside the timed training loop
            x = self.preset.apply(x, self.generator, self.hflip)
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            x = x * self.scale + self.shift
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[idx]
