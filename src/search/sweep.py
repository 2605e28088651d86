"""Optuna sweep driver: `python -m src.sweep [--sweep NAME] [sweep.KEY=VALUE ...] [train overrides ...]`.

A second entrypoint beside `src.train`, on the same `run()`. The search space and study settings
are a YAML file in `sweeps/` (composed with Hydra, so `sweep.n_trials=40` overrides it); every other
argument is a Hydra override of the training config, exactly as for `src.train`. Every setting is
checked before the first trial trains (objectives, sampler, pruner, search space, storage, out_dir).

Each trial is a normal run in `<out_dir>/trial_NNNN/` with the usual files. The study lives in an
Optuna storage (a sqlite file in `out_dir` by default), so a killed sweep resumes where it stopped:
completed trials are kept, and a trial whose process died (no heartbeat for `grace_s`, or none at
all since it started `grace_s` ago) is marked failed and retried once with the same parameters.
sqlite is for one driver process; several workers on one study share a journal file
(`storage: journal:/shared/path.log`) or a PostgreSQL URL. Every storage gets heartbeats.

One study is one experiment. The study records, when it is created, what its trials measure: the
resolved training config (less the searched keys and settings that change no measurement, such as
the logger), the objectives and the search space. A resume with anything else is refused, as is a
second study in an `out_dir` that holds another study's trials.

The budget is exact with any number of workers: `n_trials` trials complete or are pruned. Trials
failed or killed do not count and are replaced; a worker that finds the rest of the budget held by
running trials waits for them (one of them may fail or die). Should two workers start a trial for
the last place at once, the one with the later trial number records it as failed (`surplus`) and
trains nothing.

Trials report validation accuracy after every epoch and hopeless ones are pruned (`src.search.pruning`):
successive halving by default (by accuracy for one objective, by Pareto rank for accuracy vs
cost), or our dominated-at-epoch-k rule, or Optuna's median or Hyperband pruner for one objective.
After the search, `sweep.rerun_seeds=[1,2,3]` re-runs every Pareto-optimal configuration on those
seeds and reports test accuracy as mean ± 95% CI (test is reported, never selected on).

Exit codes: 0 done; 1 stopped after `max_failed` failed trials, or a re-run failed; 2 a user error
(one line on stderr: a bad setting, storage, out_dir, or a study that answers another question);
130 interrupted by Ctrl-C (SIGINT) and 143 by SIGTERM (128 + the signal number, as a shell
reports it): one line says what was recorded and how to resume.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import logging
import os
import random
import signal
import sys
import threading
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

from src.config import ConfigError, RunConfig
from src.models import PretrainedWeightsError
from src.search.pruning import EpochReporter, PruneSpec, optuna_pruner, resolve
from src.reporting.page import publish
from src.record.io import RESULT_FILE, read_json_object, write_json
from src.record.schema import RunRecord
from src.training.run import DivergedError, preflight, run
from src.reporting.stats import format_ci, mean_ci
from src.gate import check_overrides, compose_train, to_run_config

log = logging.getLogger("src.search.sweep")
REPO = Path(__file__).resolve().parents[2]
CONF, SWEEPS = REPO / "conf", REPO / "sweeps"
# What a study may optimise, from result.json, and which way. Test metrics are not on offer: test
# is reported once for the selected configuration, never selected on.
OBJECTIVES = {"val_acc": "maximize", "val_balanced_acc": "maximize", "train_flops": "minimize", "train_time_s": "minimize"}
MAXIMISE = {k for k, d in OBJECTIVES.items() if d == "maximize"}
SAMPLERS = {"tpe": optuna.samplers.TPESampler, "nsga2": optuna.samplers.NSGAIISampler}
PARAM_KEYS = {"float": {"type", "low", "high", "log", "step"}, "int": {"type", "low", "high", "log", "step"},
              "categorical": {"type", "choices"}}
SPEC_KEYS = {"study_name", "n_trials", "objectives", "sampler", "seed", "out_dir", "storage", "max_failed",
             "heartbeat_s", "grace_s", "pruner", "rerun_seeds", "rerun_overrides", "train_overrides", "params"}
# Training settings that change nothing a trial measures: a study resumed with other values is the
# same experiment. Everything else in the config is part of the study's identity.
NOT_MEASURED = ("logger.", "trainer.progress", "trainer.save_model", "trainer.num_threads")
# ... unless a time is measured: threads change the training time.
TIMED = {"train_time_s": ("trainer.num_threads",)}
OWNER_FILE, TRIAL_FILE = "study.json", "trial.json"  # which study an out_dir, and a trial folder, belong to
HEARTBEAT_ATTR = "sweep:heartbeat"


class SurplusTrial(Exception):
    """This trial's place in the budget went to a trial with a lower number (another worker's)."""


# The signal that stopped the sweep (the exit code is 128 + it); Ctrl-C unless SIGTERM arrived.
_STOPPED_BY: list[int] = []


# Code that a KeyboardInterrupt must not cut in half: a storage write stopped midway leaves the
# session unusable, and the trial could then not be recorded as interrupted (nor be retried).
_NOT_HERE = (f"{os.sep}sqlalchemy{os.sep}", f"{os.sep}optuna{os.sep}storages{os.sep}", f"{os.sep}sqlite3{os.sep}")


def _interrupt(signum: int, frame: Any) -> None:
    """Ctrl-C and SIGTERM end the sweep alike (run() records `status: interrupted`, Optuna fails the
    trial and it is queued again on resume); SIGTERM with src.training.run.interrupt_on_sigterm's message.
    Inside a storage call the signal is delivered again 50 ms later, until that call is done."""
    while frame is not None:
        if any(part in frame.f_code.co_filename for part in _NOT_HERE):
            threading.Timer(0.05, os.kill, (os.getpid(), signum)).start()
            return
        frame = frame.f_back
    _STOPPED_BY.append(signum)
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}" if signum != signal.SIGINT else "")


# --- checking a study file before anything trains ------------------------------------------------

def _int(spec: dict[str, Any], key: str, low: int) -> int:
    value = spec.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"sweep.{key}={value!r} must be an integer >= {low}")
    return value


def _str_list(spec: dict[str, Any], key: str) -> list[str]:
    value = spec.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise ConfigError(f"sweep.{key}={value!r} must be a list")
    return [str(v) for v in value]


def check_spec(spec: dict[str, Any]) -> None:
    """The study file's own settings: known keys, types and enumerated values."""
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        raise ConfigError(f"sweep.{unknown[0]} is not a sweep setting (allowed: {', '.join(sorted(SPEC_KEYS))})")
    missing = sorted(k for k in SPEC_KEYS - {"rerun_seeds", "rerun_overrides", "pruner", "max_failed"} if k not in spec)
    if missing:
        raise ConfigError(f"sweep.{missing[0]} is missing from the study file")
    name = spec["study_name"]
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"sweep.study_name={name!r} must be a non-empty name")
    _int(spec, "n_trials", 1)
    _int(spec, "seed", 0)
    if spec.get("max_failed") is not None:
        _int(spec, "max_failed", 0)
    heartbeat, grace = _int(spec, "heartbeat_s", 1), _int(spec, "grace_s", 1)
    if grace <= heartbeat:  # a live worker between two heartbeats would be taken for dead
        raise ConfigError(f"sweep.grace_s={grace} must be longer than sweep.heartbeat_s={heartbeat}")
    if spec["sampler"] not in SAMPLERS:
        raise ConfigError(f"sweep.sampler={spec['sampler']!r} is not allowed ({' | '.join(SAMPLERS)})")
    if spec["storage"] is not None and not (isinstance(spec["storage"], str) and spec["storage"]):
        raise ConfigError(f"sweep.storage={spec['storage']!r} must be null or a storage URL")
    if not isinstance(spec["out_dir"], str) or not spec["out_dir"]:
        raise ConfigError(f"sweep.out_dir={spec['out_dir']!r} must be a folder")
    if not isinstance(spec.get("pruner") or {}, dict):
        raise ConfigError(f"sweep.pruner={spec['pruner']!r} must be a mapping (name, after, startup, min_delta)")
    seeds = spec.get("rerun_seeds") or []
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f"sweep.rerun_seeds={seeds!r} must be a list of integers")
    _str_list(spec, "rerun_overrides")
    _str_list(spec, "train_overrides")


