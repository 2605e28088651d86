"""How a process of this project ends: the one place that installs the SIGINT and SIGTERM handlers
(and SIGHUP's, SIGUSR1's and SIGUSR2's where nobody else handles or ignores them)
and turns what happened into one line on stderr and an exit code (lightning-hydra-template's
`task_wrapper`, for `python -m src.train` and the Optuna sweeper it runs).

    0    done
    1    a failure: a run that failed, a sweep that stopped after max_failed failed trials, a full disk
    2    a user error: a setting that cannot run (ConfigError), pretrained weights that cannot be had
    130  stopped by Ctrl-C (SIGINT); 143 by SIGTERM (129 SIGHUP, 138 SIGUSR1, 140 SIGUSR2 where no
         launcher handles them): 128 + the signal, as a shell reports it

What happened travels up as a typed exception: `Stopped` (which signal, and what was recorded),
`Failed` and `UserError` (the line), `src.record.io.OutOfRoom` (a full disk, the line). They are
BaseExceptions because Hydra reports an Exception raised in a task function, a sweeper or a
callback its own way (a traceback, exit 1), and keeps a multirun job's Exception as its result;
these pass through Hydra to `run_task`. Code below the entrypoints raises ordinary exceptions
(ConfigError, ...); whoever adds context (the job, the sweeper) raises one of these.

The decode worker processes of src/data/workers.py set their own handlers (they inherit these
through fork, and a worker must die of SIGTERM rather than report it as its parent's stop).

Imports nothing heavy at module level: `src.train` installs `while_starting` before its imports.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any, Callable, NoReturn

from src.record.ending import Requeued
from src.record.io import in_whole_record

FAILURE = 1
USER_ERROR = 2

# Code that a stop must not cut in half: a storage write stopped midway leaves the session
# unusable, and the trial could then not be recorded as interrupted (nor be retried). And torch's
# serialization: torch.save writes through a Python file from C++, which turns an exception raised
# in that write into "RuntimeError: ... unexpected pos": a Ctrl-C during a checkpoint's save was
# recorded as a failed run, not an interrupted one (seen once, in tests/test_trust_cli.py).
#
# And OmegaConf: its nodes are not safe to interrupt. ListConfig.append leaves a None in the list when
# the interrupt lands inside it (its `except Exception` lets a KeyboardInterrupt through untidied), and a
# `finally` further up (read_write, flag restores) then fails on that None: a Ctrl-C while the optimizer
# was built (hydra.utils.instantiate makes a DictConfig of it) ended as a 5-line ConfigKeyError, exit 1,
# result.json `failed`. Deferring the stop there covers every OmegaConf call at once: the gate's
# compose and to_run_config, a sweeper composing a trial, instantiate, and any added later; making only
# the run's values plain would leave the others. No long work runs under an OmegaConf frame (Hydra
# calls the task, and our resolvers are short), so the stop comes a few ms after the call returns.
#
# Hydra's config code is no safer (its package config source reads a file in a `try` whose `finally`
# closes a file not yet opened: an UnboundLocalError, a traceback, exit 1), but the task and a sweep's
# loop run under Hydra's other frames: only the modules that compose, parse overrides and instantiate.
_HYDRA_CONFIG = tuple(os.path.join(f"{os.sep}hydra", *part.split("/")) for part in (
    "_internal/config_loader_impl.py", "_internal/config_repository.py", "_internal/defaults_list.py",
    "_internal/core_plugins/file_config_source.py", "_internal/core_plugins/importlib_resources_config_source.py",
    "_internal/core_plugins/structured_config_source.py", "plugins/config_source.py", "core/config_store.py",
    "core/default_element.py", "core/override_parser/", "_internal/grammar/", "_internal/instantiate/", "compose.py"))
_NOT_HERE = (f"{os.sep}sqlalchemy{os.sep}", f"{os.sep}optuna{os.sep}storages{os.sep}", f"{os.sep}sqlite3{os.sep}",
             f"{os.sep}torch{os.sep}serialization.py", f"{os.sep}omegaconf{os.sep}", *_HYDRA_CONFIG)
# Nor code whose exception Python drops ("Exception ignored in ..."): a finalizer, or a weakref
# callback (weakref.py's dictionaries and `finalize`), which the garbage collector runs inside
# whatever the main thread is doing. Raised there, the stop is printed and lost, and the run goes on.
# A generator being closed is the same (GeneratorExit is the exception being handled, in its `finally`
# or `except`): when the collector finalizes a suspended one (OmegaConf's `read_write` context manager,
# left by an earlier error), what its clean-up raises is printed as "Exception ignored in: <generator
# object read_write>" and dropped, and the stop with it.
_DROPPED_IN = (f"{os.sep}weakref.py",)


class Stopped(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: a run records `status: interrupted` (run() treats it as the
    KeyboardInterrupt it is). `recorded` says what was kept and where, added by whoever knows."""

    def __init__(self, signum: int = signal.SIGINT, recorded: str | None = None) -> None:
        self.signal = signal.Signals(signum)
        self.recorded = recorded
        super().__init__(f"signal {self.signal.name}")

    def __reduce__(self) -> tuple[Any, ...]:  # a job in a launcher's worker process hands it back pickled
        return type(self), (int(self.signal), self.recorded)

    @property
    def code(self) -> int:
        return 128 + int(self.signal)

    @property
    def by(self) -> str:
        return "Ctrl-C" if self.signal == signal.SIGINT else self.signal.name


