"""The decoding processes: a folder's files decoded in parallel (`decoded`), in file order, by
forked workers that never outlive the run (the kernel's parent-death signal on Linux, a watcher thread
elsewhere), stopped at once on an error or Ctrl-C."""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from src.data.decode import decode_chunk
from src.data.paths import shown

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
    of `decoded`, in one thread, so that thread outlives it. Elsewhere, or if prctl fails, a thread
    polls the parent's pid. Signals: a worker forked from `python -m src.train` inherits its SIGTERM
    handler (src.exits: raise Stopped, for a run that records being interrupted), under which a
    worker sent SIGTERM returns the interrupt to its parent as if the parent had been stopped; a
    worker dies of SIGTERM instead. Ctrl-C reaches the whole process group: workers ignore it, and
    the parent, interrupted, stops the pool. These two handlers stay here, not in src.exits: they
    belong to the child process, which never reports how it ended (its parent does)."""
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


def decoded(files: list[Path], size: int, draft: bool, workers: int, progress: bool, folder: Path):
    """(file, result) of `decode_chunk` for every file, in order, decoded by `workers` processes.
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
            results = pool.map(decode_chunk, chunks, [size] * len(chunks), [draft] * len(chunks))
        else:
            results = (decode_chunk(chunk, size, draft) for chunk in chunks)
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
    """End a pool's worker processes without waiting for their tasks: SIGKILL (Python 3.14's
    kill_workers(), or what it does on earlier versions). Not SIGTERM: a worker that it reaches
    before `_worker_start` resets the handler inherited from `python -m src.train` lives on, and
    one killed while it holds the result queue's lock leaves the others stuck on it; the pool's
    shutdown then waits for them forever (on Python 3.11 so does its own clean-up of a broken
    pool). A worker holds nothing that needs a clean end: it reads images and returns pixels."""
    if hasattr(pool, "kill_workers"):
        pool.kill_workers()
        return
    for proc in list(getattr(pool, "_processes", {}).values()):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            proc.kill()