def check_objectives(objectives: Any, base: RunConfig, params: dict[str, Any]) -> list[str]:
    """Objectives a trial can measure, on validation only, each once."""
    if isinstance(objectives, str) or not isinstance(objectives, list) or not objectives:
        raise ConfigError(f"sweep.objectives={objectives!r} must be a non-empty list, e.g. [val_acc, train_flops]")
    allowed = ", ".join(OBJECTIVES)
    for o in objectives:
        if isinstance(o, str) and o.startswith("test"):
            raise ConfigError(
                f"sweep.objectives: {o} is measured on the test split, which a sweep never selects on (test is "
                f"reported once for the selected configuration: sweep.rerun_seeds); use a validation metric ({allowed})"
            )
        if o not in OBJECTIVES:
            raise ConfigError(f"sweep.objectives: {o!r} is not an objective (allowed: {allowed})")
    twice = sorted({o for o in objectives if objectives.count(o) > 1})
    if twice:
        raise ConfigError(f"sweep.objectives={objectives}: {twice[0]} is given twice")
    if objectives[0] not in MAXIMISE:
        raise ConfigError(
            f"sweep.objectives={objectives}: the first must be a validation accuracy ({' | '.join(sorted(MAXIMISE))}); "
            "it ranks trials for the summary and the pruner, costs come after it"
        )
    if "train_flops" in objectives and (not base.trainer.count_flops or "trainer.count_flops" in params):
        raise ConfigError("sweep.objectives: train_flops is not measured with trainer.count_flops=false "
                          "(set it true, or drop train_flops)")
    return list(objectives)


