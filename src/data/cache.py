"""Decoded image folders on disk: decode once per dataset, memory-map on every later run.

An entry is a folder `<cache_dir>/<key>/` holding one raw uint8 N x 3 x S x S array per split folder
(`<part>.npy`), its labels (`<part>.labels.npy`) and `meta.json` (classes, counts, skipped files,
decode notes). The key hashes everything the pixels depend on: the folder, each file's relative path,
size and modification time, the image size and the decode settings, and `FORMAT_VERSION`.

Writing is atomic: an entry is built in a temporary folder beside it and renamed into place, so a
reader sees a whole entry or none. Two processes that miss together both decode; the first rename
wins and the second keeps the winner's entry (same key, same pixels). Reading memory-maps the
arrays: nothing is read until a batch asks for its rows (`MappedImages`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import mmap
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

# Bump when what an entry holds, or how its pixels are made, changes: old entries stop matching.
FORMAT_VERSION = 1
META_FILE = "meta.json"
PROJECT = "ft-compare"


def default_cache_dir() -> Path:
    """The user's cache folder for this project: platformdirs' answer when it is installed, else
    $XDG_CACHE_HOME or ~/.cache (the XDG convention, what platformdirs says on Linux)."""
    try:
        import platformdirs
    except ImportError:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base) / PROJECT
    return Path(platformdirs.user_cache_dir(PROJECT, appauthor=False))


def cache_key(root: Path, parts: dict[str, list[Path]], settings: dict[str, Any]) -> str:
    """The entry's name: a hash of the folder, every file's (relative path, size, mtime_ns) and the
    decode settings. The absolute folder is part of it so that two folders never share an entry on
    a coincidence of sizes and times; a moved folder decodes once more."""
    digest = hashlib.sha256()
    head = {"format": FORMAT_VERSION, "root": str(root.resolve()), "settings": settings}
    digest.update(json.dumps(head, sort_keys=True).encode())
    for part, files in sorted(parts.items()):
        digest.update(f"\0{part}\0".encode())
        for file in files:
            st = file.stat()
            digest.update(f"{file.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def drop_pages(array: np.ndarray, flush: bool = False) -> None:
    """Drop a memory-mapped array's pages from this process (written ones saved first, `flush`),
    so that its resident size does not grow with the file; the OS keeps them in its page cache.
    A no-op for an in-memory array."""
    handle = getattr(array, "_mmap", None)
    if handle is None or not hasattr(mmap, "MADV_DONTNEED"):
        return
    try:
        if flush:
            handle.flush()
        handle.madvise(mmap.MADV_DONTNEED)
    except (OSError, ValueError):  # a closed or unusual mapping: keeping the pages is harmless
        pass


class MappedImages:
    """uint8 N x C x H x W images in a memory-mapped array, seen through an optional row index.

    Stands in for a split's image tensor where the data may not fit in memory: indexing (an int, a
    slice, an index tensor or array) reads just those rows and returns a tensor; `subset` narrows the
    index without reading anything. After each read the mapping's pages are dropped from this
    process (MADV_DONTNEED): they stay in the OS page cache, so a later epoch reads them from memory
    when there is room, but the process's resident size stays at a batch instead of growing to the
    whole file over an epoch. `.to(cpu)` is itself; `.to(cuda)` copies everything to the device.
    """

    dtype = torch.uint8
    device = torch.device("cpu")
    ndim = 4

    def __init__(self, array: np.ndarray, index: np.ndarray | None = None) -> None:
        self.array = array
        self.index = index

    def __len__(self) -> int:
        return len(self.index) if self.index is not None else len(self.array)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self.array.shape[1:]))

    @property
    def nbytes(self) -> int:
        return len(self) * int(np.prod(self.array.shape[1:]))

    def subset(self, rows: np.ndarray) -> MappedImages:
        """These images at positions `rows`, still mapped (no pixel is read)."""
        rows = np.asarray(rows)
        rows = np.flatnonzero(rows) if rows.dtype == bool else rows.astype(np.int64)
        return MappedImages(self.array, rows if self.index is None else self.index[rows])

    def _rows(self, idx: Any) -> Any:
        if isinstance(idx, torch.Tensor):
            idx = idx.cpu().numpy()
        if isinstance(idx, np.ndarray) and idx.dtype == bool:  # a mask, as tensors take one
            idx = np.flatnonzero(idx)
        if self.index is None:
            return idx
        return self.index[idx]

    def __getitem__(self, idx: Any) -> torch.Tensor:
        rows = self._rows(idx)
        if isinstance(rows, slice):
            out = np.array(self.array[rows])
        elif np.ndim(rows) == 0:
            out = np.array(self.array[int(rows)])
        else:
            out = np.take(self.array, rows, axis=0)
        self._release()
        return torch.from_numpy(out)

    def _release(self) -> None:
        drop_pages(self.array)

    def contiguous(self) -> MappedImages:
        return self

    def to(self, device: torch.device | str, *args: Any, **kwargs: Any) -> MappedImages | torch.Tensor:
        """Itself on the CPU (batches are gathered from the mapping); on another device, a copy of
        every image there, filled in chunks so that host memory never holds them all."""
        device = torch.device(device)
        if device.type == "cpu":
            return self
        out = torch.empty(tuple(self.shape), dtype=torch.uint8, device=device)
        for start in range(0, len(self), 1024):
            out[start : start + 1024] = self[start : start + 1024].to(device)
        return out


class Entry:
    """A complete cache entry on disk."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path, self.meta = path, meta

    def images(self, part: str) -> MappedImages:
        count = self.meta["parts"][part]["count"]
        return MappedImages(np.load(self.path / f"{part}.npy", mmap_mode="r")[:count])

    def labels(self, part: str) -> np.ndarray:
        return np.load(self.path / f"{part}.labels.npy")