class Failed(BaseException):
    """The task failed, and this line (without "error: ") says why; exit 1."""

    code = FAILURE


class UserError(Failed):
    """A setting that cannot run, met where Hydra would report it its own way; exit 2."""

    code = USER_ERROR


def stopped(err: KeyboardInterrupt, recorded: str | None) -> Stopped:
    """`err` as a Stopped that says what was recorded (a plain KeyboardInterrupt is Ctrl-C)."""
    return Stopped(err.signal if isinstance(err, Stopped) else signal.SIGINT, recorded)


def is_user_error(err: BaseException) -> bool:
    """A setting that cannot run, or weights that cannot be had: the user's to fix (exit 2)."""
    from hydra_plugins.ft_optuna_sweeper.errors import SettingError  # a ConfigError is one; so are the plugin's own

    if isinstance(err, (SettingError, UserError)):
        return True
    from src.models import PretrainedWeightsError  # loads torch: only asked about errors that are not ConfigErrors

    return isinstance(err, PretrainedWeightsError)


def _closing_generator() -> bool:
    """Whether a generator is being closed: GeneratorExit is the exception being handled, or is what
    one being handled (in an `except` inside the generator's clean-up) was raised during."""
    err = sys.exc_info()[1]
    while err is not None:
        if isinstance(err, GeneratorExit):
            return True
        err = err.__context__
    return False


def _not_now(signum: int, frame: Any) -> bool:
    """Whether `frame` is inside a storage call, OmegaConf, a finalizer, a closing generator or a
    `whole_record()` block: then the signal is sent again 50 ms later (until that call is done) and True
    is returned."""
    if in_whole_record() or _closing_generator():
        threading.Timer(0.05, os.kill, (os.getpid(), signum)).start()
        return True
    while frame is not None:
        code = frame.f_code
        if (any(part in code.co_filename for part in _NOT_HERE) or code.co_name == "__del__"
                or code.co_filename.endswith(_DROPPED_IN)):
            threading.Timer(0.05, os.kill, (os.getpid(), signum)).start()
            return True
        frame = frame.f_back
    return False


def on_signal(signum: int, frame: Any) -> None:
    """SIGINT's and SIGTERM's handler: raise Stopped, except where `_not_now` says it cannot be raised
    (a storage call, OmegaConf, a finalizer), where the signal is delivered again 50 ms later, until
    that call is done."""
    if not _not_now(signum, frame):
        raise Stopped(signum)