def check_space(params: Any, base_over: list[str], groups: int) -> None:
    """The search space: training keys that exist, types and bounds that make sense, and values at
    both ends (each choice) that make a valid training config, so no trial fails on its config."""
    if not isinstance(params, dict) or not params:
        raise ConfigError("sweep.params must map training keys to {type, low, high} or {type, choices}")
    set_elsewhere = {o.split("=", 1)[0].lstrip("+~") for o in base_over if "=" in o}
    for key, p in params.items():
        where = f"sweep params.{key}"
        if not isinstance(p, dict):
            raise ConfigError(f"{where} must be a mapping with type (float | int | categorical)")
        kind = p.get("type")
        if kind not in PARAM_KEYS:
            raise ConfigError(f"{where}.type={kind!r} is not allowed (float | int | categorical)")
        extra = sorted(set(p) - PARAM_KEYS[kind])
        if extra:
            raise ConfigError(f"{where}.{extra[0]} is not a key of a {kind} param ({', '.join(sorted(PARAM_KEYS[kind]))})")
        if key in set_elsewhere:
            raise ConfigError(f"{where}: {key} is searched and also set by an override (train_overrides or the "
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


def make_storage(url: str, heartbeat_s: int, grace_s: int) -> BaseStorage:
    retry = RetryStaleTrial(max_retry=1)
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url.removeprefix("journal:"))
        if not path.parent.is_dir():
            raise ConfigError(f"sweep.storage={url}: folder {path.parent} does not exist")
        return SweepJournalStorage(JournalFileBackend(str(path)), heartbeat_s, grace_s, retry)
    # Workers started together on a fresh database race to create Optuna's tables; the loser gets
    # a DDL error (seen on PostgreSQL: duplicate key in pg_type). The tables exist by then: retry.
    # A URL that cannot be parsed or names no installed driver is not retried.
    for attempt in range(5):
        try:
            return SweepRDBStorage(url, heartbeat_interval=heartbeat_s, grace_period=grace_s,
                                   heartbeat_stale_trial_callback=retry)
        except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, ImportError, ValueError) as err:
            raise ConfigError(f"sweep.storage={url}: {_first_line(err)} (expected sqlite:///file.db, "
                              "journal:/path/file.log or postgresql+psycopg://user@host/db)") from None
        except sqlalchemy.exc.SQLAlchemyError as err:
            if attempt == 4:
                raise ConfigError(f"sweep.storage={url.split('@')[-1]}: {_first_line(err)}") from None
            log.warning("storage %s not ready (%s); retrying", url.split("@")[-1], type(err).__name__)
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


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
    new_study = f"start a new study with another sweep.study_name (and sweep.out_dir), e.g. sweep.study_name={name}-2"
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
            leftovers = sorted(p.name for p in out_dir.iterdir()
                               if p.name.startswith(("trial_", "rerun", "pareto", "summary")))
            if leftovers:
                shown = ", ".join(leftovers[:4]) + (", ..." if len(leftovers) > 4 else "")
                raise ConfigError(f"sweep.out_dir={out_dir} holds results of a study it has no record of ({shown}): "
                                  "use another sweep.out_dir")
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
        raise ConfigError(f"sweep.out_dir={out_dir}: cannot write there ({err.strerror or err})") from None
    if theirs.get("uid") != mine["uid"]:
        raise ConfigError(
            f"sweep.out_dir={out_dir} belongs to study {theirs.get('study')} ({theirs.get('storage')}), not to this "
            f"study {study.study_name}: use another sweep.out_dir"
        )


