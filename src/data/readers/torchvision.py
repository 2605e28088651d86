"""A torchvision dataset by class name (`dataset.tv_name`: CIFAR10, Flowers102, ...), read from
`dataset.root` (default ~/.torchvision), downloaded there with `dataset.download=true`. Its own
train/val/test splits where it has them; those it lacks are cut from train (stratified,
`dataset.split_seed`). Array datasets (MNIST, CIFAR) are taken whole; datasets of image files are
decoded item by item, unreadable ones skipped or fatal (`dataset.bad_images`)."""

from __future__ import annotations

import inspect
import logging
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from src.config import ConfigError
from src.data.labels import to_labels
from src.data.paths import one_line
from src.data.pixels import image_to_uint8, resize_uint8, to_nchw
from src.data.registry import Reader, register
from src.data.splits import DataBundle, Split, held_out

log = logging.getLogger(__name__)


@register
class TorchvisionDataset(Reader):
    name = "torchvision"
    keys = ("tv_name", "root", "download", "bad_images")

    def read(self, progress: bool = False) -> DataBundle:
        cfg = self.cfg
        skipped: list[str] = []
        train_ds = self._get("train") or self._get("trainval")
        if train_ds is None:
            raise ConfigError(f"dataset.tv_name={cfg.tv_name}: no train split found")
        train = self._to_split(train_ds, "train", skipped)
        classes = [str(c) for c in getattr(train_ds, "classes", range(int(train.labels.max()) + 1))]
        where = {"dataset": cfg.name or cfg.tv_name.lower(), "classes": classes}
        val_ds, test_ds = self._get("val"), self._get("test")
        train, test, test_note = held_out(train, "test", self._to_split(test_ds, "test", skipped), cfg, **where)
        train, val, val_note = held_out(train, "val", self._to_split(val_ds, "val", skipped), cfg, **where,
                                        after="test" if test_note else None)
        notes = [n for n in (test_note, val_note) if n]
        if skipped:
            log.warning("skipped %d unreadable images (dataset.bad_images=skip), e.g. %s", len(skipped), skipped[0])
        return DataBundle(where["dataset"], classes, train, val, test, "; ".join(notes) or "official splits", skipped)

    def _get(self, split: str):
        """The dataset's `split`, or None when it has no such split."""
        import torchvision.datasets as tvd

        cfg = self.cfg
        cls = getattr(tvd, cfg.tv_name or "", None)
        if cls is None:
            raise ConfigError(f"dataset.tv_name={cfg.tv_name!r} is not a torchvision dataset")
        root = cfg.root or str(Path.home() / ".torchvision")
        params = inspect.signature(cls).parameters
        kwargs = {"root": root, "download": cfg.download}
        if "split" in params:
            kwargs["split"] = split
        elif "train" in params:
            if split == "val":
                return None
            kwargs["train"] = split == "train"
        try:
            return cls(**kwargs)
        except (ValueError, TypeError):  # this dataset has no such split name
            return None
        # "Dataset not found or corrupted" (RuntimeError), a failed download (URLError is an
        # OSError; torchvision wraps some in RuntimeError), a damaged archive.
        except (OSError, RuntimeError, EOFError, zipfile.BadZipFile, tarfile.TarError) as err:
            why = "download failed" if cfg.download else "not found offline (dataset.download=false)"
            raise ConfigError(f"dataset.tv_name={cfg.tv_name}: {why} under root={root} ({one_line(err)})") from None

    def _to_split(self, dataset, split: str, skipped: list[str]) -> Split | None:
        """A split's images and labels (None for no dataset). MNIST- and CIFAR-style datasets hold
        every image in one array: taken whole (load_dataset resizes after subsampling); others item by
        item, each resized as it is read."""
        if dataset is None:
            return None
        where = f"dataset.tv_name={self.cfg.tv_name} {split}"
        data, targets = getattr(dataset, "data", None), getattr(dataset, "targets", None)
        if targets is not None and isinstance(data, (np.ndarray, torch.Tensor)) and data.ndim in (3, 4):
            array = data.numpy() if isinstance(data, torch.Tensor) else data
            labels = to_labels(targets, f"{where} targets")
            if len(labels) != len(array):
                raise ConfigError(f"{where}: {len(array)} images but {len(labels)} targets; they must pair one to one")
            return Split(to_nchw(array, f"{where} data"), labels)
        return _items(dataset, self.cfg.image_size, where, self.cfg.bad_images, skipped)


def _items(dataset, size: int, where: str, bad: str, skipped: list[str]) -> Split:
    """A dataset of image files, item by item: each decoded (by the dataset), checked and resized."""
    from PIL import Image

    images, labels = [], []
    for i in range(len(dataset)):
        try:
            img, label = dataset[i]  # decodes the image file, if the dataset keeps files
        except Exception as err:  # Pillow's decode failures, as in src.data.decode.decode
            if bad == "fail":
                raise ConfigError(f"{where} item {i}: unreadable image ({one_line(err)}); "
                                  "dataset.bad_images=skip leaves such items out") from None
            skipped.append(f"{where} item {i}")
            continue
        if not isinstance(img, Image.Image):
            raise ConfigError(f"{where} item {i}: a {type(img).__name__}, expected a PIL image (no transform)")
        if not isinstance(label, (int, np.integer)) and not (isinstance(label, torch.Tensor) and label.numel() == 1
                                                            and not label.is_floating_point()):
            raise ConfigError(f"{where} item {i}: target {label!r} is not one integer class")
        t = torch.from_numpy(np.array(image_to_uint8(img, f"{where} item {i}")))  # a writable copy
        t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
        images.append(resize_uint8(t.unsqueeze(0), size)[0])
        labels.append(int(label))
    if not images:
        raise ConfigError(f"{where}: none of its {len(dataset)} items is readable")
    if len({t.shape[0] for t in images}) > 1:  # some datasets (Caltech101) mix grey and colour images
        images = [t.expand(3, -1, -1) for t in images]
    return Split(torch.stack(images), torch.tensor(labels, dtype=torch.int64))
