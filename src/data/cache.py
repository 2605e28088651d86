"""Decoded image folders on disk: decode once per dataset, memory-map on every later run.

An entry is a folder `<cache_dir>/<key>/` holding one raw uint8 N x 3 x S x S array per split folder
(`<part>.npy`), its labels (`<part>.labels.npy`) and `meta.json` (classes, counts, skipped files,
decode notes, checksums). The key hashes everything the pixels depend on: the folder, each file's
relative path, size and modification time, the image size and the decode settings, and
`FORMAT_VERSION`.

Writing is atomic: an entry is built in a temporary folder beside it and renamed into place, so a
reader sees a whole entry or none. Two processes that miss together both decode; the first rename
wins and the second keeps the winner's entry (same key, same pixels). Pixels are written with plain
file writes, never through a memory map, so that a full disk is an OSError (the caller then decodes
in memory) and not a SIGBUS that kills the process. Reading checks the content against the CRC-32s
written with the entry, then memory-maps the arrays: no pixel is held until a batch asks for its
rows (`MappedImages`). A damaged entry is a miss, rebuilt, with a warning naming it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import logging
import mmap
import os
import re
import secrets
import shutil
import socket
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from src.data.paths import shown

log = logging.getLogger(__name__)

# Bump when what an entry holds, or how its pixels are made, changes: old entries stop matching.
# 2: CRC-32 checksums of pixel blocks and labels in meta.json, arrays written with plain writes.
FORMAT_VERSION = 2
META_FILE = "meta.json"
PROJECT = "ft-compare"
# Rows are checksummed in blocks of about this many bytes: small enough that the block read to
# verify it stays out of the process's resident size, large enough that the list in meta.json is
# short (a 10 GB entry has 2,400 of them).
CHECK_BLOCK_BYTES = 4 << 20
# A temporary folder nobody holds locked (its writer died) is removed once it is this old; the age
# covers the instant between creating a folder and locking it.
STALE_AFTER_S = 60.0


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
    a coincidence of sizes and times; a moved folder decodes once more. A file that cannot be
    stat'ed (a dangling or looping symlink) enters as unreadable, as the decode will find it: the
    same skip or error as without the cache, and a key that changes once the file is mended."""
    digest = hashlib.sha256()
    head = {"format": FORMAT_VERSION, "root": str(root.resolve()), "settings": settings}
    digest.update(json.dumps(head, sort_keys=True).encode())
    for part, files in sorted(parts.items()):
        digest.update(f"\0{part}\0".encode())
        for file in files:
            try:
                st = file.stat()
                state = f"{st.st_size}\0{st.st_mtime_ns}"
            except OSError as err:
                state = f"unreadable\0{err.errno}"
            name = file.relative_to(root).as_posix().encode("utf-8", "surrogateescape")
            digest.update(name + f"\0{state}\n".encode())
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