def claim_trial_dir(trial_dir: Path, study: optuna.Study, number: int) -> None:
    """A trial writes only into an empty folder or one of its own: never over another study's or
    another trial's result."""
    mine = {"study": study.study_name, "uid": study.user_attrs["uid"], "trial": number}
    marker = trial_dir / TRIAL_FILE
    if trial_dir.is_dir() and any(trial_dir.iterdir()):
        theirs = json.loads(marker.read_text()) if marker.is_file() else None
        if theirs != mine:
            raise ConfigError(f"{trial_dir} holds another run's files ({theirs or 'no ' + TRIAL_FILE}); "
                              f"refusing to write trial {number} over them: use another sweep.out_dir")
    trial_dir.mkdir(parents=True, exist_ok=True)
    write_json(marker, mine)


# --- the budget -----------------------------------------------------------------------------------

DONE = (TrialState.COMPLETE, TrialState.PRUNED)


def holds_a_place(study: optuna.Study, number: int, total: int) -> bool:
    """Trial numbers are handed out atomically by the storage, so the trials numbered below this
    one that completed, were pruned or are running decide it: fewer than `total`, it trains."""
    ahead = sum(1 for t in study.get_trials(deepcopy=False, states=(*DONE, TrialState.RUNNING)) if t.number < number)
    return ahead < total


