"""Draw and save a report's figures, several at a time where the machine allows.

A report's figures are independent and each is seconds of single-threaded matplotlib (laying out and
rasterising text and panels): at the end of `make sweep` they were the largest piece of its time
outside training that was ours (about 9 s on 2 cores; docs/sweeps-measured.md, "Cheap trials").
So they are drawn by forked worker processes, one per core up to `MAX_WORKERS`: a fork inherits
the loaded modules and the report's data, so a worker starts in milliseconds and nothing is
pickled but the figure's name and its outcome. The workers only draw (no torch, no logging, no
output); where fork is not offered (Windows, macOS's default) or there is one core, the figures are
drawn here, one after another, as they are where a worker pool breaks or a figure takes longer
than `TIMEOUT_S`: a report is never lost to its parallelism.
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from src.machine import usable_cpus

MAX_WORKERS = 4
TIMEOUT_S = 120.0  # one figure: the largest take seconds; a worker that hangs this long is given up on
DPI = 110

# The figures of the drawing now in progress, for the forked workers (which inherit this module's
# state; a name is all they are sent).
_JOBS: dict[str, tuple[Callable[[], Any], Path]] = {}


def save_figures(drawers: Mapping[str, Callable[[], Any]], out: Path) -> dict[str, Path | str]:
    """Each drawer's figure saved as `out/<name>.png`: {name: the PNG, or why it failed (one line)}.
    A figure that fails leaves no PNG (an earlier report's is removed)."""
    jobs = {name: (draw, out / f"{name}.png") for name, draw in drawers.items()}
    outcomes: dict[str, Path | str] = {}
    workers = min(usable_cpus(), MAX_WORKERS, len(jobs))
    if workers > 1 and "fork" in multiprocessing.get_all_start_methods() and sys.platform == "linux":
        outcomes = _in_workers(jobs, workers)
    for name in jobs:
        if name not in outcomes:  # no worker pool, or what a broken one left undrawn
            outcomes[name] = _draw(*jobs[name])
    for name, outcome in outcomes.items():
        if not isinstance(outcome, Path):
            jobs[name][1].unlink(missing_ok=True)
    return {name: outcomes[name] for name in jobs}




def _in_workers(jobs: dict[str, tuple[Callable[[], Any], Path]], workers: int) -> dict[str, Path | str]:
    """What forked workers drew before they finished or one of them failed to answer in time."""
    outcomes: dict[str, Path | str] = {}
    _JOBS.clear()
    _JOBS.update(jobs)
    pool = None
    try:
        pool = multiprocessing.get_context("fork").Pool(workers, initializer=_worker_signals)
        results = pool.imap_unordered(_draw_named, list(jobs))
        for _ in jobs:
            name, outcome = results.next(timeout=TIMEOUT_S)
            outcomes[name] = outcome
    except Exception:  # noqa: BLE001  a pool that cannot start or breaks: the rest are drawn here
        pass
    finally:
        if pool is not None:
            pool.terminate()  # also a hung worker's end
            pool.join()
        _JOBS.clear()
    return outcomes


def _worker_signals() -> None:
    """A worker leaves Ctrl-C to the report's process (the whole process group gets it) and ends
    quietly when that process ends the pool: it does not inherit the run's handlers (src.exits),
    which would print a traceback from every worker under the one line a stopped run prints."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _draw_named(name: str) -> tuple[str, Path | str]:
    return name, _draw(*_JOBS[name])


def _draw(draw: Callable[[], Any], path: Path) -> Path | str:
    import matplotlib.pyplot as plt

    fig = None
    try:
        fig = draw()
        fig.savefig(path, dpi=DPI)
        return path
    except Exception as err:  # one figure's failure must not cost the page or the other figures
        from src.reporting.page import first_line  # page imports this module

        return f"{type(err).__name__}: {first_line(err)}".rstrip(": ")
    finally:
        if fig is not None:
            plt.close(fig)
