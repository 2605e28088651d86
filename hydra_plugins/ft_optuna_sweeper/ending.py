"""How a sweep of any Hydra app ends when it does not end well (an app with its own driver, such as
src.train, ends its own way: src/exits.py). The same contract as src.train's, so that a user sees
one line and an exit code, not Hydra's report of an exception:

    2    a setting that cannot run (SettingError): "error: <the line naming the key>"
    130  Ctrl-C (SIGINT); 143 SIGTERM: "interrupted by Ctrl-C: <what the study holds, how to go on>"

Hydra reports an Exception raised by a sweeper as a traceback and exit 1; SystemExit passes through
it, so the line is printed here and the sweep ends with SystemExit. HYDRA_FULL_ERROR=1 keeps Hydra's
traceback for a SettingError (someone debugging asked for it).

A stop that arrives inside a storage call is delivered again 50 ms later (as src/exits.py does): a
write cut in half would leave the study unable to record the trial as interrupted. Imports nothing
heavy: Hydra imports every module of `hydra_plugins` when it scans.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any, Callable

USER_ERROR = 2
_NOT_HERE = (f"{os.sep}sqlalchemy{os.sep}", f"{os.sep}optuna{os.sep}storages{os.sep}", f"{os.sep}sqlite3{os.sep}")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a sweep; `recorded` says what the study holds (added by the search)."""

    def __init__(self, signum: int = signal.SIGINT, recorded: str | None = None) -> None:
        self.signal = signal.Signals(signum)
        self.recorded = recorded
        super().__init__(f"signal {self.signal.name}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (int(self.signal), self.recorded)


def _on_signal(signum: int, frame: Any) -> None:
    """Raise Interrupted, except inside a storage call: there the signal comes again 50 ms later."""
    while frame is not None:
        if any(part in frame.f_code.co_filename for part in _NOT_HERE):
            threading.Timer(0.05, os.kill, (os.getpid(), signum)).start()
            return
        frame = frame.f_back
    raise Interrupted(signum)


def signum_of(err: KeyboardInterrupt) -> int:
    """The signal behind `err` (ours, src.exits.Stopped's, or a plain KeyboardInterrupt: Ctrl-C)."""
    return int(getattr(err, "signal", signal.SIGINT))


def run(sweep: Callable[[], Any]) -> Any:
    """`sweep()` with SIGINT and SIGTERM raising Interrupted; a SettingError or a stop ends the process
    with one line on stderr and its exit code. Anything else passes to Hydra as before."""
    from hydra_plugins.ft_optuna_sweeper.errors import SettingError

    handlers = None
    if threading.current_thread() is threading.main_thread():  # Python sets handlers only there
        handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in handlers:
            signal.signal(s, _on_signal)
    try:
        return sweep()
    except SettingError as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(USER_ERROR) from None
    except KeyboardInterrupt as err:
        signum = signum_of(err)
        by = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        recorded = getattr(err, "recorded", None) or "no trial had started"
        print(f"interrupted by {by}: {recorded}", file=sys.stderr, flush=True)
        raise SystemExit(128 + signum) from None
    finally:
        if handlers is not None:
            for s, handler in handlers.items():
                signal.signal(s, handler)
