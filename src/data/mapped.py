"""Images in a memory-mapped array: a split read from the decoded-data cache (src/data/cache.py).

`MappedImages` stands in for a split's uint8 image tensor where the data may not fit in memory: a
batch reads its rows only, and the pages it read leave the process again (`drop_pages`).
"""

from __future__ import annotations

import hashlib
import mmap
import os
from typing import Any

import numpy as np
import torch


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

    def identity(self) -> tuple[Any, ...]:
        """What these images are, without reading them: the mapped file (path, inode, size,
        modification time; a rebuilt cache entry is a new file) and where in it, and the rows seen
        through the index. An array in memory (not made by the cache) is named by its values."""
        rows = hashlib.blake2b(self.index.tobytes(), digest_size=16).hexdigest() if self.index is not None else None
        name = getattr(self.array, "filename", None)
        if name is None:
            values = hashlib.blake2b(np.ascontiguousarray(self.array).tobytes(), digest_size=16).hexdigest()
            return ("values", values, self.array.shape, rows)
        st = os.stat(name)
        return (os.path.realpath(name), st.st_ino, st.st_size, st.st_mtime_ns, getattr(self.array, "offset", 0),
                self.array.shape, str(self.array.dtype), rows)

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
