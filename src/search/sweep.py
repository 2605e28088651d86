"""The study behind the project's Optuna search (`python -m src.train -m sweep=default`, or
`hydra/sweeper=optuna`: hydra_plugins/ft_optuna_sweeper drives it through src/search/launched.py).

Everything here is about one study, whoever runs its trials: the checks of its objectives and search
space before any trial trains; its storage (sqlite, a journal file or PostgreSQL, each with
heartbeats, so that a killed worker's trial is failed and retried once with the same parameters, or
recorded from its result.json when that is complete; a damaged storage file is refused, never
written to); its identity (a study is one experiment: it records, when it is created, the resolved training
config less the searched keys and the settings that change no measurement, the objectives and the
search space, and a resume with anything else is refused); the folder it owns (`study.json`: a
second study there is refused); the exact budget (`n_trials` trials complete or are pruned with any
number of workers: a trial whose place another worker took first is failed as `surplus`); the
Pareto set, the summary of what the search cost, and the Pareto set re-run on more seeds and
reported on test (`rerun_seeds`; test is reported, never selected on).
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import json
import logging
import os
import random
import signal
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.trial import FrozenTrial, TrialState

from src.config import ConfigError, RunConfig
from src.record.io import RESULT_FILE, no_room, read_json_object, write_json
from src.record.schema import RunRecord
from src.training.run import preflight, run
from src.reporting.stats import format_ci, mean_ci
from src.gate import STUDY_FILE, check_overrides, compose_train, to_run_config

log = logging.getLogger("src.search.sweep")
# What a study may optimise, from result.json, and which way. Test metrics are not on offer: test
# is reported once for the selected configuration, never selected on.
OBJECTIVES = {"val_acc": "maximize", "val_balanced_acc": "maximize", "train_flops": "minimize", "train_time_s": "minimize"}
MAXIMISE = {k for k, d in OBJECTIVES.items() if d == "maximize"}
PARAM_KEYS = {"float": {"type", "low", "high", "log", "step"}, "int": {"type", "low", "high", "log", "step"},
              "categorical": {"type", "choices"}}
# Training settings that change nothing a trial measures: a study resumed with other values is the
# same experiment. Everything else in the config is part of the study's identity.
NOT_MEASURED = ("logger.", "trainer.progress", "trainer.save_model", "trainer.num_threads")
# ... unless a time is measured: threads change the training time.
TIMED = {"train_time_s": ("trainer.num_threads",)}
OWNER_FILE = STUDY_FILE  # which study a sweep folder belongs to
HEARTBEAT_ATTR = "sweep:heartbeat"


# Code that a KeyboardInterrupt must not cut in half: a storage write stopped midway leaves the
# session unusable, and the trial could then not be recorded as interrupted (nor be retried).
_NOT_HERE = (f"{os.sep}sqlalchemy{os.sep}", f"{os.sep}optuna{os.sep}storages{os.sep}", f"{os.sep}sqlite3{os.sep}")


def interrupt(signum: int, frame: Any) -> None:
    """The sweeper's Ctrl-C and SIGTERM handler: both end the sweep alike (run() records `status:
    interrupted`, the trial is failed as interrupted and queued again on resume); SIGTERM with
    src.training.run.interrupt_on_sigterm's message. Inside a storage call the signal is delivered
    again 50 ms later, until that call is done."""
    while frame is not None:
        if any(part in frame.f_code.co_filename for part in _NOT_HERE):
            threading.Timer(0.05, os.kill, (os.getpid(), signum)).start()
            return
        frame = frame.f_back
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}" if signum != signal.SIGINT else "")


# --- checking a study file before anything trains ------------------------------------------------

def check_objectives(objectives: Any, base: RunConfig, params: dict[str, Any]) -> list[str]:
    """Objectives a trial can measure, on validation only, each once."""
    if isinstance(objectives, str) or not isinstance(objectives, list) or not objectives:
        raise ConfigError(f"hydra.sweeper.objectives={objectives!r} must be a non-empty list, e.g. [val_acc, train_flops]")
    allowed = ", ".join(OBJECTIVES)
    for o in objectives:
        if isinstance(o, str) and o.startswith("test"):
            raise ConfigError(
                f"hydra.sweeper.objectives: {o} is measured on the test split, which a sweep never selects on (test is "
                f"reported once for the selected configuration: hydra.sweeper.rerun_seeds); use a validation metric ({allowed})"
            )
        if o not in OBJECTIVES:
            raise ConfigError(f"hydra.sweeper.objectives: {o!r} is not an objective (allowed: {allowed})")
    twice = sorted({o for o in objectives if objectives.count(o) > 1})
    if twice:
        raise ConfigError(f"hydra.sweeper.objectives={objectives}: {twice[0]} is given twice")
    if objectives[0] not in MAXIMISE:
        raise ConfigError(
            f"hydra.sweeper.objectives={objectives}: the first must be a validation accuracy ({' | '.join(sorted(MAXIMISE))}); "
            "it ranks trials for the summary and the pruner, costs come after it"
        )
    if "train_flops" in objectives and (not base.trainer.count_flops or "trainer.count_flops" in params):
        raise ConfigError("hydra.sweeper.objectives: train_flops is not measured with trainer.count_flops=false "
                          "(set it true, or drop train_flops)")
    return list(objectives)


def check_space(params: Any, base_over: list[str], groups: int) -> None:
    """The search space: training keys that exist, types and bounds that make sense, and values at
    both ends (each choice) that make a valid training config, so no trial fails on its config."""
    if not isinstance(params, dict) or not params:
        raise ConfigError("hydra.sweeper.params must map training keys to sweep values such as interval(1,10) or choice(0,1)")
    set_elsewhere = {o.split("=", 1)[0].lstrip("+~") for o in base_over if "=" in o}
    for key, p in params.items():
        where = f"hydra.sweeper.params.{key}"
        if not isinstance(p, dict):
            raise ConfigError(f"{where} must be a mapping with type (float | int | categorical)")
        kind = p.get("type")
        if kind not in PARAM_KEYS:
            raise ConfigError(f"{where}.type={kind!r} is not allowed (float | int | categorical)")
        extra = sorted(set(p) - PARAM_KEYS[kind])
        if extra:
            raise ConfigError(f"{where}.{extra[0]} is not a key of a {kind} param ({', '.join(sorted(PARAM_KEYS[kind]))})")
        if key in set_elsewhere:
            raise ConfigError(f"{where}: {key} is searched and also set by an override (the preset or the "
                              "command line); a sampled value would replace it")
        if kind == "categorical":
            values = p.get("choices")
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{where}.choices must be a non-empty list")
        else:
            low, high = p.get("low"), groups if (kind == "int" and p.get("high") == "groups") else p.get("high")
            number = int if kind == "int" else (int, float)
            for name, v in (("low", low), ("high", high)):
                if isinstance(v, bool) or not isinstance(v, number):
                    raise ConfigError(f"{where}.{name}={p.get(name)!r} must be {'an integer' if kind == 'int' else 'a number'}"
                                      + (" or groups" if kind == "int" and name == "high" else ""))
            if low > high:
                raise ConfigError(f"{where}: low={low} is above high={high}")
            if not isinstance(p.get("log", False), bool):
                raise ConfigError(f"{where}.log={p['log']!r} must be true or false")
            if p.get("log") and low <= 0:
                raise ConfigError(f"{where}: log=true needs low > 0 (low={low})")
            if p.get("step") is not None and (p.get("log") or isinstance(p["step"], bool)
                                              or not isinstance(p["step"], number) or p["step"] <= 0):
                raise ConfigError(f"{where}.step={p['step']!r} must be a positive number, and not with log=true")
            values = [low, high]
        for v in values:
            try:
                check_overrides(base_over + [f"{key}={v}"])
                preflight(to_run_config(compose_train(base_over + [f"{key}={v}"])))  # model-dependent checks too
            except ConfigError as err:
                raise ConfigError(f"{where}: {err}") from None
            except (HydraException, OmegaConfBaseException) as err:
                raise ConfigError(f"{where}={v!r}: {str(err).splitlines()[0]}") from None


def study_identity(base: RunConfig, params: dict[str, Any], objectives: list[str]) -> dict[str, Any]:
    """What a trial of this study measures: every training setting except the searched ones and
    those that change no measurement, plus the objectives and the search space. JSON-shaped, so it
    compares equal after a round trip through any storage."""
    timed = {k for o in objectives for k in TIMED.get(o, ())}
    config = {k: v for k, v in _flatten(base.to_dict()).items()
              if k not in params and (k in timed or not _not_measured(k))}
    return json.loads(json.dumps({"config": config, "objectives": objectives, "params": params}, sort_keys=True))


def _not_measured(key: str) -> bool:
    return any(key.startswith(n) if n.endswith(".") else key == n for n in NOT_MEASURED)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def identity_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """'key: old -> new' for every setting that differs (config keys flat; objectives; params.KEY)."""
    flat_old = _flatten(old.get("config", {})) | {"objectives": old.get("objectives")} | {
        f"params.{k}": v for k, v in (old.get("params") or {}).items()}
    flat_new = _flatten(new.get("config", {})) | {"objectives": new.get("objectives")} | {
        f"params.{k}": v for k, v in (new.get("params") or {}).items()}
    missing = object()
    return [f"{k}: {json.dumps(flat_old.get(k, missing)) if k in flat_old else '(unset)'} -> "
            f"{json.dumps(flat_new[k]) if k in flat_new else '(unset)'}"
            for k in sorted(set(flat_old) | set(flat_new)) if flat_old.get(k, missing) != flat_new.get(k, missing)]


# --- storages with heartbeats ---------------------------------------------------------------------

def _silent_too_long(trial: FrozenTrial, grace_s: float) -> bool:
    """A running trial that never recorded a heartbeat: its worker died between creating it and
    starting the heartbeat thread. Optuna treats such a trial as never stale; it is, once it has
    been running for longer than the grace period (both clocks are the workers' local time)."""
    return trial.datetime_start is not None and (datetime.datetime.now() - trial.datetime_start).total_seconds() > grace_s


class SweepRDBStorage(RDBStorage):
    """Optuna's RDB storage, whose stale trials also include those that never sent a heartbeat."""

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except optuna.exceptions.StorageInternalError as err:
            if no_room(err) is None:
                raise
            # a full disk: this beat is lost (the trial's own writes say so); the next may get through

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        from optuna.storages._rdb import models  # the heartbeat table has no public reader
        from optuna.storages._rdb.storage import _create_scoped_session

        with _create_scoped_session(self.scoped_session) as session:
            beating = {row[0] for row in session.query(models.TrialHeartbeatModel.trial_id)
                       .join(models.TrialModel).filter(models.TrialModel.study_id == study_id)}
        grace = self.grace_period or 2 * (self.heartbeat_interval or 0)
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        return stale + [t._trial_id for t in running if t._trial_id not in beating and _silent_too_long(t, grace)]


class SweepJournalStorage(JournalStorage, BaseHeartbeat):
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

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now, stale = time.time(), []
        for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beat = t.system_attrs.get(HEARTBEAT_ATTR)
            if (beat is not None and now - float(beat) > self._grace_s) or (beat is None and _silent_too_long(t, self._grace_s)):
                stale.append(t._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._heartbeat_s

    def get_heartbeat_stale_trial_callback(self) -> Any:
        return self._callback


class RetryStaleTrial(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a dead worker's trial, queued with its parameters only: the dead trial's
    measurements (curve, epochs trained, run folder) and heartbeat are not the retry's."""

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        clean = copy.deepcopy(trial)
        clean.user_attrs = {"retry_of": trial.user_attrs.get("retry_of", trial.number)}
        clean.system_attrs = {k: v for k, v in trial.system_attrs.items() if k != HEARTBEAT_ATTR}
        log.warning("trial %d: its worker stopped sending heartbeats; failed, and its parameters queued once more", trial.number)
        super().__call__(study, clean)


# --- a damaged storage is refused, never written to -------------------------------------------------

class DamagedStorage(ConfigError):
    """The study's storage file cannot be read whole (a journal with a line cut short or not JSON, a
    sqlite file that is not a database or fails sqlite's check). It is left as it is: one more
    write could make what it still holds unreadable."""


def _damaged(path: Path, what: str, fix: str) -> DamagedStorage:
    return DamagedStorage(f"the study storage {path} is damaged: {what}; it is left as it is: {fix}")


_NEW_STUDY = "or start a new study with another hydra.sweeper.storage and hydra.sweep.dir"


def journal_damage(path: Path) -> DamagedStorage | None:
    """What is wrong with a journal file, if anything: every line must be a whole JSON object ending
    in a newline. The caller holds the journal's lock, so no writer is midway through a line: a last
    line without its newline is a write that never finished (a killed worker, a full disk)."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    whole, tail = lines[:-1], lines[-1]  # `tail` is what follows the last newline: b"" when none is cut short
    for number, line in enumerate(whole, start=1):
        try:
            ok = isinstance(json.loads(line), dict)
        except ValueError:  # not JSON, or not UTF-8
            ok = False
        if not ok:
            return _damaged(path, f"line {number} is not a JSON object, and Optuna cannot read past it",
                            f"restore it from a copy, {_NEW_STUDY}")
    if tail:
        keep = len(data) - len(tail)
        return _damaged(path, f"line {len(whole) + 1} is cut short (a write that never finished)",
                        f"the {len(whole)} lines before it are whole (`truncate -s {keep} {path}` keeps them), "
                        f"{_NEW_STUDY}")
    return None


def sqlite_damage(path: Path) -> DamagedStorage | None:
    """What sqlite's own check (PRAGMA quick_check, on a read-only connection) finds wrong with a
    database file, if anything. A file sqlite cannot open for other reasons (locked, a hot journal a
    read-only connection may not roll back) is not called damaged: the storage says why it fails."""
    import sqlite3
    from urllib.parse import quote

    if not path.is_file() or path.stat().st_size == 0:  # sqlite makes an empty file a database
        return None
    try:
        con = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=30)
        try:
            rows = con.execute("PRAGMA quick_check").fetchall()
        finally:
            con.close()
    except sqlite3.OperationalError:
        return None
    except sqlite3.DatabaseError as err:  # "file is not a database", "database disk image is malformed"
        return _damaged(path, f"sqlite says: {err}", f"restore it from a copy, {_NEW_STUDY}")
    if rows != [("ok",)]:
        problems = [line for row in rows for line in str(row[0]).splitlines() if line and not line.startswith("***")]
        first = problems[0] if problems else str(rows[0][0])
        return _damaged(path, f"sqlite's check finds {len(problems) or 1} problem(s), the first: {first}",
                        f"restore it from a copy, {_NEW_STUDY}")
    return None


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
            raise journal_damage(self.path) or _damaged(self.path, "Optuna cannot read it", _NEW_STUDY) from None

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = ("".join(json.dumps(entry, separators=(",", ":")) + "\n" for entry in logs)).encode()
        with self.locked():
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    raise journal_damage(self.path) or _damaged(self.path, "its last line is cut short", _NEW_STUDY)
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


def make_storage(url: str, heartbeat_s: int, grace_s: int) -> BaseStorage:
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
            return SweepRDBStorage(url, heartbeat_interval=heartbeat_s, grace_period=grace_s,
                                   heartbeat_stale_trial_callback=retry)
        except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, ImportError, ValueError) as err:
            raise ConfigError(f"hydra.sweeper.storage={url}: {_first_line(err)} (expected sqlite:///file.db, "
                              "journal:/path/file.log or postgresql+psycopg://user@host/db)") from None
        except sqlalchemy.exc.SQLAlchemyError as err:
            if (full := no_room(err, sqlite=sqlite)) is not None:  # no retry makes room
                raise full from None
            if attempt == 4:
                raise ConfigError(f"hydra.sweeper.storage={url.split('@')[-1]}: {_first_line(err)}") from None
            log.warning("storage %s not ready (%s); retrying", url.split("@")[-1], type(err).__name__)
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


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


# --- one study, one experiment, one out_dir --------------------------------------------------------

def open_study(storage: BaseStorage, name: str, directions: list[str], identity: dict[str, Any], pruner: Any,
               where: str, metric_names: list[str] | None = None) -> optuna.Study:
    """Create the study and record what it measures (and its objectives' names, which
    optuna-dashboard shows), or load it and refuse if it measures something else (other
    settings, objectives or search space)."""
    try:
        study = optuna.create_study(study_name=name, storage=storage, directions=directions, pruner=pruner)
        if metric_names:
            with warnings.catch_warnings():  # experimental in Optuna 5, and what optuna-dashboard reads
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(list(metric_names))
        study.set_user_attr("identity", identity)
        study.set_user_attr("uid", uuid.uuid4().hex)
        return study
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, pruner=pruner)
    new_study = f"start a new study with another hydra.sweeper.study_name (and hydra.sweep.dir), e.g. hydra.sweeper.study_name={name}-2"
    have = [d.name.lower() for d in study.directions]
    if have != directions and "identity" not in study.user_attrs:  # else the identity names the objectives
        raise ConfigError(f"study {name} in {where} optimises {have}, not {directions}: {new_study}")
    # A worker that created the study a moment ago may not have recorded its identity yet.
    for _ in range(50):
        attrs = study.user_attrs
        if "identity" in attrs and "uid" in attrs:
            break
        if study.get_trials(deepcopy=False):
            raise ConfigError(f"study {name} in {where} has trials but no record of what they measure (made by an "
                              f"older version): {new_study}")
        time.sleep(0.2)
    else:  # an empty study with no record: adopt it
        study.set_user_attr("identity", identity)
        study.set_user_attr("uid", uuid.uuid4().hex)
        attrs = study.user_attrs
    diff = identity_diff(attrs["identity"], identity)
    if diff:
        shown = "; ".join(diff[:6]) + (f"; and {len(diff) - 6} more" if len(diff) > 6 else "")
        raise ConfigError(f"study {name} in {where} measures something else ({shown}): its trials would not "
                          f"answer this question; {new_study}")
    if have != directions:
        raise ConfigError(f"study {name} in {where} optimises {have}, not {directions}: {new_study}")
    return study


def claim_out_dir(out_dir: Path, study: optuna.Study, where: str) -> None:
    """`out_dir` belongs to one study: the first sweep to use it writes `study.json`; another
    study's sweep is refused (its trial folders, pareto.json and summary.json would overwrite ours)."""
    mine = {"study": study.study_name, "uid": study.user_attrs["uid"], "storage": where}
    owner = out_dir / OWNER_FILE
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not owner.exists():
            leftovers = sorted(p.name for p in out_dir.iterdir()  # a study's files, or a job folder's record
                               if p.name.startswith(("trial_", "rerun", "pareto", "summary")) or (p / RESULT_FILE).is_file())
            if leftovers:
                shown = ", ".join(leftovers[:4]) + (", ..." if len(leftovers) > 4 else "")
                raise ConfigError(f"hydra.sweep.dir={out_dir} holds results of a study it has no record of ({shown}): "
                                  "use another hydra.sweep.dir")
            tmp = out_dir / f".{OWNER_FILE}.{os.getpid()}"
            write_json(tmp, mine)
            try:
                os.link(tmp, owner)  # atomic, and fails if another worker claimed the folder first
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
        theirs = json.loads(owner.read_text())
    except OSError as err:
        raise ConfigError(f"hydra.sweep.dir={out_dir}: cannot write there ({err.strerror or err})") from None
    if theirs.get("uid") != mine["uid"]:
        raise ConfigError(
            f"hydra.sweep.dir={out_dir} belongs to study {theirs.get('study')} ({theirs.get('storage')}), not to this "
            f"study {study.study_name}: use another hydra.sweep.dir"
        )


# --- the budget -----------------------------------------------------------------------------------

DONE = (TrialState.COMPLETE, TrialState.PRUNED)


def holds_a_place(study: optuna.Study, number: int, total: int) -> bool:
    """Trial numbers are handed out atomically by the storage, so the trials numbered below this
    one that completed, were pruned or are running decide it: fewer than `total`, it trains."""
    ahead = sum(1 for t in study.get_trials(deepcopy=False, states=(*DONE, TrialState.RUNNING)) if t.number < number)
    return ahead < total


# --- trials and what a study found ---------------------------------------------------------------

def suggest(trial: optuna.Trial, key: str, spec: dict[str, Any], groups: int) -> Any:
    kind = spec["type"]
    if kind == "float":
        step = None if spec.get("step") is None else float(spec["step"])
        return trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False)),
                                   step=step)
    if kind == "int":
        high = groups if spec["high"] == "groups" else int(spec["high"])
        return trial.suggest_int(key, int(spec["low"]), high, log=bool(spec.get("log", False)),
                                 step=int(spec.get("step") or 1))
    return trial.suggest_categorical(key, list(spec["choices"]))


def pareto_rows(study: optuna.Study, objectives: list[str]) -> list[dict[str, Any]]:
    rows = []
    for t in sorted(study.best_trials, key=lambda t: t.values[0], reverse=True):
        rows.append({"trial": t.number, **dict(zip(objectives, t.values)), **t.params, "run_dir": t.user_attrs.get("run_dir")})
    return rows


def format_pareto(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no completed trials)"
    keys = list(dict.fromkeys(k for r in rows for k in r if k != "run_dir"))  # a trial may lack a param
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else "-" if v is None else str(v)  # noqa: E731
    cells = [[fmt(r.get(k)) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    lines = ["  ".join(k.rjust(w) for k, w in zip(keys, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def finished_outcome(run_dir: str | None, objectives: list[str]) -> tuple[TrialState, list[float] | None] | None:
    """What a trial's job recorded in its result.json, when it is a finished run: (COMPLETE, its
    objectives' values) or (PRUNED, None). None when the run did not finish (or left no readable
    record, or a value is missing): the trial has no result to keep."""
    if not run_dir:
        return None
    try:
        record = RunRecord.from_json(read_json_object(Path(run_dir) / RESULT_FILE))
    except ValueError:
        return None
    if record.status == "pruned":
        return TrialState.PRUNED, None
    if record.status != "completed":
        return None
    values = [record.get(o) for o in objectives]
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or v != v for v in values):
        return None
    return TrialState.COMPLETE, [float(v) for v in values]


def settle_stale(study: optuna.Study, objectives: list[str]) -> list[int]:
    """Stale trials (their worker stopped sending heartbeats) whose job had recorded a finished run
    are told from its result.json, not failed and trained again: the worker died, or the storage
    could not be written (a full disk), after the run's record was complete. Returns their numbers."""
    storage = study._storage
    if not is_heartbeat_enabled(storage):
        return []
    settled = []
    for trial_id in storage._get_stale_trial_ids(study._study_id):
        trial = storage.get_trial(trial_id)
        outcome = finished_outcome(trial.user_attrs.get("run_dir"), objectives)
        if outcome is None:
            continue
        state, values = outcome
        study.tell(trial.number, values, state=state, skip_if_finished=True)
        log.warning("trial %d: its worker stopped before telling the study; recorded %s from %s", trial.number,
                    state.name, Path(trial.user_attrs["run_dir"]) / RESULT_FILE)
        settled.append(trial.number)
    return settled


def requeue_interrupted(study: optuna.Study) -> None:
    """Trials stopped by Ctrl-C or SIGTERM are failed in the study; queue their parameters once more
    so that a resumed sweep finishes what was interrupted instead of sampling something else."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    for t in trials:
        if t.state == TrialState.FAIL and t.user_attrs.get("interrupted") and t.number not in retried:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
            log.info("trial %d was interrupted: its parameters run again", t.number)


def summarise(study: optuna.Study, objectives: list[str], epochs: int) -> dict[str, Any]:
    """What the search cost: trials by state, epochs trained (of all trials, pruned included), best value.
    Surplus trials (a budget place taken by another worker first) trained nothing and are left out."""
    every = study.get_trials(deepcopy=False)
    trials = [t for t in every if not t.user_attrs.get("surplus")]
    states = {s.name.lower(): 0 for s in TrialState}
    for t in trials:
        states[t.state.name.lower()] += 1
    trained = [int(t.user_attrs.get("epochs_trained", 0)) for t in trials]
    flops = seconds = 0.0  # what every trial used, pruned and failed ones included, from its run files
    for t in trials:
        path = Path(t.user_attrs.get("run_dir", "")) / RESULT_FILE
        if t.user_attrs.get("run_dir") and path.is_file():
            try:
                r = RunRecord.from_json(read_json_object(path))
            except ValueError as err:  # cut short by a kill: its cost cannot be counted
                log.warning("skipped %s: %s", path, err)
                continue
            # a failed run's measurements are nested (measured_before_stop), a pruned one's are its own
            used = r.to_json() if r.train_time_s is not None else (r.measured_before_stop or {})
            flops += used.get("train_flops") or 0
            seconds += used.get("train_time_s") or 0
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.values[0], default=None) if objectives[0] in MAXIMISE else \
        min(complete, key=lambda t: t.values[0], default=None)
    return {
        "study": study.study_name,
        "trials": len(trials),
        "states": {k: v for k, v in states.items() if v},
        "surplus_trials": len(every) - len(trials),
        "epochs_per_trial": epochs,
        "epochs_trained": sum(trained),
        # what the same trials would have trained had none been stopped early
        "epochs_unpruned": epochs * sum(1 for t in trials if t.user_attrs.get("epochs_trained")),
        "total_train_flops": flops,
        "total_train_time_s": seconds,
        # first trial started to last trial finished (all workers; includes any pause between resumes)
        "span_s": (max(ends) - min(starts)).total_seconds() if starts and ends else None,
        f"best_{objectives[0]}": best.values[0] if best else None,
        "best_trial": best.number if best else None,
    }


def format_summary(s: dict[str, Any]) -> str:
    states = ", ".join(f"{v} {k}" for k, v in s["states"].items())
    share = f" ({s['epochs_trained'] / s['epochs_unpruned']:.0%})" if s["epochs_unpruned"] else ""
    best = next(k for k in s if k.startswith("best_") and k != "best_trial")
    return (f"trials: {s['trials']} ({states}); pruner {s['pruner']}; epochs trained {s['epochs_trained']} of "
            f"{s['epochs_unpruned']}{share}; {best} {s[best]} (trial {s['best_trial']})")


def _as_record(result: RunRecord | dict[str, Any]) -> RunRecord:
    return result if isinstance(result, RunRecord) else RunRecord.from_json(result)


def rerun_pareto(
    study: optuna.Study, rows: list[dict[str, Any]], overrides: list[str], seeds: list[int], out: Path, group: str
) -> list[dict[str, Any]]:
    """Each Pareto-optimal configuration again on `seeds`, reported on test. Resumable: a seed whose
    run already completed is read back, not trained again."""
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    table = []
    for row in rows:
        trial = by_number[row["trial"]]
        results = []
        for seed in seeds:
            run_dir = out / f"trial_{trial.number:04d}" / f"seed_{seed}"
            done = run_dir / RESULT_FILE
            try:
                previous = RunRecord.from_json(read_json_object(done)) if done.is_file() else None
            except ValueError:  # unreadable: train this seed again (claim_run_dir allows it)
                previous = None
            if previous is not None and previous.completed:
                results.append(previous)
                continue
            cfg = compose_train(overrides + [f"{k}={v}" for k, v in trial.params.items()] + [f"seed={seed}"])
            results.append(_as_record(run(to_run_config(cfg, group=f"{group}-rerun"), run_dir,
                                          run_name=f"{group}-{trial.number}-s{seed}")))
        entry: dict[str, Any] = {"trial": trial.number, **trial.params, "seeds": seeds}
        for key in ("val_acc", "test_acc", "test_balanced_acc", "train_flops", "train_time_s"):
            values = [float(r.get(key)) for r in results if r.get(key) is not None]
            if values:
                entry[key], entry[f"{key}_ci95"] = mean_ci(values)
                entry[f"{key}_values"] = values
        table.append(entry)
    return table


def format_rerun(table: list[dict[str, Any]]) -> str:
    lines = []
    for e in table:
        params = ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                           for k, v in e.items() if "." in k)
        lines.append(
            f"trial {e['trial']:>3}  test acc {format_ci(e['test_acc'], e['test_acc_ci95'])}  "
            f"val acc {format_ci(e['val_acc'], e['val_acc_ci95'])}  train FLOPs {e.get('train_flops', float('nan')):.4g}  ({params})"
        )
    return "\n".join(lines)


