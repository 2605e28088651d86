"""Data readers by name: `dataset.kind` -> the `Reader` of that source (timm's `create_dataset` and its
`readers/`).

A source is one module in src/data/readers/, named as its kind, holding a `Reader` subclass decorated
with `@register`, plus `conf/dataset/<name>.yaml`; nothing else changes. Finding one does not depend on
import order: `reader_for(kind)` imports `src.data.readers.<kind>` by name the first time it is asked
for, and `reader_names()` lists the package's modules without importing them (the config check calls
it, and must stay light: no torch). A reader registered from elsewhere (a test's own) is found too.

This module imports nothing of the project but src.config at import time: src/config/, the bottom
layer, calls `check_kind` from inside its validation (tests/test_layout.py allows that one import).
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from src.config import ConfigError, DataConfig

if TYPE_CHECKING:
    import hashlib

    import numpy as np

    from src.data.splits import DataBundle

PACKAGE = "src.data.readers"


class Reader:
    """One data source. Set `name` (the `dataset.kind` it answers to, and its module's name) and
    `keys`, implement `read`; override `check`, `known_classes` and `identify` where the source can say more.

    `read` returns every split with the labels as the source has them and the images at the source's
    own size; `load_dataset` (src/data/load.py) then checks the labels, keeps `train_per_class` and
    resizes to `image_size`, the same for every source.
    """

    name: ClassVar[str]
    # The DataConfig keys this source reads beyond the shared ones (name, image_size, train_per_class,
    # val_fraction, test_fraction, split_seed; augment and hflip are the batches'), for the docs and a
    # test that each is a real key.
    keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: DataConfig) -> None:
        self.cfg = cfg

    def read(self, progress: bool = False) -> DataBundle:
        """Every split of the source; ConfigError (one line) for anything it cannot read. `progress`:
        a bar while decoding, for a source that decodes files."""
        raise NotImplementedError

    def check(self) -> None:
        """What can be checked of the source before anything loads or any run folder is made (the
        config gate's preflight, src/training/preflight.py): that its files are there, cheaply.
        ConfigError (one line) naming the key; `read` checks the same again for a caller that skips
        the gate. The default checks nothing."""

    def known_classes(self) -> list[str] | None:
        """The class names when they are known without reading the data (OOD sets are then checked
        before anything loads: src/data/ood.py), else None."""
        return None

    def image_file(self, path: Path) -> np.ndarray:
        """One image file as this source's training images were made: uint8 3 x image_size x image_size,
        what `src.predict` gives a run's model. The default is the array sources' way (MedMNIST, the
        digits, torchvision): the picture at its own size, squared to image_size by `resize_uint8` as
        `load_dataset` resizes their arrays; image folders override it with their decode and crop. One
        path for all was the image folders': a MedMNIST run's own test images, saved as PNG files,
        came out 1 in 468 off its recorded test accuracy. UnreadableImage or ConfigError, naming the file."""
        import numpy as np
        import torch

        from src.data.decode import decode
        from src.data.paths import shown
        from src.data.pixels import image_to_uint8, resize_uint8

        img, _ = decode(path)  # upright, 8-bit L or RGB: no draft, the arrays were never shrunk while decoding
        pixels = torch.from_numpy(np.array(image_to_uint8(img, shown(path))))
        pixels = pixels.unsqueeze(0) if pixels.ndim == 2 else pixels.permute(2, 0, 1)
        return resize_uint8(pixels.unsqueeze(0), self.cfg.image_size)[0].expand(3, -1, -1).numpy()

    def identify(self, digest: hashlib._Hash, head: dict) -> None:
        """Feed what makes this dataset this one into `digest` (src/data/identity.py; `head` holds the
        split settings). The default is the source's name: right for a fixed, named dataset; a source
        read from the user's files must hash them (see the imagefolder and medmnist readers)."""
        cfg = self.cfg
        digest.update(json.dumps(head | {"source": cfg.flag or cfg.tv_name or cfg.kind}, sort_keys=True).encode())


# Every reader found so far, by name: filled by @register as reader modules are imported.
READERS: dict[str, type[Reader]] = {}


def register(cls: type[Reader]) -> type[Reader]:
    """Class decorator: make a reader known by its name. A second class under a taken name is refused
    (two modules claiming one kind); the same class again (a module imported twice) is not."""
    known = READERS.get(cls.name)
    if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
        raise TypeError(f"reader {cls.name!r} is registered already, by {known.__module__}.{known.__qualname__}")
    READERS[cls.name] = cls
    return cls


def _modules() -> list[str]:
    package = importlib.import_module(PACKAGE)
    return [m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_")]


def reader_names() -> list[str]:
    """Every `dataset.kind` there is, sorted: the reader modules of src/data/readers/ (not imported
    here) and any reader registered from elsewhere."""
    return sorted(set(_modules()) | set(READERS))


def check_kind(kind: object) -> None:
    """ConfigError (one line, listing the options) unless `kind` names a reader."""
    names = reader_names()
    if kind not in names:
        raise ConfigError(f"dataset.kind={kind!r} is not allowed (options: {', '.join(names)})")


# The keys that say *which* data a source reads. Set for a source that does not read them, they were
# ignored without a word: `dataset.root=DIR` without `dataset=imagefolder` trained on digits, exit 0,
# with DIR in the run's config.yaml. The other source keys (bad_images, cache, ...) say how files are
# read, and also apply to OOD sets, so they are not checked here.
WHICH_DATA = ("root", "tv_name", "flag", "download")


def check_keys_read(cfg: DataConfig) -> None:
    """ConfigError (one line) for a WHICH_DATA key set away from its default that `dataset.kind`'s
    reader does not read, naming the sources that do read it."""
    reader, defaults = reader_for(cfg.kind), DataConfig()
    for key in WHICH_DATA:
        value = getattr(cfg, key)
        if key in reader.keys or value == getattr(defaults, key):
            continue
        readers = []
        for name in reader_names():  # only on the way to an error: every reader module is imported
            try:
                if key in reader_for(name).keys:
                    readers.append(name)
            except Exception:  # a reader module that cannot be imported is no option to offer
                continue
        raise ConfigError(f"dataset.{key}={value!r} is not read by dataset.kind={cfg.kind!r}: the run would train "
                          f"on {cfg.kind} without it (sources that read {key}: {', '.join(readers) or 'none'}; "
                          f"e.g. dataset={readers[0] if readers else 'NAME'})")


def reader_for(kind: str) -> type[Reader]:
    """The reader class of `kind`, its module imported by name on first use."""
    if kind not in READERS:
        check_kind(kind)
        importlib.import_module(f"{PACKAGE}.{kind}")
        if kind not in READERS:  # a module of the package that registers no reader of its own name
            raise TypeError(f"{PACKAGE}.{kind} registers no reader named {kind!r} (found: {', '.join(sorted(READERS))})")
    return READERS[kind]
