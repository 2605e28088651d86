"""Decoding worker processes never outlive the process that started them (issue 23): its SIGKILL,
its error, a worker's own SIGTERM. Real processes: a forked "run" decodes a real folder with two
workers whose decode of some files blocks until they are killed, and the test watches their pids."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from src.config import DataConfig
from src.data import decode, load, parts, workers
from src.exits import install as install_signal_handlers  # what `python -m src.train` installs

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists() or "fork" not in
                                multiprocessing.get_all_start_methods(), reason="needs fork and /proc (Linux)")

DEADLINE_S = 20.0


def _folder(root: Path, n: int = 12) -> Path:
    """train/a/ of n images that decode, then train/b/ of n `slow<i>.png` whose decode blocks: with
    two workers the first chunks (class a) come back, then both workers are stuck in class b."""
    rng = np.random.default_rng(0)
    for cls, stem in (("a", "ok"), ("b", "slow")):
        (root / "train" / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / "train" / cls / f"{stem}{i}.png")
    return root


def _state(pid: int) -> str | None:
    """The process's state letter from /proc (None: no such process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _running(pid: int) -> bool:
    """Alive and not a zombie: a zombie has closed its files and runs nothing; whether its new parent
    reaps it is not ours to test."""
    return _state(pid) not in (None, "Z", "X")


def _until(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {DEADLINE_S:.0f} s: {what}")
        time.sleep(0.02)


def _pids(pid_file: Path) -> list[int]:
    return sorted({int(x) for x in pid_file.read_text().split()}) if pid_file.exists() else []


def _run(root: str, pid_file: str, mode: str, conn) -> None:
    """A run that decodes `root` with two workers; what load_dataset raised goes back on `conn`.

    mode: "pdeathsig" | "poll" (how workers watch this process); "cli": with the SIGTERM handler
    `python -m src.train` installs; "launcher": also with a launcher's SIGUSR2 handler, as a submitit
    job has (it writes its pid to `pid_file`.usr2); "error": this process fails once both workers
    are stuck; "error-deaf": the same, with workers that do not die of SIGTERM."""
    workers.USE_PDEATHSIG = mode != "poll"
    real_read = decode.read_image

    def read(path, size, draft=False):
        if path.name.startswith("slow"):
            if mode == "error-deaf":  # as a worker that SIGTERM reached before its initializer ran,
                signal.signal(signal.SIGTERM, signal.SIG_IGN)  # under a handler inherited from its run
            with open(pid_file, "a") as f:
                f.write(f"{os.getpid()}\n")
            threading.Event().wait()  # stuck until killed
        return real_read(path, size, draft)

    decode.read_image = read
    if mode == "launcher":
        def checkpoint(signum, frame):  # as submitit's: this process checkpoints and requeues the job
            with open(f"{pid_file}.usr2", "a") as f:
                f.write(f"{os.getpid()}\n")

        signal.signal(signal.SIGUSR2, checkpoint)
    if mode in ("cli", "launcher"):
        install_signal_handlers()
    if mode.startswith("error"):
        real_take = parts._take

        def take(*args, **kw):
            # The run fails on its first decoded image, once both workers are stuck in theirs.
            deadline = time.monotonic() + DEADLINE_S
            while len(_pids(Path(pid_file))) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            raise RuntimeError("the run failed while decoding")
            return real_take(*args, **kw)

        parts._take = take
    try:
        load.load_dataset(DataConfig(kind="imagefolder", root=root, image_size=8, cache="off", num_workers=2))
        conn.send(("ok", ""))
    except BaseException as err:  # noqa: BLE001  (what the run saw, whatever it is, goes to the test)
        conn.send((type(err).__name__, str(err)))
    conn.recv()  # stays alive until the test has looked


@contextlib.contextmanager
def _decoding_run(tmp_path: Path, mode: str):
    """A forked run decoding a blocking folder: (process, pid file, connection); everything it
    started is killed at the end, whatever the test found."""
    root, pid_file = _folder(tmp_path / "data"), tmp_path / "pids"
    ctx = multiprocessing.get_context("fork")
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=_run, args=(str(root), str(pid_file), mode, theirs), daemon=False)
    proc.start()
    try:
        yield proc, pid_file, ours
    finally:
        for pid in _pids(pid_file):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.join(timeout=DEADLINE_S)


