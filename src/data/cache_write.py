"""Writing a decoded-data cache entry's arrays (src/data/cache.py): the pixel rows one at a time with
plain file writes, and the CRC-32s that `src.data.cache_check` verifies on every hit.
"""

from __future__ import annotations

import contextlib
import io
import zlib
from pathlib import Path
from typing import Any

import numpy as np

# Rows are checksummed in blocks of about this many bytes: small enough that the block read to
# verify it stays out of the process's resident size, large enough that the list in meta.json is
# short (a 10 GB entry has 2,400 of them).
CHECK_BLOCK_BYTES = 4 << 20


class RowFile:
    """A new .npy array of up to `n` uint8 rows of `row_shape`, written one row at a time, in order,
    with plain file writes, and the CRC-32 of every block of rows.

    Plain writes, not a memory-mapped file: on a full disk (or a quota, or a file size limit) a
    store into a sparse mapped file is a SIGBUS that kills the process, with nothing recorded, where
    write() raises an OSError the caller can handle. The rows leave this process as they are
    written (the OS's page cache keeps them), so building an entry larger than memory holds none of
    it. `close` makes the header say how many rows were written.
    """

    def __init__(self, path: Path, n: int, row_shape: tuple[int, ...]) -> None:
        self.path, self.row_shape = path, tuple(row_shape)
        self.row_bytes = int(np.prod(row_shape))
        self.block_rows = max(1, CHECK_BLOCK_BYTES // max(1, self.row_bytes))
        self.n, self.rows, self.crcs, self._crc = n, 0, [], 0
        self.file = open(path, "wb")  # noqa: SIM115  (closed by close(), or discard() on a failure)
        self.file.write(_npy_header((n, *self.row_shape)))
        self.offset = self.file.tell()

    def __setitem__(self, row: int, pixels: np.ndarray) -> None:
        if row != self.rows:
            raise IndexError(f"{self.path}: row {row} written after {self.rows} rows; rows go in order")
        data = np.ascontiguousarray(pixels, dtype=np.uint8)
        if data.shape != self.row_shape:
            raise ValueError(f"{self.path}: a row of shape {data.shape}, expected {self.row_shape}")
        view = memoryview(data).cast("B")
        self.file.write(view)
        self._crc = zlib.crc32(view, self._crc)
        self.rows += 1
        if self.rows % self.block_rows == 0:
            self.crcs.append(self._crc)
            self._crc = 0

    def close(self) -> dict[str, Any]:
        """Finish the file (its header gives the rows written) and return its part of meta.json:
        the count, the block size and the blocks' CRC-32s."""
        if self.rows % self.block_rows:
            self.crcs.append(self._crc)
        header = _npy_header((self.rows, *self.row_shape))
        rows = self.n
        if len(header) == self.offset:  # numpy leaves room in its header for the first axis to change
            self.file.seek(0)
            self.file.write(header)
            rows = self.rows
        # Without the new header the file must be as long as the first one says (the rows after
        # `count`, never read, are a hole: no disk space).
        self.file.truncate(self.offset + rows * self.row_bytes)
        self.file.close()
        return {"count": self.rows, "shape": list(self.row_shape), "block_rows": self.block_rows, "crc32": self.crcs}

    def discard(self) -> None:
        """Close without finishing (a failed build: its folder is removed)."""
        with contextlib.suppress(OSError):
            self.file.close()


def _npy_header(shape: tuple[int, ...]) -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
                                               "fortran_order": False, "shape": shape})
    return out.getvalue()


def labels_crc(labels: np.ndarray) -> int:
    """The CRC-32 of a labels array's int64 values (little-endian, as .npy stores them here)."""
    return zlib.crc32(np.ascontiguousarray(labels, dtype="<i8").tobytes())
