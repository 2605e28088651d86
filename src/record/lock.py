"""One process trains in a run folder at a time: `held(run_dir)` takes an exclusive lock on the folder
for the whole run, and a second process that tries is refused in one line.

A fixed folder (`hydra.run.dir=...`, which resume asks for) is shared by whoever names it: the same
command started twice, or two configs given one folder. Without the lock both trained there at once,
and the folder ended with one run's config.yaml beside the other's result.json and model_best.pt,
and metrics.jsonl holding both runs' epochs (epochs 0, 0, 1); one process's checkpoint clean-up
deleted the other's half-written checkpoint.

The lock is `flock` on the folder itself: no file is created (a refused run leaves the folder as it
was), the kernel drops it when the process dies however it dies (SIGKILL, the OOM killer), so a
killed run resumes at once; and processes forked while it is held (data decoding workers) close
their copy, so a worker that outlives a killed run for a moment does not keep its folder locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from src.config import FolderRefused

__all__ = ["FolderInUse", "held", "in_use", "release", "try_lock"]

_HELD: set[int] = set()  # descriptors holding a lock in this process, closed in forked children


class FolderInUse(FolderRefused):
    """Another process holds the run folder's lock: refused, and nothing of this run goes into it."""


def _close_in_child() -> None:
    for fd in _HELD:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_close_in_child)


def try_lock(folder: Path) -> int | None:
    """An exclusive lock on the existing `folder`, held until `release(fd)`: its descriptor, or None
    when another process holds it. OSError when the folder cannot be opened."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    _HELD.add(fd)
    return fd


def in_use(folder: Path) -> bool | None:
    """Whether a process holds `folder`'s lock now (it is training there), asked without taking the
    lock: a reader that took it, even for a moment, would refuse a run starting at that moment. Read
    from Linux's /proc/locks (a flock's device and inode); None where that cannot be read."""
    try:
        st = os.stat(folder)
        table = Path("/proc/locks").read_text()
    except OSError:
        return None
    mine = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    # "1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234 0 EOF": the 6th field names the file
    return any(len(f := line.split()) > 5 and f[1] == "FLOCK" and f[5] == mine for line in table.splitlines())


def release(fd: int) -> None:
    _HELD.discard(fd)
    os.close(fd)  # the lock goes with the last descriptor of it


@contextlib.contextmanager
def held(run_dir: Path) -> Iterator[None]:
    """The run folder (made if missing), locked against every other process until the block ends;
    FolderInUse (a ConfigError: one line, exit 2) when another holds it, FolderRefused when the folder
    cannot be made or opened."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = try_lock(run_dir)
    except OSError as err:
        raise FolderRefused(f"cannot write the run folder {run_dir}: {err.strerror or err}") from None
    if fd is None:
        raise FolderInUse(f"the run folder {run_dir} is in use: another process is training in it now (the same "
                          "command started twice, or another config given the same hydra.run.dir); wait for it to "
                          "end, or give this run a folder of its own") from None
    try:
        yield
    finally:
        release(fd)
