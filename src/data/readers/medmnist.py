"""A MedMNIST v2 .npz file with its official train/val/test splits (`dataset.root`), or downloaded by
the `medmnist` package (`dataset.flag`, `dataset.download=true`). Arrays: `<split>_images` (N x H x W
or N x H x W x C, any pixel type `to_uint8` takes) and `<split>_labels` (N or N x 1 class indices)."""

from __future__ import annotations

import zipfile
from pathlib import Path

from src.config import ConfigError, DataConfig
from src.data.identity import hash_file
from src.data.labels import one_class, to_labels
from src.data.npz import read_npz
from src.data.paths import one_line
from src.data.pixels import to_nchw
from src.data.registry import Reader, register
from src.data.splits import DataBundle, Split

NPZ_ARRAYS = [f"{split}_{kind}" for split in ("train", "val", "test") for kind in ("images", "labels")]


@register
class MedMNIST(Reader):
    name = "medmnist"
    keys = ("root", "flag", "download")

    def read(self, progress: bool = False) -> DataBundle:
        path = medmnist_file(self.cfg)
        where = f"dataset.root={str(path)!r}"
        arrays = read_npz(path, NPZ_ARRAYS, where)
        splits = {split: _split(arrays, split, where) for split in ("train", "val", "test")}
        train_labels = splits["train"].labels
        if len(train_labels) and int(train_labels.max()) >= len(train_labels):
            # Labels number the classes 0..K-1 and every class needs a training image, so this many
            # classes cannot be right; refusing here avoids building a list of K class names.
            raise ConfigError(f"{where}: train labels go up to {int(train_labels.max())} with only "
                              f"{len(train_labels)} train images; labels must number the classes 0..K-1 without gaps")
        num_classes = int(train_labels.max()) + 1 if len(train_labels) else 0
        name = self.cfg.flag or path.stem
        return DataBundle(name, [str(c) for c in range(num_classes)], splits["train"], splits["val"], splits["test"],
                          "official MedMNIST splits")

    def check(self) -> None:
        """The .npz is there (unless it is to be downloaded), is an archive with every array of the
        layout, and its train labels hold 2 classes or more: the gate calls this before any run
        folder is made, so it reads the archive's directory and one small array, not the images."""
        path = given_file(self.cfg)
        if path is None:
            return
        where = f"dataset.root={str(path)!r}"
        found = _labels(read_npz(path, NPZ_ARRAYS, where, load=["train_labels"]), "train", where).unique()
        if len(found) == 1:
            raise one_class(self.cfg.flag or path.stem, [str(c) for c in range(int(found[0]) + 1)], found)

    def identify(self, digest, head: dict) -> None:
        """A file's bytes, wherever it lies; a flag downloaded to its default place, by name."""
        if self.cfg.root and Path(self.cfg.root).is_file():
            hash_file(digest, head, Path(self.cfg.root))
        else:
            super().identify(digest, head)


def _labels(arrays: dict, split: str, where: str):
    labels = arrays[f"{split}_labels"]
    if labels.ndim == 2 and labels.shape[1] != 1:
        raise ConfigError(f"{where}: multi-label targets {labels.shape} are not supported")
    return to_labels(labels, f"{where} array '{split}_labels'")


def _split(arrays: dict, split: str, where: str) -> Split:
    images, labels = arrays[f"{split}_images"], _labels(arrays, split, where)
    images = to_nchw(images, f"{where} array '{split}_images'")  # refuses a 0-d array, which has no len()
    if len(labels) != len(images):
        raise ConfigError(f"{where}: {split} has {len(images)} images ('{split}_images') but {len(labels)} "
                          f"labels ('{split}_labels'); they must pair one to one")
    return Split(images, labels)


def given_file(cfg: DataConfig) -> Path | None:
    """`dataset.root` when it is a file; None when there is none or it is to be downloaded there
    (`dataset.download`). ConfigError for a folder, or a missing file not to be downloaded."""
    if not cfg.root:
        return None
    path = Path(cfg.root)
    if path.is_file():
        return path
    if path.is_dir():
        raise ConfigError(f"dataset.root={cfg.root!r} is a directory; expected a .npz file")
    if not cfg.download:
        raise ConfigError(f"dataset.root={cfg.root!r}: no such .npz file")
    return None


def medmnist_file(cfg: DataConfig) -> Path:
    """The .npz to read: `dataset.root`, or the file the `medmnist` package downloads for `dataset.flag`."""
    given = given_file(cfg)
    if given is not None:
        return given
    if not cfg.flag:
        raise ConfigError("dataset.flag (e.g. pneumoniamnist) is required to download a MedMNIST dataset")
    try:
        import medmnist
    except ImportError as err:
        raise ConfigError("downloading MedMNIST needs the 'medmnist' package (pip install medmnist)") from err
    if cfg.flag not in medmnist.INFO:
        raise ConfigError(f"dataset.flag={cfg.flag!r} is not a MedMNIST dataset")
    info = medmnist.INFO[cfg.flag]
    root = Path(cfg.root).parent if cfg.root else Path.home() / ".medmnist"
    try:
        root.mkdir(parents=True, exist_ok=True)
        getattr(medmnist, info["python_class"])(split="train", download=True, root=str(root))
    except (OSError, RuntimeError, EOFError, zipfile.BadZipFile) as err:  # URLError is an OSError
        raise ConfigError(f"dataset.flag={cfg.flag}: download into {root} failed ({one_line(err)})") from None
    return root / f"{cfg.flag}.npz"
