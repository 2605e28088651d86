"""A folder of files written whole: `staged(path)` gives a new, empty folder beside `path` to fill;
when the block ends without error that folder becomes `path` in one rename, replacing what was
there, and when it raises (Ctrl-C, SIGTERM, a full disk) it is removed and `path` is left as it was.

Why: the end of a multirun or a sweep writes its report (the page, its figures, summary.json,
verdict.json, ...) into one folder, `<dir>/report`. Written in place, two drivers of one sweep that
ended together left one's index.html beside the other's figures and summary.json, and a report
stopped half-way left an earlier report's page beside new figures: each file whole, the folder a
mix that no run of the tool had written. Now each writer fills a folder of its own and the last to
finish puts it in place: `path` is always one writer's complete report.

Kept across a replacement: W&B's offline runs (`wandb/offline-run-*`, the summary runs of earlier
reports, perhaps not uploaded yet) move into the new folder; nothing else of the old one is kept.
A writer killed with SIGKILL leaves its hidden `.NAME.writing-*` folder: each writer holds a lock on
its own (src/record/lock.py, dropped by the kernel with the process), so the next one removes only
folders whose writer is gone, and first takes back what such a folder holds of the folder it was
replacing: killed between its two renames, it left no `path` and the earlier report inside it, and
the next writer removed that report and its W&B runs with it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from src.record.lock import release, try_lock

__all__ = ["staged"]

_REPLACED = ".replaced"  # the folder that `path` was, moved into the new one until it is removed
_KEPT = "wandb"  # W&B's offline runs: carried into the folder that replaces theirs


def _writing_prefix(path: Path) -> str:
    return f".{path.name}.writing-"


@contextlib.contextmanager
def staged(path: Path) -> Iterator[Path]:
    """A new folder to write `path`'s files into; it replaces `path` when the block ends (see the
    module's docstring). OSError when the folder beside `path` cannot be made, and FileExistsError
    when `path` is a file: never replaced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not path.is_dir():
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path))
    _remove_abandoned(path)
    staging, fd = _new_folder(path)
    try:
        yield staging
        _put_in_place(staging, path)
    except BaseException:
        _put_back(staging, path)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        # what it replaced, removed through the descriptor: `path` may already be a later writer's
        with contextlib.suppress(OSError):
            for name in os.listdir(fd):
                if name.startswith(_REPLACED):
                    shutil.rmtree(name, dir_fd=fd)
        release(fd)


def _new_folder(path: Path) -> tuple[Path, int]:
    """A new folder beside `path`, locked by this process. Made with the usual permissions (0777 less
    the umask): tempfile.mkdtemp's 0700 hid the report from the group that shares the study."""
    for _ in range(100):
        staging = path.parent / f"{_writing_prefix(path)}{secrets.token_hex(6)}"
        try:
            staging.mkdir(mode=0o777)
        except FileExistsError:
            continue
        fd = try_lock(staging)
        if fd is not None:
            return staging, fd
    raise FileExistsError(f"{path.parent}: no free name for a new {path.name} folder")


def _put_in_place(staging: Path, path: Path) -> None:
    """`staging` renamed to `path`. What `path` holds now is first moved inside `staging` (its W&B
    runs carried over), then removed; when another writer's folder lands at `path` between the two
    renames, that one is moved aside the same way and this one is put in place after it."""
    for attempt in range(100):
        replaced = staging / f"{_REPLACED}-{attempt}"
        try:
            os.rename(path, replaced)
        except FileNotFoundError:
            pass  # nothing there yet, or another writer moved it into its own folder
        else:
            _carry(replaced / _KEPT, staging / _KEPT)
        try:
            os.rename(staging, path)
            return
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    raise OSError(errno.EBUSY, f"{path} kept being replaced by other writers; {staging} holds this one")


def _put_back(staging: Path, path: Path) -> None:
    """Stopped between the two renames (Ctrl-C, SIGTERM): the folder `path` was, back in its place,
    with the W&B runs carried out of it."""
    for replaced in sorted(staging.glob(f"{_REPLACED}-*"), reverse=True):
        _carry(staging / _KEPT, replaced / _KEPT)
        with contextlib.suppress(OSError):
            os.rename(replaced, path)
            return


def _carry(old: Path, new: Path) -> None:
    """Each entry of `old` that `new` lacks, moved into `new`."""
    if not old.is_dir():
        return
    new.mkdir(exist_ok=True)
    for entry in old.iterdir():
        with contextlib.suppress(OSError):  # a name that is in both: the new one stays
            if not (new / entry.name).exists():
                os.rename(entry, new / entry.name)


def _remove_abandoned(path: Path) -> None:
    """The writing folders beside `path` of writers that are gone (their lock is free)."""
    for folder in path.parent.glob(f"{_writing_prefix(path)}*"):
        try:
            fd = try_lock(folder)
        except OSError:
            continue  # removed meanwhile, or not a folder
        if fd is None:
            continue  # its writer is still at work
        try:
            _salvage(folder, path)
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            release(fd)


def _salvage(folder: Path, path: Path) -> None:
    """An abandoned writer's hold on `path`: the folder `path` was, put back where no other has taken
    its place (the writer died between its two renames), and the W&B runs it had carried out of it
    (or had in the folder it moved aside) carried into `path`, as a stopped writer's are."""
    if not path.exists():
        _put_back(folder, path)
    if path.is_dir():
        _carry(folder / _KEPT, path / _KEPT)
        for replaced in folder.glob(f"{_REPLACED}-*"):
            _carry(replaced / _KEPT, path / _KEPT)
