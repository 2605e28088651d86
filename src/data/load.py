"""Datasets as in-memory uint8 tensors with fixed, seeded train/val/test splits.

The fine-tuning questions this tool answers live in the small-data regime, so every split is
decoded and resized once and held in memory (about image_size^2 * 3 bytes per image: 10k images at
224 px is 1.5 GB). Batches are cut from those tensors with no DataLoader workers or per-sample
Python, and normalised on the device.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import ctypes
import inspect
import logging
import math
import multiprocessing
import os
import signal
import sys
import tarfile
import threading
import time
import warnings
import zipfile
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from src.config import ConfigError, DataConfig, augment_name
from src.data.augment import preset
from src.data.cache import MappedImages, RowFile, build, cache_key, default_cache_dir, labels_crc, lookup
from src.data.paths import hidden, hidden_below, shown
from src.models import Normalization

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


@dataclass
class Split:
    # uint8, N x C x H x W, C in {1, 3}; MappedImages for an image folder read from the decoded-data
    # cache (memory-mapped: a batch reads its rows only).
    images: torch.Tensor | MappedImages
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
    cache: str = "off"  # decoded-data cache: hit | miss | refresh | off (src.data.cache)
    cache_entry: str | None = None  # the cache entry's folder the images and labels were read from
    load_s: float | None = None  # wall time of load_dataset

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def resize_uint8(images: torch.Tensor, size: int, chunk: int = 512) -> torch.Tensor:
    """Square-resize a uint8 N x C x H x W tensor (antialiased bilinear), in chunks to bound memory.
    Images of the right size are returned as they are (mapped ones stay mapped, unread)."""
    if images.shape[-2:] == (size, size):
        return images.contiguous()
    if isinstance(images, MappedImages):  # not made by any loader today: read them whole, as a tensor
        images = images[:]
    out = []
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].float()
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(x.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def _one_line(err: BaseException) -> str:
    """`Type: message` on one line: library messages (torchvision's download errors, Pillow's)
    can span several lines, and a user error is one line on stderr. Other control characters (a
    file name's escape sequence quoted in the message) are escaped, as `shown` does."""
    text = " ".join(str(err).split())
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def to_uint8(array: np.ndarray, where: str, full_scale: int | None = None) -> np.ndarray:
    """Pixel data of any supported type at its real value range, as uint8 0..255.

    The one conversion every loader uses (image files, .npz arrays, torchvision arrays), so no
    loader can clip, wrap or round a value range it does not know. uint8 is taken as is, bool as
    0/255, floats must be finite and in [0, 1]. Integers are scaled from `full_scale` when the
    source declares its bit depth (a TIFF's BitsPerSample, a 16-bit PNG/PGM), from 65535 for
    uint16, and otherwise from the smallest of 8, 16 or 32 bits that holds the maximum: the
    container alone does not say the depth (numpy makes int64 arrays of 8-bit data, Pillow reads
    every integer image as 32-bit mode I). Anything else is a ConfigError naming `where`.
    """
    kind = array.dtype.kind
    if array.dtype == np.uint8:
        return array
    if kind == "b":
        return array.astype(np.uint8) * np.uint8(255)
    if kind == "f":
        if array.size and not np.isfinite(array).all():
            raise ConfigError(f"{where}: non-finite pixel values (NaN or inf)")
        lo, hi = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
        if lo < 0 or hi > 1:
            raise ConfigError(f"{where}: float pixel values outside [0, 1] (min {lo:g}, max {hi:g}); "
                              "store images as 8- or 16-bit integers or as floats in [0, 1]")
        scaled = (array.astype(np.float32) if array.dtype.itemsize < 4 else array) * 255  # float16 lacks the precision
        return np.rint(scaled, out=scaled).astype(np.uint8)
    if kind in "iu":
        if array.size == 0:
            return array.astype(np.uint8)
        lo, hi = int(array.min()), int(array.max())
        if lo < 0:
            raise ConfigError(f"{where}: negative pixel values (min {lo}); expected unsigned image data")
        if full_scale is None:
            if kind == "u" and array.dtype.itemsize == 2:  # uint16 in either byte order
                full_scale = 65535
            else:
                full_scale = next((2**bits - 1 for bits in (8, 16, 32) if hi < 2**bits), None)
                if full_scale is None:
                    raise ConfigError(f"{where}: integer pixel values up to {hi} do not fit 32 bits")
        if hi > full_scale:
            raise ConfigError(f"{where}: pixel values up to {hi} exceed the declared full scale {full_scale}")
        if full_scale == 255:
            return array.astype(np.uint8)
        # Rounded to nearest in integer arithmetic: 16-bit 32768 -> 128, 65535 -> 255.
        return ((array.astype(np.int64) * 255 + full_scale // 2) // full_scale).astype(np.uint8)
    raise ConfigError(f"{where}: unsupported pixel type {array.dtype} (expected integer, bool or float images)")


def _to_nchw(array: np.ndarray, where: str) -> torch.Tensor:
    """N x H x W or N x H x W x C image data (any supported pixel type) to uint8 N x C x H x W."""
    if not (array.ndim == 3 or (array.ndim == 4 and array.shape[-1] in (1, 3))):
        raise ConfigError(f"{where}: images of shape {tuple(array.shape)} are neither N x H x W "
                          "nor N x H x W x C with 1 or 3 channels")
    t = torch.from_numpy(np.ascontiguousarray(to_uint8(array, where)))
    return t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2).contiguous()


INT64_MAX = 2**63 - 1


def _to_labels(array, where: str) -> torch.Tensor:
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


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out) with `fraction` of each class held out, seeded."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    keep, held = train_test_split(idx, test_size=fraction, random_state=seed, stratify=labels)
    return np.sort(keep), np.sort(held)


def _subset(split: Split, idx: np.ndarray) -> Split:
    if isinstance(split.images, MappedImages):  # a narrower index, no pixel read
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
    return _subset(split, np.sort(np.concatenate(keep)))


def _label_name(classes: list[str], label: int) -> str:
    """A label as the user knows it: `2`, or `2 ('bird')` when the class has a name (a folder)."""
    if 0 <= label < len(classes) and classes[label] != str(label):
        return f"{label} ({classes[label]!r})"
    return str(label)


def _label_list(classes: list[str], labels) -> str:
    labels = sorted(int(x) for x in labels)
    shown = ", ".join(_label_name(classes, x) for x in labels[:10])
    return shown + (f", ... ({len(labels)} in all)" if len(labels) > 10 else "")


def _split_off(split: Split, fraction: float, seed: int, *, dataset: str, classes: list[str], source: str,
               held: str, option: str) -> tuple[Split, Split]:
    """Carve a stratified `held` split (val or test) off `source`, refusing what sklearn would
    refuse with a traceback, in the user's terms: which class has too few images, and how many."""
    labels = split.labels.numpy()
    values, counts = np.unique(labels, return_counts=True)
    for label, count in zip(values.tolist(), counts.tolist()):
        if count < 2:
            raise ConfigError(
                f"dataset {dataset}: class {_label_name(classes, label)} has {count} image in {source}; "
                f"splitting off {held} (stratified, {option}={fraction:g}) needs at least 2 images per class")
    n = len(labels)
    n_held = math.ceil(fraction * n)  # sklearn's rounding of test_size
    for part, size in ((held, n_held), (f"the rest of {source}", n - n_held)):
        if size < len(values):
            raise ConfigError(
                f"dataset {dataset}: splitting off {held} ({option}={fraction:g} of {n} {source} images) leaves "
                f"{size} images in {part} for {len(values)} classes; stratifying needs at least one per class")
    keep, held_idx = stratified_split(labels, fraction, seed)
    return _subset(split, keep), _subset(split, held_idx)


def _load_digits(cfg: DataConfig) -> DataBundle:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 8x8 images with values 0..16; scale to the 0..255 range the pretrained normalisation expects.
    images = torch.from_numpy((digits.images * (255.0 / 16.0)).round().astype(np.uint8)).unsqueeze(1)
    full = Split(images, torch.from_numpy(digits.target.astype(np.int64)))
    classes = [str(c) for c in range(10)]
    where = {"dataset": cfg.name or "digits", "classes": classes}
    rest, test = _split_off(full, cfg.test_fraction, cfg.split_seed, **where, source="digits", held="test",
                            option="dataset.test_fraction")
    train, val = _split_off(rest, cfg.val_fraction / (1 - cfg.test_fraction), cfg.split_seed, **where,
                            source="train", held="val", option="dataset.val_fraction")
    note = f"stratified split seed={cfg.split_seed}: test {cfg.test_fraction}, val {cfg.val_fraction}"
    return DataBundle("digits", classes, train, val, test, note)


def _medmnist_file(cfg: DataConfig) -> Path:
    if cfg.root:
        path = Path(cfg.root)
        if path.is_file():
            return path
        if path.is_dir():
            raise ConfigError(f"dataset.root={cfg.root!r} is a directory; expected a .npz file")
        if not cfg.download:
            raise ConfigError(f"dataset.root={cfg.root!r}: no such .npz file")
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
        raise ConfigError(f"dataset.flag={cfg.flag}: download into {root} failed ({_one_line(err)})") from None
    return root / f"{cfg.flag}.npz"


NPZ_ARRAYS = [f"{split}_{kind}" for split in ("train", "val", "test") for kind in ("images", "labels")]


def _read_npz(path: Path, names: list[str], where: str) -> dict[str, np.ndarray]:
    """The named arrays of a .npz archive; anything that is not one (random bytes, text, a .npy,
    a truncated zip, an object array that would need pickle) is a one-line ConfigError."""
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as err:
        raise ConfigError(f"{where}: cannot be read ({_one_line(err)})") from None
    if magic.startswith(b"\x93NUMPY"):
        raise ConfigError(f"{where}: a single .npy array, not a .npz archive of named arrays")
    if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        raise ConfigError(f"{where}: not a .npz archive (no zip signature at its start)")
    try:
        # allow_pickle=False: a dataset file must not run code when it is read.
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ConfigError(f"{where}: corrupt .npz archive ({_one_line(err)})") from None
    arrays = {}
    with npz:
        for name in names:
            if name not in npz.files:
                raise ConfigError(f"{where}: missing array '{name}' (MedMNIST layout)")
            try:
                arrays[name] = npz[name]
            # Object arrays raise ValueError under allow_pickle=False; a damaged member raises
            # BadZipFile, zlib.error, EOFError, NotImplementedError (unknown compression) and more.
            except Exception as err:
                raise ConfigError(f"{where}: array '{name}' cannot be read ({_one_line(err)})") from None
    return arrays


def _load_medmnist(cfg: DataConfig) -> DataBundle:
    path = _medmnist_file(cfg)
    where = f"dataset.root={str(path)!r}"
    arrays = _read_npz(path, NPZ_ARRAYS, where)
    splits = {}
    for split in ("train", "val", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if labels.ndim == 2 and labels.shape[1] != 1:
            raise ConfigError(f"{where}: multi-label targets {labels.shape} are not supported")
        labels = _to_labels(labels, f"{where} array '{split}_labels'")
        images = _to_nchw(images, f"{where} array '{split}_images'")  # refuses a 0-d array, which has no len()
        if len(labels) != len(images):
            raise ConfigError(f"{where}: {split} has {len(images)} images ('{split}_images') but {len(labels)} "
                              f"labels ('{split}_labels'); they must pair one to one")
        splits[split] = Split(images, labels)
    train_labels = splits["train"].labels
    if len(train_labels) and int(train_labels.max()) >= len(train_labels):
        # Labels number the classes 0..K-1 and every class needs a training image, so this many
        # classes cannot be right; refusing here avoids building a list of K class names.
        raise ConfigError(f"{where}: train labels go up to {int(train_labels.max())} with only {len(train_labels)} "
                          "train images; labels must number the classes 0..K-1 without gaps")
    num_classes = int(train_labels.max()) + 1 if len(train_labels) else 0
    name = cfg.flag or path.stem
    return DataBundle(name, [str(c) for c in range(num_classes)], splits["train"], splits["val"], splits["test"],
                      "official MedMNIST splits")


class _UnreadableImage(Exception):
    """A file Pillow could not decode (bad_images decides: skip it or stop)."""


def _full_scale(img) -> int | None:
    """The full-scale value an integer image's file declares, or None when it declares none."""
    if img.mode == "I;16S":
        return 32767
    if img.mode.startswith("I;16"):
        return 65535
    if img.mode != "I":
        return None
    if img.format in ("PNG", "PPM"):
        return 65535  # Pillow reads 16-bit PNG/PGM data (any maxval) as mode I scaled to 16 bits
    tags = getattr(img, "tag_v2", None)  # TIFF: BitsPerSample, and SampleFormat 2 = signed
    if tags is not None and 258 in tags:
        bits, fmt = tags[258], tags.get(339, 1)
        bits = bits[0] if isinstance(bits, tuple) else bits
        fmt = fmt[0] if isinstance(fmt, tuple) else fmt
        return 2 ** (bits - 1) - 1 if fmt == 2 else 2**bits - 1
    return None


def image_to_uint8(img, where: str, full_scale: int | None = None) -> np.ndarray:
    """A decoded PIL image as uint8 H x W (grey) or H x W x 3 (colour) at its real value range.

    `convert("RGB")` would clip 16-bit and float data (a 16-bit X-ray comes out white), so those
    modes go through `to_uint8`. Transparency is composited onto white rather than dropped: the
    colour stored under transparent pixels is arbitrary (often black, sometimes leftover content),
    and white is how the image looks on a page.
    """
    mode = img.mode
    if mode in ("L", "RGB"):
        return np.asarray(img)
    if mode == "1":
        return np.asarray(img.convert("L"))
    if mode in ("I", "F") or mode.startswith("I;16"):
        array = np.asarray(img)
        return to_uint8(array.astype(array.dtype.newbyteorder("=")), where, full_scale)
    if "A" in mode or "a" in mode or "transparency" in img.info:
        rgba = np.asarray(img.convert("RGBA")).astype(np.int32)
        rgb, alpha = rgba[..., :3], rgba[..., 3:]
        return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
    return np.asarray(img.convert("RGB"))  # P, CMYK, YCbCr, LAB, HSV, RGBX


def _decode(path: Path, draft: int | None = None):
    """An image file upright (EXIF orientation applied) at its real value range, as a PIL image
    in mode L or RGB (8-bit), and Pillow's warnings about it as one line (or None).

    `draft`: a JPEG is decoded shrunk by 1/2, 1/4 or 1/8 (libjpeg's DCT scaling) while both sides
    stay >= `draft` pixels, which the later resize to `draft` needs anyway: a 12-megapixel photo
    decodes several times faster, with pixels close to a full decode's (docs/data.md)."""
    from PIL import Image, ImageOps

    try:
        # Pillow warns about damaged metadata (and images near the bomb limit) on stderr, several
        # lines each; they become one log line per file instead.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # recorded, whatever the caller's filters (even "error")
            with Image.open(path) as img:
                if draft and img.format == "JPEG":
                    img.draft(img.mode, (draft, draft))
                img.load()
                full_scale = _full_scale(img)  # read before exif_transpose, which may drop the tags
                # Phone photos store pixels as the sensor saw them plus an orientation tag.
                ImageOps.exif_transpose(img, in_place=True)  # in place: no copy of an untagged image
                # 8-bit L and RGB, the common case, skip a round trip through numpy.
                upright = img if img.mode in ("L", "RGB") else Image.fromarray(
                    image_to_uint8(img, shown(path), full_scale))
        note = "; ".join(" ".join(str(w.message).split()) for w in caught) if caught else None
        return upright, note
    except ConfigError:  # a value range refused by image_to_uint8: not a decoding failure
        raise
    # Pillow's plugins raise a wide range of types on hostile files (OSError, SyntaxError,
    # struct.error, EOFError, IndexError, KeyError, ZeroDivisionError, DecompressionBombError,
    # which is not an OSError) and the set changes between versions; Pillow's own fuzzer catches
    # Exception for that reason. Only Pillow's decoding and mode conversion run in this block
    # besides image_to_uint8 (whose refusals are re-raised above), so what it raises is the file's.
    except Exception as err:
        raise _UnreadableImage(_one_line(err)) from None


def _read_image(path: Path, size: int, draft: bool = False) -> tuple[np.ndarray, str | None]:
    """Decode, resize the short side to `size` and centre-crop to a square: uint8 3 x size x size,
    and the decode's warnings."""
    from PIL import Image

    img, note = _decode(path, size if draft else None)
    if img.mode != "RGB":
        img = img.convert("RGB")
    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    # A numpy slice, not img.crop: crop re-runs Pillow's decompression-bomb check on our own
    # already-decoded image, a warning (or error) that belongs to decoding alone.
    square = np.asarray(img, dtype=np.uint8)[top : top + size, left : left + size]
    return square.transpose(2, 0, 1), note


def _decode_chunk(paths: list[Path], size: int, draft: bool) -> list[tuple[np.ndarray | None, str, str | None]]:
    """Each file as (pixels, "ok", warnings) or (None, "unreadable" | "refused", why). Runs in a
    worker process: it returns failures instead of raising or logging, so that the parent handles
    them in file order, with the messages of a one-process decode."""
    out = []
    for path in paths:
        try:
            pixels, note = _read_image(path, size, draft)
            out.append((np.ascontiguousarray(pixels), "ok", note))
        except _UnreadableImage as err:
            out.append((None, "unreadable", str(err)))
        except ConfigError as err:
            out.append((None, "refused", str(err)))
    return out


DECODE_CHUNK = 32  # most files per task: enough to amortise a task's overhead, few for a smooth bar
PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_POLL_S = 0.5
USE_PDEATHSIG = True  # False: workers poll their parent's pid instead (what other systems get; tests use it)


class DecodeWorkerError(RuntimeError):
    """A decoding worker process ended without a result (killed: the OOM killer, a signal)."""


def _worker_start(parent: int) -> None:
    """First thing in each decoding worker: it must not outlive the process that started it, which
    may be killed (SIGKILL, the OOM killer) or end on an error without shutting the pool down. An
    orphaned worker would hold the cache file it inherited open, its disk space in use after the
    file is deleted, and keep decoding for nobody.

    On Linux the kernel kills the worker when its parent dies (PR_SET_PDEATHSIG). That fires when
    the parent *thread* that forked it ends; the pool is made, used and shut down within one call
    of `_decoded`, in one thread, so that thread outlives it. Elsewhere, or if prctl fails, a thread
    polls the parent's pid. Signals: a worker forked from `python -m src.train` inherits its SIGTERM
    handler (raise KeyboardInterrupt, for a run that records being interrupted), under which a
    worker sent SIGTERM returns the interrupt to its parent as if the parent had been stopped; a
    worker dies of SIGTERM instead. Ctrl-C reaches the whole process group: workers ignore it, and
    the parent, interrupted, stops the pool."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watched = True
    if USE_PDEATHSIG and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            watched = libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0
        except (OSError, AttributeError):
            watched = True
    if os.getppid() != parent:  # the parent died before the death signal was set
        os._exit(1)
    if watched:
        threading.Thread(target=_watch_parent, args=(parent,), name="watch-parent", daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(1)


def _decoded(files: list[Path], size: int, draft: bool, workers: int, progress: bool, folder: Path):
    """(file, result) of `_decode_chunk` for every file, in order, decoded by `workers` processes.
    A worker that dies is a DecodeWorkerError naming `folder`."""
    from tqdm.auto import tqdm

    # Smaller chunks for a small folder, so that every worker gets some (4 each, for balance).
    per_chunk = max(1, min(DECODE_CHUNK, -(-len(files) // (4 * max(1, workers)))))
    chunks = [files[i : i + per_chunk] for i in range(0, len(files), per_chunk)]
    # disable=None: a bar only on a terminal, none in a log file (as the training loop's).
    bar = tqdm(total=len(files), desc=f"decoding {shown(folder)}", unit="img", leave=False,
               disable=None if progress else True)
    pool, finished = None, False
    try:
        # A daemonic process (some launchers' workers) may not start processes: decode in it.
        if workers > 1 and len(chunks) > 1 and not multiprocessing.current_process().daemon:
            # fork: workers start in milliseconds with this module loaded (spawn re-imports torch,
            # seconds each); they run only Pillow and numpy, never torch, so its threads are no risk.
            ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
            pool = concurrent.futures.ProcessPoolExecutor(min(workers, len(chunks)), mp_context=ctx,
                                                          initializer=_worker_start, initargs=(os.getpid(),))
            results = pool.map(_decode_chunk, chunks, [size] * len(chunks), [draft] * len(chunks))
        else:
            results = (_decode_chunk(chunk, size, draft) for chunk in chunks)
        for chunk, result in zip(chunks, results):
            yield from zip(chunk, result)
            bar.update(len(chunk))
        finished = True
    except BrokenProcessPool:
        raise DecodeWorkerError(f"a process decoding {shown(folder)} ended abruptly (killed by a signal or the "
                                "OOM killer); dataset.num_workers=1 decodes in the run's own process") from None
    finally:
        bar.close()
        if pool is not None:
            if not finished:  # an error or an interrupt here: the workers stop now, not after their chunks
                _stop_workers(pool)
            pool.shutdown(wait=True, cancel_futures=True)


def _stop_workers(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """End a pool's worker processes (SIGTERM, which they die of) without waiting for their tasks:
    Python 3.14's terminate_workers(), or what it does on earlier versions."""
    if hasattr(pool, "terminate_workers"):
        pool.terminate_workers()
        return
    for proc in list(getattr(pool, "_processes", {}).values()):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            proc.terminate()


def class_names(folder: Path) -> list[str]:
    """An image folder's class names: its sub-folders (or links to folders), sorted, leaving out
    hidden ones (`.git`, `.ipynb_checkpoints`: src.data.paths.hidden)."""
    return sorted(d.name for d in folder.iterdir() if not hidden(d.name) and d.is_dir())


def class_folders(folder: Path, where: str | None = None) -> list[str]:
    """`class_names`; ConfigError naming `where` (default: the folder) when there are none."""
    found = class_names(folder)
    if not found:
        raise ConfigError(f"{where or shown(folder)}: no class folders (expected {shown(folder)}/<class>/<images>)")
    return found


def image_files(folder: Path) -> list[Path]:
    """A class folder's image files, at any depth, sorted: names with an image suffix that are not
    folders, leaving out hidden files and everything in hidden folders (a notebook's
    `.ipynb_checkpoints/` copies would be duplicates). Links to files count as files, a dangling or
    looping one too (it is then an unreadable image, with or without the cache); links to folders
    are not followed (the same as Path.rglob)."""
    return sorted(p for p in folder.rglob("*")
                  if p.suffix.lower() in IMAGE_SUFFIXES and not hidden_below(p, folder) and not p.is_dir())


def _list_folder(folder: Path, classes: list[str] | None) -> tuple[list[Path], list[int], list[str]]:
    """The image files of `folder/<class>/` (sorted), their labels and the class names."""
    found = class_folders(folder)
    if classes is not None and found != classes:
        raise ConfigError(f"{shown(folder)}: class folders {found} differ from train's {classes}")
    files, labels = [], []
    for label, cls in enumerate(found):
        members = image_files(folder / cls)
        if not members:
            raise ConfigError(f"{shown(folder / cls)}: class folder has no images")
        files += members
        labels += [label] * len(members)
    return files, labels, found


@dataclass
class _Decode:
    """How a folder's files are decoded (from DataConfig) and what decoding reported."""

    size: int
    draft: bool
    bad: str
    workers: int
    progress: bool
    skipped: list[str] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (file, Pillow's warnings)


def _decode_into(out: np.ndarray | RowFile, folder: Path, files: list[Path], labels: list[int], classes: list[str],
                 how: _Decode) -> np.ndarray:
    """Decode `files` into the rows of `out` (readable files packed from row 0, in order); the
    labels of the rows written. Unreadable files are skipped or stop the load (dataset.bad_images)."""
    kept: list[int] = []
    readable = dict.fromkeys(range(len(classes)), 0)
    results = _decoded(files, how.size, how.draft, how.workers, how.progress, folder)
    with contextlib.closing(results):  # a failure stops the workers now, not when the generator is collected
        for (file, (pixels, status, text)), label in zip(results, labels):
            _take(out, kept, readable, file, pixels, status, text, label, how)
    for label, count in readable.items():
        if not count:
            raise ConfigError(f"{shown(folder / classes[label])}: none of its {labels.count(label)} image files "
                              "is readable")
    return np.array(kept, dtype=np.int64)


def _take(out: np.ndarray | RowFile, kept: list[int], readable: dict[int, int], file: Path, pixels: np.ndarray | None,
          status: str, text: str | None, label: int, how: _Decode) -> None:
    """One decoded file into the next row of `out`; a failure skipped or raised (dataset.bad_images)."""
    if status == "refused":
        raise ConfigError(text)
    if status == "unreadable":
        if how.bad == "fail":
            raise ConfigError(f"{shown(file)}: unreadable image ({text}); "
                              "dataset.bad_images=skip leaves such files out")
        how.skipped.append(str(file))
        return
    if text:
        log.warning("%s: %s", shown(file), text)
        how.notes.append((str(file), text))
    out[len(kept)] = pixels
    kept.append(label)
    readable[label] += 1


def _decode_setup(cfg: DataConfig, progress: bool) -> _Decode:
    workers = cfg.num_workers if cfg.num_workers is not None else (os.cpu_count() or 1)
    return _Decode(cfg.image_size, cfg.jpeg_draft, cfg.bad_images, workers, progress)


def part_dir(root: Path, part: str) -> Path:
    """The folder of a split: root/train, root/val, root/test; or root itself when it holds the
    class folders directly (one folder of classes, as most photo collections come: val and test
    are then split off it)."""
    return root / part if (root / "train").is_dir() else root


def _folder_parts(root: Path) -> tuple[dict[str, tuple[list[Path], list[int]]], list[str]]:
    """The files and labels of train/ (or of root's own class folders) and of val/ and test/ where
    present; train's class names."""
    files, labels, classes = _list_folder(part_dir(root, "train"), None)
    parts = {"train": (files, labels)}
    for part in ("val", "test") if (root / "train").is_dir() else ():
        if (root / part).is_dir():
            files, labels, _ = _list_folder(root / part, classes)
            parts[part] = (files, labels)
    return parts, classes


def _decode_parts(root: Path, parts, classes, how: _Decode, allocate) -> dict[str, tuple[Any, np.ndarray]]:
    """Decode each part into `allocate(part, n)`'s array: {part: (array, labels of its rows)}."""
    out = {}
    for part, (files, labels) in parts.items():
        array = allocate(part, len(files))
        kept = _decode_into(array, part_dir(root, part), files, labels, classes, how)
        out[part] = (array, kept)
    return out


def _cache_writer(root: Path, parts, classes, how: _Decode):
    """What writes a cache entry's files into a folder and returns its meta (see src.data.cache)."""

    def write(folder: Path) -> dict[str, Any]:
        opened: list[RowFile] = []

        def allocate(part: str, n: int) -> RowFile:
            opened.append(RowFile(folder / f"{part}.npy", n, (3, how.size, how.size)))
            return opened[-1]

        try:
            decoded = _decode_parts(root, parts, classes, how, allocate)
            counts = {}
            for part, (rows, kept) in decoded.items():
                info = rows.close()  # its count is len(kept): one row per kept label
                np.save(folder / f"{part}.labels.npy", kept.astype("<i8"))
                counts[part] = info | {"labels_crc32": labels_crc(kept)}
        finally:
            for rows in opened:  # closed already unless something failed
                rows.discard()
        return {"parts": counts, "classes": classes, "skipped": how.skipped, "notes": how.notes}

    return write


def _read_cached(cfg: DataConfig, root: Path, parts, classes, how: _Decode) -> tuple[dict[str, Split], str, Path] | None:
    """The parts from the decoded-data cache (built on a miss), "hit" | "miss" | "refresh" and the
    entry's folder; None when the entry cannot be written (a read-only folder, a full disk, a quota:
    logged, and the caller decodes in memory as with dataset.cache=off)."""
    cache_dir = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()
    settings = {"image_size": how.size, "jpeg_draft": how.draft, "bad_images": how.bad, "pillow": _pillow_version()}
    key = cache_key(root, {part: files for part, (files, _) in parts.items()}, settings)
    entry = lookup(cache_dir, key, set(parts), classes, (3, how.size, how.size)) if cfg.cache == "auto" else None
    status = "hit"
    if entry is not None:
        for file, text in entry.meta["notes"]:
            log.warning("%s: %s", shown(file), text)  # a hit warns as the decode that built it did
        how.skipped += entry.meta["skipped"]
    else:
        status = "refresh" if cfg.cache == "refresh" else "miss"
        try:
            entry = build(cache_dir, key, _cache_writer(root, parts, classes, how),
                          replace=cfg.cache == "refresh" or (cache_dir / key).exists())
        except OSError as err:
            log.warning("dataset.cache_dir=%s cannot be written (%s); decoding without the cache, in memory "
                        "(dataset.cache_dir=<folder> puts the cache elsewhere, dataset.cache=off skips it)",
                        shown(cache_dir), _one_line(err))
            return None
    log.info("decoded-data cache %s: %s", status, shown(entry.path))
    splits = {part: Split(entry.images(part), torch.from_numpy(entry.labels(part))) for part in parts}
    return splits, status, entry.path


def _pillow_version() -> str:
    import PIL

    return PIL.__version__


@dataclass
class Parts:
    """An image folder's split folders, decoded or read from the cache."""

    splits: dict[str, Split]  # train, and val and test where the folder has them
    classes: list[str]
    skipped: list[str]  # unreadable files left out (dataset.bad_images=skip)
    cache: str  # hit | miss | refresh | off
    entry: Path | None = None  # the cache entry read from, if any


def read_parts(cfg: DataConfig, root: Path, progress: bool) -> Parts:
    """Every split folder of `root` decoded, or read from the decoded-data cache."""
    parts, classes = _folder_parts(root)
    how = _decode_setup(cfg, progress)
    if cfg.cache != "off":
        cached = _read_cached(cfg, root, parts, classes, how)
        if cached is not None:
            return Parts(cached[0], classes, how.skipped, cached[1], cached[2])
        how = _decode_setup(cfg, progress)  # a failed cache build may have counted some files already
    decoded = _decode_parts(root, parts, classes, how,
                            lambda part, n: np.empty((n, 3, how.size, how.size), dtype=np.uint8))
    splits = {part: Split(torch.from_numpy(array[: len(kept)]), torch.from_numpy(kept))
              for part, (array, kept) in decoded.items()}
    return Parts(splits, classes, how.skipped, "off")


def _load_imagefolder(cfg: DataConfig, progress: bool = False) -> DataBundle:
    root = Path(cfg.root or "")
    if not root.is_dir():
        raise ConfigError(f"dataset.root={cfg.root!r}: no such folder (expected train/<class>/ images, "
                          "or <class>/ images)")
    name = cfg.name or root.name
    found = class_folders(part_dir(root, "train"))
    if len(found) == 1:  # before decoding anything; and the cache entry is not to blame (_check_labels_from)
        raise _one_class(name, found, [0])
    read = read_parts(cfg, root, progress)
    parts, classes, skipped = read.splits, read.classes, read.skipped
    train = parts["train"]
    where = {"dataset": name, "classes": classes, "source": "train"}
    notes = []
    if "val" in parts:
        val = parts["val"]
    else:
        train, val = _split_off(train, cfg.val_fraction, cfg.split_seed, **where, held="val",
                                option="dataset.val_fraction")
        notes.append(f"val = stratified {cfg.val_fraction} of train (seed {cfg.split_seed})")
    if "test" in parts:
        test = parts["test"]
    else:
        train, test = _split_off(train, cfg.test_fraction, cfg.split_seed, **where, held="test",
                                 option="dataset.test_fraction")
        notes.append(f"test = stratified {cfg.test_fraction} of train (seed {cfg.split_seed})")
    if skipped:
        log.warning("skipped %d unreadable image files (dataset.bad_images=skip), e.g. %s", len(skipped),
                    shown(skipped[0]))
    return DataBundle(name, classes, train, val, test, "; ".join(notes) or "folders train/val/test", skipped,
                      cache=read.cache, cache_entry=str(read.entry) if read.entry else None)


def _tv_to_split(dataset, size: int, where: str, bad: str, skipped: list[str]) -> Split:
    from PIL import Image

    # MNIST- and CIFAR-style datasets hold every image in one array: take it whole
    # (load_dataset resizes after subsampling).
    data, targets = getattr(dataset, "data", None), getattr(dataset, "targets", None)
    if targets is not None and isinstance(data, (np.ndarray, torch.Tensor)) and data.ndim in (3, 4):
        array = data.numpy() if isinstance(data, torch.Tensor) else data
        labels = _to_labels(targets, f"{where} targets")
        if len(labels) != len(array):
            raise ConfigError(f"{where}: {len(array)} images but {len(labels)} targets; they must pair one to one")
        return Split(_to_nchw(array, f"{where} data"), labels)
    images, labels = [], []
    for i in range(len(dataset)):
        try:
            img, label = dataset[i]  # decodes the image file, if the dataset keeps files
        except Exception as err:  # Pillow's decode failures, as in _decode
            if bad == "fail":
                raise ConfigError(f"{where} item {i}: unreadable image ({_one_line(err)}); "
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


def _load_torchvision(cfg: DataConfig) -> DataBundle:
    import torchvision.datasets as tvd

    cls = getattr(tvd, cfg.tv_name or "", None)
    if cls is None:
        raise ConfigError(f"dataset.tv_name={cfg.tv_name!r} is not a torchvision dataset")
    root = cfg.root or str(Path.home() / ".torchvision")
    params = inspect.signature(cls).parameters
    name = cfg.name or cfg.tv_name.lower()

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
        # "Dataset not found or corrupted" (RuntimeError), a failed download (URLError is an
        # OSError; torchvision wraps some in RuntimeError), a damaged archive.
        except (OSError, RuntimeError, EOFError, zipfile.BadZipFile, tarfile.TarError) as err:
            why = "download failed" if cfg.download else "not found offline (dataset.download=false)"
            raise ConfigError(f"dataset.tv_name={cfg.tv_name}: {why} under root={root} ({_one_line(err)})") from None

    skipped: list[str] = []
    train_ds = get("train") or get("trainval")
    if train_ds is None:
        raise ConfigError(f"dataset.tv_name={cfg.tv_name}: no train split found")
    train = _tv_to_split(train_ds, cfg.image_size, f"dataset.tv_name={cfg.tv_name} train", cfg.bad_images, skipped)
    classes = [str(c) for c in getattr(train_ds, "classes", range(int(train.labels.max()) + 1))]
    where = {"dataset": name, "classes": classes, "source": "train"}
    val_ds, test_ds = get("val"), get("test")
    notes = []
    test = (_tv_to_split(test_ds, cfg.image_size, f"dataset.tv_name={cfg.tv_name} test", cfg.bad_images, skipped)
            if test_ds is not None else None)
    if test is None:
        train, test = _split_off(train, cfg.test_fraction, cfg.split_seed, **where, held="test",
                                 option="dataset.test_fraction")
        notes.append(f"test = stratified {cfg.test_fraction} of train (seed {cfg.split_seed})")
    val = (_tv_to_split(val_ds, cfg.image_size, f"dataset.tv_name={cfg.tv_name} val", cfg.bad_images, skipped)
           if val_ds is not None else None)
    if val is None:
        train, val = _split_off(train, cfg.val_fraction, cfg.split_seed, **where, held="val",
                                option="dataset.val_fraction")
        notes.append(f"val = stratified {cfg.val_fraction} of train (seed {cfg.split_seed})")
    if skipped:
        log.warning("skipped %d unreadable images (dataset.bad_images=skip), e.g. %s", len(skipped), skipped[0])
    return DataBundle(name, classes, train, val, test, "; ".join(notes) or "official splits", skipped)


LOADERS = {
    "digits": _load_digits,
    "medmnist": _load_medmnist,
    "imagefolder": _load_imagefolder,
    "torchvision": _load_torchvision,
}


def _one_class(name: str, classes: list[str], labels) -> ConfigError:
    return ConfigError(f"dataset {name}: train has a single class ({_label_list(classes, labels)}); "
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
            raise ConfigError(f"dataset {name}: negative labels in {split_name} ({_label_list(classes, negative)}); "
                              "labels number the classes 0..K-1")
    outside = [x for x in seen["train"] if not 0 <= x < len(classes)]
    if outside:
        raise ConfigError(f"dataset {name}: train labels {_label_list(classes, outside)} are outside "
                          f"0..{len(classes) - 1} ({len(classes)} classes)")
    for split_name in ("val", "test"):  # covers their labels outside the class list too
        extra = seen[split_name] - seen["train"]
        if extra:
            verb = "appears" if len(extra) == 1 else "appear"
            raise ConfigError(f"dataset {name}: label{'s' if len(extra) > 1 else ''} {_label_list(classes, extra)} "
                              f"{verb} in {split_name} but not in train")
    if len(seen["train"]) < 2:
        raise _one_class(name, classes, seen["train"])
    missing = set(range(len(classes))) - seen["train"]
    if missing:
        raise ConfigError(f"dataset {name}: class{'es' if len(missing) > 1 else ''} {_label_list(classes, missing)} "
                          f"ha{'ve' if len(missing) > 1 else 's'} no images in train (train labels: "
                          f"{_label_list(classes, seen['train'])}); labels must number the classes 0..K-1 without gaps")


def _check_labels_from(bundle: DataBundle) -> None:
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


def load_dataset(cfg: DataConfig, progress: bool = False) -> DataBundle:
    """Load, split, check the labels, subsample and resize to `cfg.image_size`. `progress`: a bar
    while image files decode (on a terminal only)."""
    start = time.perf_counter()
    bundle = _load_imagefolder(cfg, progress) if cfg.kind == "imagefolder" else LOADERS[cfg.kind](cfg)
    if cfg.name:
        bundle.name = cfg.name
    _check_labels_from(bundle)
    if cfg.train_per_class is not None:
        bundle.train = limit_per_class(bundle.train, cfg.train_per_class, cfg.split_seed)
        _check_labels_from(bundle)  # subsampling keeps every class today; this keeps it so
    for split_name in ("train", "val", "test"):
        split = getattr(bundle, split_name)
        setattr(bundle, split_name, Split(resize_uint8(split.images, cfg.image_size), split.labels))
    bundle.load_s = time.perf_counter() - start
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