class Entry:
    """A complete cache entry on disk."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path, self.meta = path, meta

    def images(self, part: str) -> MappedImages:
        count = self.meta["parts"][part]["count"]
        return MappedImages(np.load(self.path / f"{part}.npy", mmap_mode="r", allow_pickle=False)[:count])

    def labels(self, part: str) -> np.ndarray:
        return np.load(self.path / f"{part}.labels.npy", allow_pickle=False)


class Damaged(Exception):
    """What is wrong with an entry that exists: a miss, rebuilt, with a warning naming it."""


def _expect(ok: bool, why: str) -> None:
    if not ok:
        raise Damaged(why)


def _is_list_of(value: Any, kind: type) -> bool:
    return isinstance(value, list) and all(isinstance(v, kind) and not isinstance(v, bool) for v in value)


def _check_meta(meta: Any, key: str, parts: set[str], classes: list[str], row_shape: tuple[int, ...]) -> None:
    """Every key the reader uses is there with the right type and agrees with the folder."""
    _expect(isinstance(meta, dict), f"{META_FILE} is not an object")
    _expect(meta.get("key") == key, f"{META_FILE} names another key ({meta.get('key')!r})")
    for name, kind in (("parts", dict), ("classes", list), ("skipped", list), ("notes", list)):
        _expect(isinstance(meta.get(name), kind), f"{META_FILE} lacks '{name}' (or it is not a {kind.__name__})")
    _expect(meta["classes"] == classes, f"{META_FILE} lists other classes than the folder's")
    _expect(set(meta["parts"]) == parts, f"{META_FILE} has parts {sorted(meta['parts'])}, the folder {sorted(parts)}")
    _expect(_is_list_of(meta["skipped"], str), f"{META_FILE}: 'skipped' is not a list of file names")
    _expect(all(_is_list_of(n, str) and len(n) == 2 for n in meta["notes"]),
            f"{META_FILE}: 'notes' is not a list of (file, warning) pairs")
    for part, info in meta["parts"].items():
        where = f"{META_FILE} part '{part}'"
        _expect(isinstance(info, dict), f"{where} is not an object")
        for name in ("count", "block_rows", "labels_crc32"):
            value = info.get(name)
            _expect(isinstance(value, int) and not isinstance(value, bool) and value >= 0, f"{where} lacks '{name}'")
        _expect(info["block_rows"] > 0, f"{where}: 'block_rows' is 0")
        _expect(info.get("shape") == list(row_shape), f"{where}: image shape {info.get('shape')}, expected "
                f"{list(row_shape)}")
        _expect(_is_list_of(info.get("crc32"), int) and len(info["crc32"]) == -(-info["count"] // info["block_rows"]),
                f"{where}: 'crc32' does not hold one checksum per block")


def _verify_part(entry: Entry, part: str, classes: list[str]) -> None:
    """A part's labels and pixels against the checksums written with them.

    Every block is read and checked on every hit, not lazily when a batch first touches it: a
    damaged block found mid-training could only stop the run, where found here it is rebuilt; the
    check's time goes into data_load_s rather than into the timed training loop; and the reads
    warm the OS's page cache that the first epoch reads from anyway. Plain reads (not the map)
    keep the process's resident size at a block; one thread (two measured no faster). CRC-32, not
    a cryptographic hash: it guards against damage (a bad disk, a partial copy, an edit by hand),
    not against someone who can rewrite meta.json too, and runs at about 1.5 GB/s on one core
    here, 2.6x blake2b (docs/data.md)."""
    info = entry.meta["parts"][part]
    count = info["count"]
    labels = entry.labels(part)
    _expect(labels.dtype == np.int64 and labels.shape == (count,),
            f"{part}.labels.npy holds {labels.dtype} {labels.shape}, expected int64 ({count},)")
    _expect(labels_crc(labels) == info["labels_crc32"], f"{part}.labels.npy does not match its checksum")
    _expect(not count or (int(labels.min()) >= 0 and int(labels.max()) < len(classes)),
            f"{part}.labels.npy holds labels outside 0..{len(classes) - 1}")
    images = np.load(entry.path / f"{part}.npy", mmap_mode="r", allow_pickle=False)
    _expect(images.dtype == np.uint8 and images.shape[1:] == tuple(info["shape"]) and len(images) >= count,
            f"{part}.npy holds {images.dtype} {images.shape}, expected uint8 ({count}, {', '.join(map(str, info['shape']))})")
    row_bytes = int(np.prod(info["shape"]))
    offset, block_rows = images.offset, info["block_rows"]
    del images

    with open(entry.path / f"{part}.npy", "rb") as f:  # buffered: read(n) returns n bytes unless at the end
        f.seek(offset)
        for block, want in enumerate(info["crc32"]):
            size = min(block_rows, count - block * block_rows) * row_bytes
            data = f.read(size)
            _expect(len(data) == size and zlib.crc32(data) == want,
                    f"{part}.npy rows {block * block_rows}..{min(count, (block + 1) * block_rows) - 1} "
                    "do not match their checksum")


def lookup(cache_dir: Path, key: str, parts: set[str], classes: list[str], row_shape: tuple[int, ...]) -> Entry | None:
    """The entry `key` if it is there, whole, of this format, for these parts and classes, and its
    content matches its checksums; else None (a miss). An entry that is there but fails a check is
    named in a warning (it is then rebuilt and replaced)."""
    path = cache_dir / key
    if not path.exists():
        return None
    try:
        try:
            meta = json.loads((path / META_FILE).read_text())
        except FileNotFoundError:
            raise Damaged(f"no {META_FILE}") from None
        except (ValueError, UnicodeDecodeError) as err:
            raise Damaged(f"{META_FILE} is not JSON ({' '.join(str(err).split())})") from None
        if isinstance(meta, dict) and meta.get("format") != FORMAT_VERSION:
            log.info("decoded-data cache entry %s is of format %r, not %d: decoding again", shown(path),
                     meta.get("format"), FORMAT_VERSION)
            return None
        _check_meta(meta, key, parts, classes, row_shape)
        entry = Entry(path, meta)
        for part in sorted(parts):
            _verify_part(entry, part, classes)
        return entry
    except Damaged as err:
        why = str(err)
    except (OSError, ValueError, EOFError) as err:  # a file missing, truncated or not a .npy
        why = " ".join(f"{type(err).__name__}: {err}".split())
    log.warning("decoded-data cache entry %s is damaged (%s); decoding the folder again and replacing it",
                shown(path), why)
    return None


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def _lock(folder: Path) -> int | None:
    """An open descriptor of `folder` holding an exclusive lock on it, or None where locks are not
    available. The OS drops the lock when the process ends, however it ends: that is how another
    process tells a build in progress from one whose writer died."""
    try:
        import fcntl
    except ImportError:
        return None
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def remove_stale(cache_dir: Path) -> list[Path]:
    """Remove the temporary folders of builds whose process died (killed, out of memory, a power
    cut): not locked by anyone and older than STALE_AFTER_S. The removed folders."""
    try:
        import fcntl
    except ImportError:
        return []
    removed = []
    try:
        candidates = [p for p in cache_dir.iterdir() if p.name.startswith(".") and p.name.endswith((".tmp", ".old"))]
    except OSError:
        return []
    for folder in candidates:
        try:
            if time.time() - folder.stat().st_mtime < STALE_AFTER_S:
                continue
            fd = os.open(folder, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # its writer is alive
        finally:
            os.close(fd)
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _new_folder(cache_dir: Path, key: str) -> Path:
    """A new, empty temporary folder for building `key`. os.mkdir with mode 0o777 lets the umask
    decide its permissions, as for every other file the tool writes (tempfile.mkdtemp would make it
    0o700, and the entry keeps the mode of the folder it is renamed from)."""
    while True:
        folder = cache_dir / f".{key}.{_host()}-{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            os.mkdir(folder, 0o777)
            return folder
        except FileExistsError:
            continue


def build(cache_dir: Path, key: str, write: Callable[[Path], dict[str, Any]], replace: bool) -> Entry:
    """Build entry `key` with `write(folder)` (it fills the folder, returns the meta) and publish it
    atomically. `replace`: an existing entry is swapped out (dataset.cache=refresh, or a damaged one);
    otherwise one that appeared meanwhile (another process's) is kept and ours discarded. Any OSError
    (a full disk, a quota, a read-only folder) leaves no temporary folder behind."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    for folder in remove_stale(cache_dir):
        log.info("removed %s, left by a build whose process died", shown(folder))
    tmp = _new_folder(cache_dir, key)
    lock = _lock(tmp)  # held while the folder is built, and dropped by the OS if this process dies
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
                    entry = lookup(cache_dir, key, set(meta["parts"]), meta["classes"],
                                   tuple(next(iter(meta["parts"].values()))["shape"]))
                    if entry is not None:
                        return entry  # another process finished first: same key, same pixels
                old = cache_dir / f".{key}.{_host()}-{os.getpid()}.{attempt}.old"
                try:
                    os.rename(final, old)  # readers that mapped the old files keep them until they close
                except FileNotFoundError:
                    continue
                shutil.rmtree(old, ignore_errors=True)
        raise OSError(f"{shown(final)}: could not be replaced (other processes keep writing it)")
    finally:
        if lock is not None:
            os.close(lock)
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when the rename succeeded
