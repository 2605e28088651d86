"""A run whose job the launcher requeues (submitit's SIGUSR2 handler: checkpoint, `scontrol requeue`,
then `sys.exit(-1)`) is not a failed run: it continues from its checkpoint when the scheduler starts
the job again. Seen on the real SLURM (`scancel --signal=USR2` on a sweep trial's job): between the
requeue and the restart (two minutes of SLURM's BeginTime hold) its result.json said
`status: failed, error: SystemExit: -1`."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from src import exits
from src.record.io import read_json_object
from src.training.run import run


@pytest.fixture
def launcher_handler():
    """SIGUSR2 handled the way submitit's job does (its SignalHandler ends with `sys.exit(-1)` once
    the job is requeued), wrapped by the run's handlers as in a real job."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, *exits.ALSO_STOPPING)}
    requeued: list[int] = []

    def submitit_requeue(signum, frame):
        requeued.append(signum)  # (submitit runs `scontrol requeue $SLURM_JOB_ID` here)
        sys.exit(-1)

    signal.signal(signal.SIGUSR2, submitit_requeue)
    exits.install()
    try:
        yield requeued
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def test_a_run_its_launcher_requeues_records_interrupted_not_failed(tiny_config, tmp_path, launcher_handler):
    cfg = tiny_config()  # 2 epochs

    def usr2(row):
        if row.epoch == 0:
            os.kill(os.getpid(), signal.SIGUSR2)

    with pytest.raises(SystemExit) as ended:
        run(cfg, tmp_path, on_epoch=usr2)
    assert ended.value.code == -1  # submitit's exit, as it was: the job step ends as submitit ends it
    assert launcher_handler == [signal.SIGUSR2]
    record = read_json_object(tmp_path / "result.json")
    assert record["status"] == "interrupted", record["error"]
    assert "SIGUSR2" in record["error"] and "requeue" in record["error"], record["error"]
    assert record["measured_before_stop"]["epochs_trained"] >= 1
    # and it continues from its checkpoint, as the requeued job does
    resumed = run(cfg, tmp_path)
    assert resumed["status"] == "completed" and resumed["epochs_trained"] == 2