@pytest.mark.parametrize("mode", ["pdeathsig", "poll"])
def test_workers_die_when_their_run_is_killed(tmp_path, mode):
    """SIGKILL (or the OOM killer) of the run mid-decode: each worker ends within the deadline, by
    the kernel's parent-death signal on Linux, or by noticing its parent's pid change (elsewhere)."""
    with _decoding_run(tmp_path, mode) as (proc, pid_file, _):
        _until(lambda: len(_pids(pid_file)) == 2, "both workers started decoding")
        workers = _pids(pid_file)
        assert all(_running(pid) for pid in workers)
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(timeout=DEADLINE_S)
        assert proc.exitcode == -signal.SIGKILL
        _until(lambda: not any(_running(pid) for pid in workers), f"workers {workers} ended")


@pytest.mark.parametrize("mode", ["error", "error-deaf"])
def test_workers_end_when_their_run_fails(tmp_path, mode):
    """An error in the run while workers are mid-chunk: load_dataset raises it, and the workers are
    gone by then, not after their chunks (which here would never end); the run itself lives on.
    Also when a worker does not die of SIGTERM (one that got it before its initializer reset the
    handler inherited from the run): the pool's shutdown waited for it forever (seen in the tests:
    on Python 3.11 a stuck worker also blocks the executor's own clean-up of a broken pool)."""
    with _decoding_run(tmp_path, mode) as (proc, pid_file, conn):
        assert conn.poll(DEADLINE_S), "the run did not fail within the deadline"
        assert conn.recv() == ("RuntimeError", "the run failed while decoding")
        workers = _pids(pid_file)
        assert len(workers) == 2 and proc.is_alive()
        assert not any(_running(pid) for pid in workers)  # already ended: shutdown joined them
        conn.send("done")


def test_a_worker_sent_sigterm_dies_and_the_run_says_so_in_one_line(tmp_path):
    """A worker of `python -m src.train` (its SIGTERM handler inherited through fork) dies of
    SIGTERM; the run then fails with one line naming the folder, not as if it had been interrupted."""
    with _decoding_run(tmp_path, "cli") as (proc, pid_file, conn):
        _until(lambda: len(_pids(pid_file)) == 2, "both workers started decoding")
        workers = _pids(pid_file)
        os.kill(workers[0], signal.SIGTERM)
        assert conn.poll(DEADLINE_S), "the run did not stop within the deadline"
        kind, message = conn.recv()
        assert kind == "DecodeWorkerError", (kind, message)
        assert "\n" not in message and str(tmp_path / "data" / "train") in message and "num_workers=1" in message
        _until(lambda: not any(_running(pid) for pid in workers), f"workers {workers} ended")
        conn.send("done")


def test_a_launchers_checkpoint_signal_is_the_runs_not_its_workers(tmp_path):
    """SLURM sends `--signal` to every process of a job step. A decode worker inherits submitit's
    SIGUSR2 handler through fork, and would checkpoint and requeue the job as well (or raise inside
    its chunk). Workers ignore it and decode on; the run's own process acts on it."""
    with _decoding_run(tmp_path, "launcher") as (proc, pid_file, _):
        _until(lambda: len(_pids(pid_file)) == 2, "both workers started decoding")
        got, workers = Path(f"{pid_file}.usr2"), _pids(pid_file)
        for pid in workers:
            os.kill(pid, signal.SIGUSR2)
        time.sleep(0.5)
        assert all(_running(pid) for pid in workers) and not got.exists()
        os.kill(proc.pid, signal.SIGUSR2)
        _until(lambda: got.exists() and got.read_text().split() == [str(proc.pid)], "the run's handler ran")


def test_the_default_decoder_count_is_the_cpus_this_process_may_use(monkeypatch):
    # os.cpu_count is the machine's: a SLURM job given 1 of a node's cores started a decoder per core.
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert parts._decode_setup(DataConfig(kind="imagefolder", num_workers=None), False).workers == 1
    assert parts._decode_setup(DataConfig(kind="imagefolder", num_workers=3), False).workers == 3
