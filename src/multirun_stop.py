"""What a plain multirun says when Ctrl-C or SIGTERM stops it while its jobs run in a launcher's worker
processes (`hydra/launcher=joblib`).

With the basic launcher a job runs in the driver, and its own handler names the result.json it recorded
(src/train.py, `recorded`). Under joblib the signal reaches the driver while it waits: the jobs record
`interrupted` in their workers, and the driver's line said `no run was in progress`, with two runs
just recorded as interrupted and the folder of the finished ones unnamed. The driver names them here,
from the sweep folder, once the workers have let their folders go.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

from src import exits

WAIT_S = 10.0  # a worker records its run on the signal and lets its folder's lock go; no longer than this
_started: tuple[Path, float] | None = None  # this process's multirun: its sweep folder and start time


def multirun_started(sweep_dir: Path) -> None:
    """Called by the driver's callback when a multirun starts."""
    global _started
    _started = (sweep_dir, time.time())


def _recorded_since(sweep_dir: Path, since: float) -> tuple[list[Path], list[str]]:
    """The result.json files under `sweep_dir`'s job folders that record `interrupted`, written since
    `since`, once no process holds those folders (or WAIT_S has passed); and the job folders written
    since that hold a run's config.yaml and no result.json (a worker killed with its driver)."""
    from src.record import lock
    from src.record.io import CONFIG_FILE, RESULT_FILE, read_json_object

    try:
        jobs = sorted(d for d in sweep_dir.iterdir() if d.is_dir() and d.stat().st_mtime >= since - 1)
    except OSError:
        return [], []
    deadline = time.monotonic() + WAIT_S
    while any(lock.in_use(d) for d in jobs) and time.monotonic() < deadline:
        time.sleep(0.1)
    found, cut = [], [j.name for j in jobs if (j / CONFIG_FILE).is_file() and not (j / RESULT_FILE).exists()]
    for job in jobs:
        try:
            if (job / RESULT_FILE).stat().st_mtime >= since and read_json_object(job / RESULT_FILE).get("status") == "interrupted":
                found.append(job / RESULT_FILE)
        except (OSError, ValueError):
            continue
    return found, cut


def said(err: KeyboardInterrupt) -> KeyboardInterrupt:
    """`err` as src.exits will say it: a multirun's stop that no job described (the jobs ran in other
    processes) names the runs recorded as interrupted and the folder of the finished ones."""
    stop = err if isinstance(err, exits.Stopped) else exits.stopped(err, None)
    if stop.recorded is not None or _started is None:
        return stop
    sweep_dir, since = _started
    records, cut = _recorded_since(sweep_dir, since)
    what = (f"status 'interrupted' recorded in {', '.join(map(str, records))}" if records
            else "no run was recorded as interrupted")
    if cut:  # their workers were ended with the driver (a signal to it alone): resumable, not lost
        from src.reporting.runs import sweep_dir_override

        what += (f"; stopped without a record: {', '.join(cut)} (the same command with "
                 f"{sweep_dir_override(sweep_dir)} resumes them, each from its last checkpoint if it has one)")
    stop.recorded = (f"{what}; finished runs are kept in {sweep_dir} "
                     f"(python -m src.report {shlex.quote(str(sweep_dir))})")
    return stop