def optimise(study: optuna.Study, objective: Any, total: int, poll_s: float, callbacks: list[Any],
             stopped: list[bool]) -> None:
    """Run trials until `total` have completed or were pruned, counting every worker's."""
    waiting_logged = False
    while not stopped:
        optuna.storages.fail_stale_trials(study)  # a dead worker's trial frees its place (and is queued again)
        trials = study.get_trials(deepcopy=False)
        done = sum(t.state in DONE for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        if done >= total:
            return
        if done + running >= total:
            if not waiting_logged:
                log.info("%d of %d done, %d running elsewhere: waiting for them (one may fail or die)", done, total, running)
                waiting_logged = True
            time.sleep(poll_s)
            continue
        waiting_logged = False
        study.optimize(objective, n_trials=1, callbacks=callbacks, catch=(DivergedError, SurplusTrial))


# --- the driver -----------------------------------------------------------------------------------

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
    keys = [k for k in rows[0] if k != "run_dir"]
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    cells = [[fmt(r[k]) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    lines = ["  ".join(k.rjust(w) for k, w in zip(keys, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


class Setup:
    """What main() resolved before any trial: for the interrupt message too."""

    study: optuna.Study | None = None
    where: str = ""
    total: int = 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", default="default", help="a study in sweeps/ (name without .yaml), or a path to a .yaml file")
    parser.add_argument("overrides", nargs="*", help="sweep.KEY=VALUE for the study, anything else for training")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    # Optuna logs every failed trial with its traceback (an interrupted one twice over); we log one
    # line per failed trial ourselves and keep Optuna's errors.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    # Heartbeats and the retry callback are flagged experimental by Optuna; they are what makes resume work.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    setup = Setup()
    try:
        return _main(args, setup)
    except (ConfigError, PretrainedWeightsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        signum = _STOPPED_BY[0] if _STOPPED_BY else signal.SIGINT
        print(f"interrupted ({signal.Signals(signum).name}): {_recorded(setup)}", file=sys.stderr)
        return 128 + int(signum)


def _recorded(setup: Setup) -> str:
    if setup.study is None:
        return "nothing was recorded (no trial had started)"
    trials = setup.study.get_trials(deepcopy=False)
    done = sum(t.state in DONE for t in trials)
    stopped = [t.number for t in trials if t.user_attrs.get("interrupted") and t.state == TrialState.FAIL]
    again = f"; trial {stopped[-1]} was stopped and runs again on resume" if stopped else ""
    return (f"{done} of {setup.total} trials of study {setup.study.study_name} are recorded in {setup.where}{again}; "
            "run the same command to resume")


@dataclass
class Plan:
    """What the study file and the command line resolve to, every setting checked."""

    name: str
    spec: dict[str, Any]
    base_over: list[str]  # the training overrides every trial starts from
    base_cfg: RunConfig
    groups: int  # the model's backbone layer groups (a search space's `high: groups`)
    params: dict[str, Any]
    objectives: list[str]
    prune: PruneSpec
    prune_mode: str
    epochs: int
    rerun_seeds: list[int]
    rerun_over: list[str]
    out_dir: Path


def _main(args: argparse.Namespace, setup: Setup) -> int:
    """The sweep in four steps: settings, the study, the trials, and what comes after them."""
    plan = _plan(args)
    study = _open(plan, setup)
    failed = _optimise(plan, study, setup.total)
    if failed:
        print(failed, file=sys.stderr)
        return 1
    return _conclude(plan, study)


def _study_file(args: argparse.Namespace, sweep_over: list[str]) -> dict[str, Any]:
    """The study file (sweeps/NAME.yaml, or a path) with the sweep.KEY=VALUE overrides, composed and checked."""
    sweep_dir, sweep_name = SWEEPS, args.sweep
    if args.sweep.endswith(".yaml"):  # a study file of your own, anywhere
        if not Path(args.sweep).is_file():
            raise ConfigError(f"--sweep={args.sweep}: no such file")
        sweep_dir, sweep_name = Path(args.sweep).resolve().parent, Path(args.sweep).stem
    elif not (SWEEPS / f"{args.sweep}.yaml").is_file():
        options = sorted(p.stem for p in SWEEPS.glob("*.yaml"))
        raise ConfigError(f"--sweep={args.sweep!r}: no sweeps/{args.sweep}.yaml (options: {', '.join(options)})")
    for o in sweep_over:  # before Hydra, whose own message for this is a multi-line block
        if o.split("=", 1)[0].lstrip("+~").split(".")[0] not in SPEC_KEYS:
            raise ConfigError(f"sweep.{o.split('=', 1)[0].lstrip('+~')} is not a sweep setting (allowed: "
                              f"{', '.join(sorted(SPEC_KEYS))})")
    try:
        with initialize_config_dir(config_dir=str(sweep_dir), version_base="1.3"):
            scfg = compose(sweep_name, overrides=sweep_over)
        spec: dict[str, Any] = OmegaConf.to_container(scfg, resolve=True)  # type: ignore[assignment]
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(f"sweep overrides {sweep_over}: {_first_line(err)}") from None
    check_spec(spec)
    return spec


def _plan(args: argparse.Namespace) -> Plan:
    """Step 1: every setting read and checked (study file, training overrides, search space,
    objectives, pruner, re-run), before anything is written or trained."""
    sweep_over = [o.removeprefix("sweep.") for o in args.overrides if o.startswith("sweep.")]
    train_over = [o for o in args.overrides if not o.startswith("sweep.")]
    spec = _study_file(args, sweep_over)
    base_over = _str_list(spec, "train_overrides") + train_over
    check_overrides(base_over)
    base = compose_train(base_over)
    base_cfg = to_run_config(base)  # one-line error for a bad override before any trial starts
    groups = preflight(base_cfg)  # the model's backbone groups, and its model-dependent checks
    params: dict[str, Any] = spec["params"]
    check_space(params, base_over, groups)
    objectives = check_objectives(spec["objectives"], base_cfg, params)
    prune = PruneSpec.from_dict(spec.get("pruner") or {})
    rerun_over = _str_list(spec, "rerun_overrides")
    check_overrides(base_over + rerun_over)
    return Plan(
        name=spec["study_name"], spec=spec, base_over=base_over, base_cfg=base_cfg, groups=groups, params=params,
        objectives=objectives, prune=prune, prune_mode=resolve(prune, objectives), epochs=int(base.trainer.epochs),
        rerun_seeds=[int(x) for x in spec.get("rerun_seeds") or []], rerun_over=rerun_over,
        out_dir=Path(spec["out_dir"]),
    )


def _open(plan: Plan, setup: Setup) -> optuna.Study:
    """Step 2: the out_dir, the storage and the study (created, or resumed if it measures the
    same), the out_dir claimed for it, and a sampler seeded for this start."""
    spec, out_dir = plan.spec, plan.out_dir
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"sweep.out_dir={out_dir}: cannot create it ({err.strerror or err})") from None
    url = spec["storage"] or f"sqlite:///{out_dir.resolve() / 'optuna.db'}"
    where = url.split("@")[-1]
    storage = make_storage(url, int(spec["heartbeat_s"]), int(spec["grace_s"]))
    directions = [OBJECTIVES[o] for o in plan.objectives]
    try:
        study = open_study(storage, plan.name, directions, study_identity(plan.base_cfg, plan.params, plan.objectives),
                           optuna_pruner(plan.prune_mode, plan.prune, plan.epochs), where, metric_names=plan.objectives)
    except (sqlalchemy.exc.SQLAlchemyError, OSError) as err:
        raise ConfigError(f"sweep.storage={where}: {_first_line(err)}") from None
    claim_out_dir(out_dir, study, where)
    setup.study, setup.where, setup.total = study, where, int(spec["n_trials"])
    # A sampler restarted with the same seed would propose the same parameters again (the
    # random start-up trials repeat exactly). The seed therefore moves on with the trials
    # already in the study: a single driver stays reproducible across resumes. Workers that
    # share a study also mix in their process id so that they never propose the same trials.
    seed = int(spec["seed"]) + len(study.get_trials(deepcopy=False))
    if spec["storage"]:
        seed = hash((seed, os.getpid())) % 2**31
    study.sampler = SAMPLERS[spec["sampler"]](seed=seed)
    requeue_interrupted(study)
    already = len(study.get_trials(deepcopy=False, states=DONE))
    log.info("study %s (%s): %d of %d trials done; pruner %s; storage %s", plan.name, ", ".join(
        f"{d} {o}" for d, o in zip(directions, plan.objectives)), already, setup.total, plan.prune_mode, where)
    return study


def train_trial(plan: Plan, study: optuna.Study, trial: optuna.Trial, total: int) -> tuple[float, ...]:
    """One trial: its place in the budget, sampled settings, a run in `trial_NNNN/`, its objectives.
    A run that the pruner stopped (its record says "pruned") is Optuna's TrialPruned."""
    if not holds_a_place(study, trial.number, total):
        trial.set_user_attr("surplus", True)
        raise SurplusTrial(f"trial {trial.number}: the budget of {total} is held by trials with lower numbers")
    sampled = {key: suggest(trial, key, p, plan.groups) for key, p in plan.params.items()}
    cfg = compose_train(plan.base_over + [f"{k}={v}" for k, v in sampled.items()])
    run_cfg = to_run_config(cfg, group=plan.name)
    trial_dir = plan.out_dir / f"trial_{trial.number:04d}"
    claim_trial_dir(trial_dir, study, trial.number)
    trial.set_user_attr("run_dir", str(trial_dir.resolve()))  # absolute: dashboards and other machines
    reporter = EpochReporter(
        study, trial, plan.objectives, plan.prune_mode, plan.prune, running_best=run_cfg.trainer.select == "best_val",
        epochs=run_cfg.trainer.epochs,
    )
    record = _as_record(run(run_cfg, trial_dir, run_name=f"{plan.name}-{trial.number}", on_epoch=reporter))
    if record.status == "pruned":
        raise optuna.TrialPruned(record.reason or "pruned")
    return tuple(float(record.get(o)) for o in plan.objectives)


def _as_record(result: RunRecord | dict[str, Any]) -> RunRecord:
    return result if isinstance(result, RunRecord) else RunRecord.from_json(result)


def _optimise(plan: Plan, study: optuna.Study, total: int) -> str | None:
    """Step 3: trials until the budget is done. Returns the error line when `max_failed` trials
    failed (None otherwise)."""

    def objective(trial: optuna.Trial) -> tuple[float, ...]:
        try:
            return train_trial(plan, study, trial, total)
        except KeyboardInterrupt:
            # Optuna records the trial as failed; the next start of the sweep runs these parameters again.
            trial.set_user_attr("interrupted", True)
            raise

    failed: list[str] = []
    max_failed = int(plan.spec.get("max_failed") or 0)
    stopped: list[bool] = []

    def on_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        # Failed trials do not count toward the budget, so a search space where every trial fails
        # (diverges) would otherwise run forever. A surplus trial trained nothing: no failure.
        if trial.state != TrialState.FAIL or trial.user_attrs.get("surplus"):
            return
        reason = str(trial.system_attrs.get("fail_reason", "")).strip().splitlines()
        log.warning("trial %d failed: %s", trial.number, reason[-1] if reason else "unknown reason")
        failed.append(f"trial {trial.number}")
        if max_failed and len(failed) >= max_failed:
            stopped.append(True)

    optimise(study, objective, total, min(float(plan.spec["heartbeat_s"]), 5.0), [on_trial], stopped)
    if stopped:
        return (f"error: stopped after {len(failed)} failed trials ({', '.join(failed)}; sweep.max_failed="
                f"{max_failed}); their result.json files say why")
    return None


def _conclude(plan: Plan, study: optuna.Study) -> int:
    """Step 4: the Pareto set and the summary, the Pareto set re-run on `rerun_seeds` (reported on
    test), and the report."""
    out_dir, name = plan.out_dir, plan.name
    rows = pareto_rows(study, plan.objectives)
    write_json(out_dir / "pareto.json", rows)
    # Which metric each front is on: this one selects on validation, the report's shows test (by trial number).
    print(f"\nPareto set of study {name} on {' vs '.join(plan.objectives)} ({len(rows)} trials; the report's front "
          f"is on test_acc vs train_flops):\n{format_pareto(rows)}")
    print(f"saved {out_dir / 'pareto.json'}")
    summary = summarise(study, plan.objectives, plan.epochs) | {"pruner": plan.prune_mode}
    write_json(out_dir / "summary.json", summary)
    print(format_summary(summary))
    if plan.rerun_seeds and rows:
        try:
            rerun = rerun_pareto(study, rows, plan.base_over + plan.rerun_over, plan.rerun_seeds, out_dir / "rerun", name)
        except DivergedError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        write_json(out_dir / "pareto_rerun.json", rerun)
        print(f"\nPareto set re-run on seeds {plan.rerun_seeds} (mean ± 95% CI):\n{format_rerun(rerun)}")
        print(f"saved {out_dir / 'pareto_rerun.json'}")
    page = publish([out_dir], out_dir / "report", plan.base_cfg.logger, name)
    if page:
        print(f"report: {page}")
    return 0


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


