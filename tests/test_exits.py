"""src/exits.py: one place turns how a task ended into one line and an exit code."""

from __future__ import annotations

import pickle
import signal

import pytest

from src import exits
from src.config import ConfigError
from src.models import PretrainedWeightsError
from src.record.io import OutOfRoom


@pytest.fixture
def handlers():
    """run_task installs SIGINT, SIGTERM (and SIGHUP, SIGUSR1, SIGUSR2) handlers: the test process gets its own back."""
    signums = (signal.SIGINT, signal.SIGTERM, *exits.ALSO_STOPPING)
    before = {s: signal.getsignal(s) for s in signums}
    yield
    for s, handler in before.items():
        signal.signal(s, handler)


def test_a_hangup_or_a_schedulers_warning_signal_stops_a_task_not_its_workers_and_nohup_is_kept(handlers, monkeypatch):
    """SIGHUP (a closed terminal) and SIGUSR1 (SLURM's --signal=USR1@90, scancel --signal=USR1) were left
    at their default: the run died with no result.json, what it had measured lost. Now they stop the task
    as SIGTERM does (Stopped: the run records `interrupted`), in the task's process only: a worker forked
    from it ignores them (its parent ends it). An ignored one (nohup) stays ignored; a launcher's kept."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # nohup's way
    exits.install()
    for signum in (signal.SIGHUP, signal.SIGUSR1):
        handler = signal.getsignal(signum)
        with pytest.raises(exits.Stopped) as stop:
            handler(signum, None)
        assert stop.value.code == 128 + signum and exits.describe(stop.value)[0].startswith(
            f"interrupted by {signal.Signals(signum).name}")
        monkeypatch.setattr(exits.os, "getpid", lambda: -1)  # as in a process forked from this one
        handler(signum, None)  # nothing raised: the worker goes on until its parent ends it
        monkeypatch.undo()
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_IGN
    launcher = signal.getsignal(signal.SIGUSR1)
    exits.install()  # again, as each job does: the same handlers, not wrapped twice
    assert signal.getsignal(signal.SIGUSR1) is launcher


@pytest.mark.parametrize("err, said", [
    (exits.Stopped(signal.SIGTERM, "status 'interrupted' recorded in r"),
     ("interrupted by SIGTERM: status 'interrupted' recorded in r", 143)),
    (exits.Stopped(signal.SIGINT), ("interrupted by Ctrl-C: no run was in progress", 130)),
    (KeyboardInterrupt(), ("interrupted by Ctrl-C: no run was in progress", 130)),
    (exits.Failed("stopped after 5 failed trials"), ("error: stopped after 5 failed trials", 1)),
    (exits.UserError("model.name=x is not a model"), ("error: model.name=x is not a model", 2)),
    (ConfigError("trainer.epochs=0 must be >= 1"), ("error: trainer.epochs=0 must be >= 1", 2)),
    (PretrainedWeightsError("no weights for x"), ("error: no weights for x", 2)),
    (OutOfRoom("no room left on the device writing a (hydra.run.dir=b)"),
     ("error: no room left on the device writing a (hydra.run.dir=b)", 1)),
    (RuntimeError("a bug"), None),
])
def test_each_ending_has_its_line_and_code(err, said):
    assert exits.describe(err) == said


def test_stopped_is_an_interrupt_that_survives_a_trip_to_another_process():
    stop = exits.Stopped(signal.SIGTERM, "kept")
    assert isinstance(stop, KeyboardInterrupt) and str(stop) == "signal SIGTERM"  # what run() records
    back = pickle.loads(pickle.dumps(stop))  # a job in a launcher's worker process hands it back so
    assert (back.signal, back.recorded, back.code) == (signal.SIGTERM, "kept", 143)
    assert exits.stopped(back, "the study's line").signal == signal.SIGTERM
    assert exits.stopped(KeyboardInterrupt(), None).signal == signal.SIGINT


def test_run_task_ends_with_one_line_and_the_code(handlers, capsys):
    def fails() -> None:
        raise ConfigError("dataset.root=/nope does not exist")

    with pytest.raises(SystemExit) as ended:
        exits.run_task(fails)
    assert ended.value.code == 2
    assert capsys.readouterr().err == "error: dataset.root=/nope does not exist\n"
    assert signal.getsignal(signal.SIGTERM) is exits.on_signal and signal.getsignal(signal.SIGINT) is exits.on_signal


def test_run_task_lets_a_bug_show_its_traceback_and_a_clean_end_pass(handlers):
    def bug() -> None:
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        exits.run_task(bug)
    assert exits.run_task(lambda: None) is None
    with pytest.raises(SystemExit) as ended:  # Hydra's own exits (--help, --cfg) pass as they are
        exits.run_task(lambda: (_ for _ in ()).throw(SystemExit(0)))
    assert ended.value.code == 0


def _sent_again(signum: int) -> bool:
    """Whether `signum` comes again within 30 s, as `_not_now` promises when it defers."""
    import time

    received: list[int] = []
    previous = signal.signal(signum, lambda got, frame: received.append(got))
    try:
        deadline = time.monotonic() + 30
        while not received and time.monotonic() < deadline:
            time.sleep(0.01)
        return received == [signum]
    finally:
        signal.signal(signum, previous)


def test_a_signal_inside_omegaconf_waits_until_it_returns():
    """OmegaConf is not safe to interrupt: a stop raised in ListConfig.append left a None in the list
    and its `finally` clean-up then failed on it (a Ctrl-C became a ConfigKeyError, exit 1)."""
    import sys

    from omegaconf import OmegaConf

    frames = []

    def watch(frame, event, _arg):
        if event == "call" and frame.f_code.co_name == "_validate_set":
            frames.append(frame)

    sys.setprofile(watch)
    try:
        OmegaConf.create({"betas": [0.9, 0.999]})
    finally:
        sys.setprofile(None)
    assert frames and exits._not_now(signal.SIGUSR1, frames[0])
    assert _sent_again(signal.SIGUSR1)
    assert not exits._not_now(signal.SIGUSR1, sys._getframe())  # outside it: stop here


def test_a_signal_in_a_generator_being_closed_waits_until_it_is_closed():
    """A suspended generator that the collector closes (OmegaConf's `read_write`) runs its `finally`
    where an exception is printed ("Exception ignored in: <generator object ...>") and dropped."""
    import sys

    said = []

    def suspended():
        try:
            yield
        finally:
            said.append(exits._not_now(signal.SIGUSR1, sys._getframe()))

    held = suspended()
    next(held)
    del held  # closed now, as the collector closes it
    assert said == [True]
    assert _sent_again(signal.SIGUSR1)

    def ended():
        try:
            yield
        finally:
            said.append(exits._not_now(signal.SIGUSR1, sys._getframe()))

    for _ in ended():  # one that runs to its end is not being closed: its clean-up may stop
        pass
    assert said == [True, False]

    def tidies():
        try:
            yield
        finally:
            try:
                raise OSError("a clean-up that meets an error of its own")
            except OSError:
                said.append(exits._not_now(signal.SIGUSR1, sys._getframe()))

    held = tidies()
    next(held)
    del held
    assert said == [True, False, True]
    assert _sent_again(signal.SIGUSR1)


def _frame_in(path: str):
    """A frame of code that lives at `path` (as a library's module would)."""
    import sys
    from pathlib import Path

    scope: dict = {"sys": sys}
    exec(compile("frame = sys._getframe()", str(Path(path)), "exec"), scope)
    return scope["frame"]


@pytest.mark.parametrize("path, waits", [
    ("/x/hydra/_internal/core_plugins/importlib_resources_config_source.py", True),  # reads a config file
    ("/x/hydra/_internal/config_loader_impl.py", True),
    ("/x/hydra/core/override_parser/overrides_parser.py", True),
    ("/x/hydra/_internal/instantiate/_instantiate2.py", True),
    ("/x/hydra/core/utils.py", False),  # run_job: the task runs under it
    ("/x/hydra/_internal/core_plugins/basic_launcher.py", False),
    ("/x/hydra_plugins/ft_optuna_sweeper/sweeper.py", False),
])
def test_a_signal_inside_hydra_s_config_code_waits_and_not_inside_the_task_it_runs(path, waits):
    """Hydra's package config source closes, in a `finally`, a file it had not opened yet when the
    stop came (an UnboundLocalError, exit 1); but the task and a sweep run under Hydra's other code."""
    assert exits._not_now(signal.SIGUSR1, _frame_in(path)) is waits
    if waits:
        assert _sent_again(signal.SIGUSR1)
