"""Datasets as in-memory uint8 tensors with fixed, seeded train/val/test splits.

The fine-tuning questions this tool answers live in the small-data regime, so every split is
decoded and resized once and held in memory (about image_size^2 * 3 bytes per image: 10k images at
224 px is 1.5 GB). Batches are cut from those tensors with no DataLoader workers or per-sample
Python, and normalised on the device.
"""

from __future__ import annotations

import copy

import inspect
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from src.config import ConfigError, DataConfig
from src.models import Normalization

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


@dataclass
class Split:
    images: torch.Tensor  # uint8, N x C x H x W, C in {1, 3}
    labels: torch.Tensor  # int64, N

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class DataBundle:
    name: str
    classes: list[str]
    train: Split
    val: Split
    test: Split
    split_note: str  # how val/test were obtained, recorded with the result
    skipped_files: list[str] = field(default_factory=list)  # unreadable images left out (bad_images=skip)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def resize_uint8(images: torch.Tensor, size: int, chunk: int = 512) -> torch.Tensor:
    """Square-resize a uint8 N x C x H x W tensor (antialiased bilinear), in chunks to bound memory."""
    if images.shape[-2:] == (size, size):
        return images.contiguous()
    out = []
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].float()
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(x.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def _to_nchw(array: np.ndarray) -> torch.Tensor:
    """N x H x W or N x H x W x C uint8 array to N x C x H x W."""
    t = torch.from_numpy(np.ascontiguousarray(array))
    if t.ndim == 3:
        return t.unsqueeze(1)
    if t.ndim == 4 and t.shape[-1] in (1, 3):
        return t.permute(0, 3, 1, 2).contiguous()
    raise ValueError(f"images of shape {tuple(array.shape)} are neither N x H x W nor N x H x W x C")


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out) with `fraction` of each class held out, seeded."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    keep, held = train_test_split(idx, test_size=fraction, random_state=seed, stratify=labels)
    return np.sort(keep), np.sort(held)


def _subset(split: Split, idx: np.ndarray) -> Split:
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
    return _subset(split, np.sort(np.concatenate(keep)))