def lookup(cache_dir: Path, key: str) -> Entry | None:
    """The entry `key` if it is complete and of this format, else None (a miss)."""
    path = cache_dir / key
    try:
        meta = json.loads((path / META_FILE).read_text())
        if meta.get("format") != FORMAT_VERSION or meta.get("key") != key:
            return None
        entry = Entry(path, meta)
        for part, info in meta["parts"].items():
            images, labels = entry.images(part), entry.labels(part)
            if len(images) != info["count"] or len(labels) != info["count"]:
                return None
        return entry
    except (OSError, ValueError, KeyError, TypeError):  # absent, or damaged by hand: decode again
        return None


def build(cache_dir: Path, key: str, write: Callable[[Path], dict[str, Any]], replace: bool) -> Entry:
    """Build entry `key` with `write(folder)` (it fills the folder, returns the meta) and publish it
    atomically. `replace`: an existing entry is swapped out (dataset.cache=refresh, or a damaged one);
    otherwise one that appeared meanwhile (another process's) is kept and ours discarded."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".tmp", dir=cache_dir))
    final = cache_dir / key
    try:
        meta = write(tmp) | {"format": FORMAT_VERSION, "key": key}
        (tmp / META_FILE).write_text(json.dumps(meta))
        for attempt in range(3):
            try:
                os.rename(tmp, final)  # atomic; fails on an existing non-empty folder
                return Entry(final, meta)
            except OSError as err:
                if err.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not final.exists():
                    raise
                if not replace:
                    entry = lookup(cache_dir, key)
                    if entry is not None:
                        return entry  # another process finished first: same key, same pixels
                old = cache_dir / f".{key}.old{os.getpid()}.{attempt}"
                try:
                    os.rename(final, old)  # readers that mapped the old files keep them until they close
                except FileNotFoundError:
                    continue
                shutil.rmtree(old, ignore_errors=True)
        raise OSError(f"{final}: could not be replaced (other processes keep writing it)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when the rename succeeded
