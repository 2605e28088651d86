"""How a run that did not finish is recorded: `interrupted` (stopped from outside; the same command
continues it from its checkpoint) or `failed` (the run's own error). Below src.exits, which raises
the stops, and src.training, which records them."""

from __future__ import annotations

import signal
from typing import Any


class Requeued(SystemExit):
    """A launcher's signal handler ended the process (submitit's SIGUSR2: the job checkpointed and
    requeued, then `sys.exit(-1)`; src.exits.Deferred turns that exit into this one): the run goes on
    from its checkpoint when the scheduler starts the job again. Recorded as a SystemExit, it read
    `failed: SystemExit: -1` while the requeued job waited (SLURM holds a requeued job two minutes),
    which a report, or a sweep driver started again, takes for the run's end. The exit code stays
    the launcher's."""

    def __init__(self, signum: int, code: Any) -> None:
        super().__init__(code)
        self.signal = signal.Signals(signum)

    def __str__(self) -> str:
        return (f"{self.signal.name}: the launcher ended the job to requeue it; the run continues from its last "
                "checkpoint when the scheduler starts the job again")


def stop_status(err: BaseException) -> str:
    """result.json's status for a run that `err` ended: a stop from outside (Ctrl-C, SIGTERM: the
    KeyboardInterrupt that src.exits.Stopped is; a launcher's requeue) is `interrupted`."""
    return "interrupted" if isinstance(err, (KeyboardInterrupt, Requeued)) else "failed"
