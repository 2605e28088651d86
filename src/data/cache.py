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

Here: the key, the look-up and the atomic build. The arrays are written by `src.data.cache_write`
(`RowFile`), an entry is read and checked by `src.data.cache_entry`, and read images are
`src.data.mapped.MappedImages`; what goes into an entry (decoding a folder) is `src.data.parts`.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from src.data.cache_entry import META_FILE, Damaged, Entry, check_meta, verify_part
from src.data.paths import shown

log = logging.getLogger(__name__)

# Bump when what an entry holds, or how its pixels are made, changes: old entries stop matching.
# 2: CRC-32 checksums of pixel blocks and labels in meta.json, arrays written with plain writes.
FORMAT_VERSION = 2
PROJECT = "ft-compare"
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
        check_meta(meta, key, parts, classes, row_shape)
        entry = Entry(path, meta)
        for part in sorted(parts):
            verify_part(entry, part, classes)
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