class Deferred:
    """A handler that a launcher installed in Python (submitit's SIGUSR2: checkpoint and requeue, or
    end a run that timed out too often, by raising out of whatever runs), run where its exception
    can travel: inside a finalizer Python would print and drop it, and the run would go on until
    the scheduler's SIGTERM at the limit, neither requeued nor recorded as timed out. And run only
    in the process that installed it: SLURM signals every process of a job step, and a worker
    forked from the run (decoding, drawing figures) would otherwise checkpoint and requeue the job
    too, or raise inside its task; there it does nothing. The launcher's exit (submitit requeued the
    job) travels as src.record.ending.Requeued, which the run records as `interrupted`."""

    def __init__(self, handler: Callable[[int, Any], Any]) -> None:
        self.handler = handler
        self.pid = os.getpid()

    def __call__(self, signum: int, frame: Any) -> None:
        if os.getpid() == self.pid and not _not_now(signum, frame):
            try:
                self.handler(signum, frame)
            except Requeued:
                raise
            except SystemExit as end:  # only a launcher's handler exits (ours raises Stopped)
                raise Requeued(signum, end.code) from None


# Signals a launcher may handle in Python in a job's process: submitit's checkpoint signal is SIGUSR2.
LAUNCHER_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)
# Signals whose default action ends the process and that a user or a scheduler sends to stop a job:
# a closed terminal (SIGHUP), SLURM's `--signal=USR1@90` warning before the time limit or
# `scancel --signal=USR1`. Left at their default, they ended a run with no result.json and what it
# had measured lost; a launcher's Python handler for one is kept, and one ignored (`nohup`) stays so.
ALSO_STOPPING = (signal.SIGHUP, *LAUNCHER_SIGNALS)


def install() -> None:
    """Ctrl-C and SIGTERM (a scheduler's kill, `timeout`, `docker stop`) end a task alike: a run
    records what it measured and `status: interrupted`, instead of dying without a result.json; so do
    ALSO_STOPPING's signals where nobody handles or ignores them, in this process only (as `Deferred`:
    a process forked from it, decoding or drawing, ignores them and its parent ends it). Also called
    in each job: a launcher's worker processes (joblib, submitit) never ran run_task; a Python handler
    the launcher set there (LAUNCHER_SIGNALS) is kept, and run as `Deferred`."""
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    for signum in ALSO_STOPPING:
        handler = signal.getsignal(signum)
        if isinstance(handler, Deferred):  # installed before, here or in a process this one was forked from
            if handler.pid != os.getpid():
                signal.signal(signum, Deferred(handler.handler))
        elif handler == signal.SIG_DFL or handler is _starting:
            signal.signal(signum, Deferred(on_signal))
        elif callable(handler):
            signal.signal(signum, Deferred(handler))


def while_starting() -> None:
    """Ctrl-C or SIGTERM (or ALSO_STOPPING's, unhandled) while the imports load (seconds): one line,
    nothing started yet."""
    signal.signal(signal.SIGINT, _starting)
    signal.signal(signal.SIGTERM, _starting)
    for signum in ALSO_STOPPING:
        if signal.getsignal(signum) == signal.SIG_DFL:
            signal.signal(signum, _starting)


def _starting(signum: int, _frame: Any) -> NoReturn:
    print(f"interrupted by {Stopped(signum).by} while starting: nothing was run", file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)


def describe(err: BaseException) -> tuple[str, int] | None:
    """The one line and the exit code for how the task ended; None for an error nobody expected
    (a bug: its traceback is what helps)."""
    from src.record.io import OutOfRoom

    if isinstance(err, KeyboardInterrupt):
        stop = err if isinstance(err, Stopped) else stopped(err, None)
        return f"interrupted by {stop.by}: {stop.recorded or 'no run was in progress'}", stop.code
    if isinstance(err, Failed):
        return f"error: {err}", err.code
    if isinstance(err, OutOfRoom):
        return f"error: {err.line}", err.code
    if isinstance(err, Exception) and is_user_error(err):
        return f"error: {err}", USER_ERROR
    return None


def run_task(task: Callable[[], object]) -> None:
    """Run `task` with the handlers installed; if it does not end well, one line on stderr and the
    exit code (see the module's docstring). SystemExit (Hydra's own, --help) passes as it is."""
    install()
    try:
        task()
    except SystemExit:
        raise
    except BaseException as err:
        said = describe(err)
        if said is None:
            raise
        print(said[0], file=sys.stderr, flush=True)
        sys.exit(said[1])
