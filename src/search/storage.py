"""The study's storage: sqlite, a journal file or PostgreSQL, each with heartbeats.

A killed worker's trial is failed and retried once with the same parameters (Optuna's stale-trial
machinery: `fail_stale_trials` before each trial, the retry callback), or recorded from its
result.json when that is complete (src.search.results.settle_stale). A damaged storage file is
refused (src.search.storage_damage), never written to; a journal append cut short by a full disk
is cut back to whole lines.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.trial import FrozenTrial, TrialState

from hydra_plugins.ft_optuna_sweeper._report import shown_url
from src.config import ConfigError
from src.record.io import no_room
from src.search.optuna_compat import Heartbeats, rdb_beating_trial_ids, rdb_stale_trial_ids, trial_id
from src.search.storage_damage import NEW_STUDY, damaged, journal_damage, sqlite_damage

log = logging.getLogger(__name__)
HEARTBEAT_ATTR = "sweep:heartbeat"


def _silent_too_long(trial: FrozenTrial, grace_s: float) -> bool:
    """A running trial that never recorded a heartbeat: its worker died between creating it and
    starting the heartbeat thread. Optuna treats such a trial as never stale; it is, once it has
    been running for longer than the grace period (both clocks are the workers' local time)."""
    return trial.datetime_start is not None and (datetime.datetime.now() - trial.datetime_start).total_seconds() > grace_s


class SweepRDBStorage(Heartbeats, RDBStorage):
    """Optuna's RDB storage, whose stale trials also include those that never sent a heartbeat."""

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except optuna.exceptions.StorageInternalError as err:
            if no_room(err) is None:
                raise
            # a full disk: this beat is lost (the trial's own writes say so); the next may get through

    def stale_trial_ids(self, study_id: int) -> list[int]:
        stale = rdb_stale_trial_ids(self, study_id)
        beating = rdb_beating_trial_ids(self, study_id)
        grace = self.grace_period or 2 * (self.heartbeat_interval or 0)
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        return stale + [trial_id(t) for t in running if trial_id(t) not in beating and _silent_too_long(t, grace)]


class SweepJournalStorage(JournalStorage, Heartbeats):
    """Optuna's journal storage has no heartbeats; this one records them as a trial system attr
    (one log line per interval), so Optuna's own stale-trial machinery (`fail_stale_trials` before
    each trial, the retry callback) works on a journal file too."""

    def __init__(self, backend: Any, heartbeat_s: int, grace_s: int, callback: Any):
        super().__init__(backend)
        self._heartbeat_s, self._grace_s, self._callback = heartbeat_s, grace_s, callback

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another worker took this one for dead and failed it; the trial itself will say so
        except OSError as err:
            if no_room(err) is None:
                raise
            # a full disk: this beat is lost (the trial's own writes say so); the next may get through

    def stale_trial_ids(self, study_id: int) -> list[int]:
        now, stale = time.time(), []
        for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beat = t.system_attrs.get(HEARTBEAT_ATTR)
            if (beat is not None and now - float(beat) > self._grace_s) or (beat is None and _silent_too_long(t, self._grace_s)):
                stale.append(trial_id(t))
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._heartbeat_s

    def get_heartbeat_stale_trial_callback(self) -> Any:
        return self._callback


@contextlib.contextmanager
def repeating(fn: Callable[[], None], interval_s: float, name: str) -> Iterator[None]:
    """`fn` on one daemon thread, at once and then every `interval_s`, while the block runs."""
    stop = threading.Event()

    def loop() -> None:
        while True:
            fn()
            if stop.wait(interval_s):
                return

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def heartbeats(storage: Heartbeats, trial_ids: list[int]) -> contextlib.AbstractContextManager[None]:
    """The trials' heartbeats, recorded every interval on one thread while the block runs (as
    Optuna's own heartbeat thread would, which is private and runs only inside `optimize`)."""

    def beat() -> None:
        for trial in trial_ids:
            storage.record_heartbeat(trial)

    return repeating(beat, storage.get_heartbeat_interval(), "sweep-heartbeats")


class RetryStaleTrial(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a dead worker's trial, queued with its parameters only: the dead trial's
    measurements (curve, epochs trained, run folder) and heartbeat are not the retry's."""

    def __init__(self, max_retry: int) -> None:
        super().__init__(max_retry=max_retry)
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        clean = copy.deepcopy(trial)
        clean.user_attrs = {"retry_of": trial.user_attrs.get("retry_of", trial.number)}
        clean.system_attrs = {k: v for k, v in trial.system_attrs.items() if k != HEARTBEAT_ATTR}
        # Optuna queues the parameters again while they have been retried fewer than max_retry times
        # (its retry_history: the attempts before this one); say which of the two happens.
        retried = len(trial.system_attrs.get("retry_history") or [])
        if retried < self.max_retry:
            log.warning("trial %d: its worker stopped sending heartbeats; failed, and its parameters queued once more",
                        trial.number)
        else:
            log.warning("trial %d: its worker stopped sending heartbeats; failed, and not queued again: it was "
                        "already a retry of trial %d's parameters (%d retry at most)", trial.number,
                        clean.user_attrs["retry_of"], self.max_retry)
        super().__call__(study, clean)



class GuardedJournalFile(JournalFileBackend):
    """Optuna's journal file, with two guards: nothing is appended after a line cut short (Optuna's
    reader would then fail on that line for good), and an append that fails midway (a full disk)
    is cut back off, so the file stays whole lines. Readers that find the file damaged name it."""

    def __init__(self, path: Path) -> None:
        self.path, self.lock = path, JournalFileSymlinkLock(str(path))
        super().__init__(str(path), lock_obj=self.lock)

    @contextlib.contextmanager
    def locked(self) -> Any:
        """The journal's lock (a symlink beside it), held; a full disk that refuses the link is DiskFull."""
        try:
            self.lock.acquire()
        except (OSError, RuntimeError) as err:  # the lock's release after a failed link raises RuntimeError
            raise no_room(err, self.path) or err
        try:
            yield
        finally:
            self.lock.release()

    def check(self) -> None:
        """Refuse the file if it is damaged; under the lock, so a worker's append in progress is not."""
        with self.locked():
            damage = journal_damage(self.path)
        if damage is not None:
            raise damage

    def read_logs(self, log_number_from: int) -> Any:
        try:
            yield from super().read_logs(log_number_from)
        except ValueError:  # Optuna's "Invalid log format." or a JSONDecodeError: a line it cannot read
            raise journal_damage(self.path) or damaged(self.path, "Optuna cannot read it", NEW_STUDY) from None

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = ("".join(json.dumps(entry, separators=(",", ":")) + "\n" for entry in logs)).encode()
        with self.locked():
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    raise journal_damage(self.path) or damaged(self.path, "its last line is cut short", NEW_STUDY)
                view = memoryview(data)
                try:
                    while view:
                        view = view[os.write(fd, view):]
                except BaseException as err:  # a full disk, or a signal between two writes
                    # Our own half line is cut off (we hold the lock: nobody appended after it); whole
                    # lines stay, since another worker may have read them already.
                    written = data[:len(data) - len(view)]
                    os.ftruncate(fd, size + written.rfind(b"\n") + 1)
                    if isinstance(err, OSError):
                        raise no_room(err, self.path) or OSError(err.errno, err.strerror, str(self.path)) from None
                    raise
                try:
                    os.fsync(fd)
                except OSError as err:  # the lines are whole; the disk may not hold them
                    raise no_room(err, self.path) or err
            finally:
                os.close(fd)


# Databases whose tables this process has held to its Optuna's schema once. The check reads Alembic's
# migration scripts from disk (60 ms); a sweep's trials in the sweeper's own process opened the same
# database once each. A job in another process (SLURM, joblib), maybe with another Optuna, checks it.
_SCHEMA_CHECKED: set[str] = set()


def make_storage(url: str, heartbeat_s: int, grace_s: int) -> SweepRDBStorage | SweepJournalStorage:
    """The study's storage with heartbeats; a damaged storage file is refused (DamagedStorage)
    before anything is written to it."""
    retry = RetryStaleTrial(max_retry=1)
    if url.startswith("journal:"):
        path = Path(url.removeprefix("journal:"))
        if not path.parent.is_dir():
            raise ConfigError(f"hydra.sweeper.storage={url}: folder {path.parent} does not exist")
        existed = path.is_file()
        backend = GuardedJournalFile(path)
        if existed:
            backend.check()
        return SweepJournalStorage(backend, heartbeat_s, grace_s, retry)
    sqlite = _sqlite_path(url)
    if sqlite is not None and (damage := sqlite_damage(sqlite)) is not None:
        raise damage
    # Workers started together on a fresh database race to create Optuna's tables; the loser gets
    # a DDL error (seen on PostgreSQL: duplicate key in pg_type). The tables exist by then: retry.
    # A URL that cannot be parsed or names no installed driver is not retried.
    for attempt in range(5):
        try:
            storage = SweepRDBStorage(url, heartbeat_interval=heartbeat_s, grace_period=grace_s,
                                      heartbeat_stale_trial_callback=retry,
                                      skip_compatibility_check=url in _SCHEMA_CHECKED)
            _SCHEMA_CHECKED.add(url)
            return storage
        except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, ImportError, ValueError) as err:
            raise ConfigError(f"hydra.sweeper.storage={url}: {_first_line(err)} (expected sqlite:///file.db, "
                              "journal:/path/file.log or postgresql+psycopg://user@host/db)") from None
        except RuntimeError as err:  # tables of another Optuna's schema (optuna.storages._rdb's check)
            if "table schema" not in str(err):
                raise
            raise ConfigError(f"hydra.sweeper.storage={shown_url(url)}: {_first_line(err)} (or upgrade the "
                              f"database: optuna storage upgrade --storage URL)") from None
        except sqlalchemy.exc.SQLAlchemyError as err:
            if (full := no_room(err, sqlite=sqlite)) is not None:  # no retry makes room
                raise full from None
            if attempt == 4:
                raise ConfigError(f"hydra.sweeper.storage={shown_url(url)}: {_first_line(err)}") from None
            log.warning("storage %s not ready (%s); retrying", shown_url(url), type(err).__name__)
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


def storage_file(url: str) -> Path | None:
    """The local file a storage URL keeps its studies in (a sqlite database or a journal), or None."""
    return Path(url.removeprefix("journal:")) if url.startswith("journal:") else _sqlite_path(url)


def _sqlite_path(url: str) -> Path | None:
    """The database file of a sqlite URL (None for another database, or sqlite in memory)."""
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        return None  # make_storage says why
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