def _split_off(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    keep, held = stratified_split(split.labels.numpy(), fraction, seed)
    return _subset(split, keep), _subset(split, held)


def _load_digits(cfg: DataConfig) -> DataBundle:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 8x8 images with values 0..16; scale to the 0..255 range the pretrained normalisation expects.
    images = torch.from_numpy((digits.images * (255.0 / 16.0)).round().astype(np.uint8)).unsqueeze(1)
    full = Split(images, torch.from_numpy(digits.target.astype(np.int64)))
    rest, test = _split_off(full, cfg.test_fraction, cfg.split_seed)
    train, val = _split_off(rest, cfg.val_fraction / (1 - cfg.test_fraction), cfg.split_seed)
    note = f"stratified split seed={cfg.split_seed}: test {cfg.test_fraction}, val {cfg.val_fraction}"
    return DataBundle("digits", [str(c) for c in range(10)], train, val, test, note)


def _medmnist_file(cfg: DataConfig) -> Path:
    if cfg.root:
        path = Path(cfg.root)
        if path.is_file():
            return path
        if not cfg.download:
            raise ConfigError(f"dataset.root={cfg.root!r}: no such .npz file")
    if not cfg.flag:
        raise ConfigError("dataset.flag (e.g. pneumoniamnist) is required to download a MedMNIST dataset")
    try:
        import medmnist
    except ImportError as err:
        raise ConfigError("downloading MedMNIST needs the 'medmnist' package (pip install medmnist)") from err
    info = medmnist.INFO[cfg.flag]
    root = Path(cfg.root).parent if cfg.root else Path.home() / ".medmnist"
    root.mkdir(parents=True, exist_ok=True)
    getattr(medmnist, info["python_class"])(split="train", download=True, root=str(root))
    return root / f"{cfg.flag}.npz"


def _load_medmnist(cfg: DataConfig) -> DataBundle:
    path = _medmnist_file(cfg)
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    splits = {}
    for split in ("train", "val", "test"):
        for kind in ("images", "labels"):
            if f"{split}_{kind}" not in arrays:
                raise ConfigError(f"dataset.root={str(path)!r}: missing array '{split}_{kind}' (MedMNIST layout)")
        labels = arrays[f"{split}_labels"]
        if labels.ndim == 2 and labels.shape[1] != 1:
            raise ConfigError(f"dataset.root={str(path)!r}: multi-label targets {labels.shape} are not supported")
        splits[split] = Split(_to_nchw(arrays[f"{split}_images"]), torch.from_numpy(labels.reshape(-1).astype(np.int64)))
    num_classes = int(max(int(s.labels.max()) for s in splits.values())) + 1
    if min(int(s.labels.min()) for s in splits.values()) < 0:
        raise ConfigError(f"dataset.root={str(path)!r}: negative labels")
    name = cfg.flag or path.stem
    return DataBundle(name, [str(c) for c in range(num_classes)], splits["train"], splits["val"], splits["test"], "official MedMNIST splits")


def _read_image(path: Path, size: int) -> torch.Tensor:
    """Decode, resize the short side to `size` and centre-crop to a square, as uint8 3 x size x size."""
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        w, h = img.size
        scale = size / min(w, h)
        img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
        w, h = img.size
        left, top = (w - size) // 2, (h - size) // 2
        img = img.crop((left, top, left + size, top + size))
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


def _read_folder(folder: Path, classes: list[str] | None, size: int, bad: str, skipped: list[str]) -> tuple[Split, list[str]]:
    found = sorted(d.name for d in folder.iterdir() if d.is_dir())
    if not found:
        raise ConfigError(f"{folder}: no class folders (expected {folder}/<class>/<images>)")
    if classes is not None and found != classes:
        raise ConfigError(f"{folder}: class folders {found} differ from train's {classes}")
    images, labels = [], []
    for label, cls in enumerate(found):
        files = sorted(p for p in (folder / cls).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ConfigError(f"{folder / cls}: class folder has no images")
        readable = 0
        for file in files:
            try:
                image = _read_image(file, size)
            except (OSError, ValueError, SyntaxError) as err:  # PIL's errors for truncated or non-image files
                if bad == "fail":
                    raise ConfigError(f"{file}: unreadable image ({type(err).__name__}: {err}); "
                                      "dataset.bad_images=skip leaves such files out") from None
                skipped.append(str(file))
                continue
            images.append(image)
            labels.append(label)
            readable += 1
        if not readable:
            raise ConfigError(f"{folder / cls}: none of its {len(files)} image files is readable")
    return Split(torch.stack(images), torch.tensor(labels, dtype=torch.int64)), found


def _load_imagefolder(cfg: DataConfig) -> DataBundle:
    root = Path(cfg.root or "")
    if not (root / "train").is_dir():
        raise ConfigError(f"dataset.root={cfg.root!r}: expected a folder with train/<class>/ images")
    skipped: list[str] = []
    train, classes = _read_folder(root / "train", None, cfg.image_size, cfg.bad_images, skipped)
    notes = []
    if (root / "val").is_dir():
        val, _ = _read_folder(root / "val", classes, cfg.image_size, cfg.bad_images, skipped)
    else:
        train, val = _split_off(train, cfg.val_fraction, cfg.split_seed)
        notes.append(f"val = stratified {cfg.val_fraction} of train (seed {cfg.split_seed})")
    if (root / "test").is_dir():
        test, _ = _read_folder(root / "test", classes, cfg.image_size, cfg.bad_images, skipped)
    else:
        train, test = _split_off(train, cfg.test_fraction, cfg.split_seed)
        notes.append(f"test = stratified {cfg.test_fraction} of train (seed {cfg.split_seed})")
    if skipped:
        log.warning("skipped %d unreadable image files (dataset.bad_images=skip), e.g. %s", len(skipped), skipped[0])
    return DataBundle(cfg.name or root.name, classes, train, val, test, "; ".join(notes) or "folders train/val/test",
                      skipped)


def _tv_to_split(dataset, size: int) -> Split:
    # MNIST- and CIFAR-style datasets hold every image in one uint8 array: take it whole
    # (load_dataset resizes after subsampling).
    data, targets = getattr(dataset, "data", None), getattr(dataset, "targets", None)
    if targets is not None and isinstance(data, (np.ndarray, torch.Tensor)) and data.ndim in (3, 4):
        array = data.numpy() if isinstance(data, torch.Tensor) else data
        if array.dtype == np.uint8:
            return Split(_to_nchw(array), torch.as_tensor(np.asarray(targets), dtype=torch.int64))
    images, labels = [], []
    for img, label in dataset:
        arr = np.asarray(img.convert("RGB") if img.mode not in ("L", "RGB") else img, dtype=np.uint8)
        t = torch.from_numpy(arr.copy())
        t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
        images.append(resize_uint8(t.unsqueeze(0), size)[0])
        labels.append(int(label))
    return Split(torch.stack(images), torch.tensor(labels, dtype=torch.int64))


def _load_torchvision(cfg: DataConfig) -> DataBundle:
    import torchvision.datasets as tvd

    cls = getattr(tvd, cfg.tv_name or "", None)
    if cls is None:
        raise ConfigError(f"dataset.tv_name={cfg.tv_name!r} is not a torchvision dataset")
    root = cfg.root or str(Path.home() / ".torchvision")
    params = inspect.signature(cls).parameters

    def get(split: str):
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
        except RuntimeError as err:  # torchvision's "Dataset not found or corrupted"
            raise ConfigError(f"dataset.tv_name={cfg.tv_name}: {err} (root={root}, download={cfg.download})") from err

    train_ds = get("train") or get("trainval")
    if train_ds is None:
        raise ConfigError(f"dataset.tv_name={cfg.tv_name}: no train split found")
    train = _tv_to_split(train_ds, cfg.image_size)
    val_ds, test_ds = get("val"), get("test")
    notes = []
    test = _tv_to_split(test_ds, cfg.image_size) if test_ds is not None else None
    if test is None:
        train, test = _split_off(train, cfg.test_fraction, cfg.split_seed)
        notes.append(f"test = stratified {cfg.test_fraction} of train (seed {cfg.split_seed})")
    val = _tv_to_split(val_ds, cfg.image_size) if val_ds is not None else None
    if val is None:
        train, val = _split_off(train, cfg.val_fraction, cfg.split_seed)
        notes.append(f"val = stratified {cfg.val_fraction} of train (seed {cfg.split_seed})")
    classes = [str(c) for c in getattr(train_ds, "classes", range(int(train.labels.max()) + 1))]
    return DataBundle(cfg.name or cfg.tv_name.lower(), classes, train, val, test, "; ".join(notes) or "official splits")


LOADERS = {
    "digits": _load_digits,
    "medmnist": _load_medmnist,
    "imagefolder": _load_imagefolder,
    "torchvision": _load_torchvision,
}


def load_dataset(cfg: DataConfig) -> DataBundle:
    """Load, split, subsample and resize to `cfg.image_size`."""
    bundle = LOADERS[cfg.kind](cfg)
    if cfg.name:
        bundle.name = cfg.name
    for split_name in ("train", "val", "test"):
        split = getattr(bundle, split_name)
        if len(split) == 0:
            raise ConfigError(f"dataset {bundle.name}: the {split_name} split is empty")
        if int(split.labels.max()) >= bundle.num_classes or int(split.labels.min()) < 0:
            raise ConfigError(f"dataset {bundle.name}: {split_name} labels outside 0..{bundle.num_classes - 1}")
    if cfg.train_per_class is not None:
        bundle.train = limit_per_class(bundle.train, cfg.train_per_class, cfg.split_seed)
    for split_name in ("train", "val", "test"):
        split = getattr(bundle, split_name)
        setattr(bundle, split_name, Split(resize_uint8(split.images, cfg.image_size), split.labels))
    return bundle


def batches_per_pass(n: int, batch_size: int, drop_single: bool = True) -> int:
    """Optimizer steps in one pass over n samples (a last batch of one sample is dropped when
    training, see Batches)."""
    full, rest = divmod(n, batch_size)
    return full + (1 if rest > 1 or (rest == 1 and (not drop_single or n == 1)) else 0)


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
    """Mini-batches cut from an in-memory split: normalised, 3-channel, optionally augmented.

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
        augment: bool = False,
        hflip: bool = False,
        channels_last: bool = False,
        passes: int = 1,
    ) -> None:
        self.images = split.images.to(device)
        self.labels = split.labels.to(device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
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
        view.shuffle = view.augment = False
        view.passes = 1
        return view

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        pad = max(1, h // 8)
        padded = F.pad(x.float(), (pad, pad, pad, pad), mode="replicate")
        oy = torch.randint(0, 2 * pad + 1, (n,), generator=self.generator).to(x.device)
        ox = torch.randint(0, 2 * pad + 1, (n,), generator=self.generator).to(x.device)
        rows = (oy[:, None] + torch.arange(h, device=x.device))[:, :, None]
        cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, :]
        out = padded[torch.arange(n, device=x.device)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
        if self.hflip:
            flip = (torch.rand(n, generator=self.generator) < 0.5).to(x.device)
            out = torch.where(flip[:, None, None, None], out.flip(-1), out)
        return out

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for idx in batch_indices(len(self.labels), self.batch_size, self.shuffle, self.generator, self.passes,
                                 self.labels.device):
            x = self.images[idx]
            x = self._augment(x) if self.augment else x.float()
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            x = x * self.scale + self.shift
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[idx]
