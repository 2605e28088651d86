"""The search behind `hydra/sweeper=optuna`: Optuna asks, Hydra's launcher trains, result.json answers.

The project's one Optuna search loop, behind `python -m src.train -m sweep=default` (`make sweep`)
and `python -m src.train -m hydra/sweeper=optuna ...`. The sweeper plugin (hydra_plugins/ft_optuna_sweeper)
parses Hydra's syntax into the search space of `src.search.sweep` and hands this module a `launch`
function (Hydra's launcher). The study's machinery is src.search.sweep's: the storage with
heartbeats, the study's identity, the exact budget (`n_trials` trials complete or are pruned, with
any number of workers), interrupted trials retried on resume; the pruning rules are src.search.pruning's.

Each trial is a Hydra job numbered by its trial number (`hydra.job.num`), so the job finds its
trial: in the same process (the basic launcher) the sweeper's own study is used; in another
process (joblib, submitit) the study is loaded again from the storage named in the job's
`hydra.sweeper` config. The job's `on_epoch` is an `EpochReporter` (`job_reporter`); a run it
stops records `status: pruned`, and the sweeper tells Optuna the trial was PRUNED. The objectives
are read from each job's result.json, not from the task function's return value.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import optuna
from optuna.storages._heartbeat import get_heartbeat_thread
from optuna.trial import TrialState

from src.config import OUR_SWEEPER, ConfigError, RunConfig
from src.record.io import RESULT_FILE, read_json_object
from src.record.schema import RunRecord
from src.search.pruning import EpochReporter, PruneSpec, optuna_pruner, resolve
from src.search.sweep import DONE, finished_outcome, holds_a_place, make_storage, settle_stale, suggest

log = logging.getLogger(__name__)
# The sweeper class a job's `hydra.sweeper._target_` names when it is one of our trials.
SWEEPER_TARGET = OUR_SWEEPER + "optuna_sweeper.OptunaSweeper"
# Studies open in this process, by (storage URL, study name): a job launched in-process reuses
# the sweeper's study (and its storage connection) instead of opening the storage again.
LIVE: dict[tuple[str, str], optuna.Study] = {}
DEFAULT_STUDY = "sweep"  # hydra.sweeper.study_name=null
# A trial that failed on one of these (as its result.json records it) stops the sweep with its one line.
USER_ERRORS = ("ConfigError", "PretrainedWeightsError", "DamagedStorage")

# What a launch returns for each job: its output folder (None when Hydra returned none).
Launch = Callable[[list[list[str]], int], Sequence[Path | None]]


def storage_url(storage: str | None, sweep_dir: str | Path) -> str:
    """The study's storage: the one given, or a sqlite file in the sweep folder."""
    return storage or f"sqlite:///{Path(sweep_dir).resolve() / 'optuna.db'}"


@dataclass
class Search:
    """What the sweeper resolved: the study, its space and budget, the overrides every job gets."""

    study: optuna.Study
    params: dict[str, dict[str, Any]]  # src.search.sweep's param specs ({type, low, high, log, step} | {choices})
    fixed: list[str]  # overrides every job gets (the command line's and hydra.sweeper.params' fixed ones)
    objectives: list[str]
    total: int
    n_jobs: int
    max_failed: int
    poll_s: float
    failed: list[str] = field(default_factory=list)


def job_reporter(sweeper: dict[str, Any], sweep_dir: str, number: int, run_cfg: RunConfig,
                 out: Path) -> EpochReporter | None:
    """The `on_epoch` of a job launched by our sweeper: its trial's EpochReporter (None when the
    job is not one of our trials). Also records the job's folder, absolute, as the trial's run_dir."""
    if sweeper.get("_target_") != SWEEPER_TARGET:
        return None
    url = storage_url(sweeper.get("storage"), sweep_dir)
    objectives = list(sweeper.get("objectives") or ["val_acc"])
    spec = PruneSpec.from_dict(dict(sweeper.get("pruner") or {}))
    mode = resolve(spec, objectives)
    name = sweeper.get("study_name") or DEFAULT_STUDY
    study = LIVE.get((url, name))
    if study is None:  # another process (joblib, submitit): the trial rebuilt from the storage
        with warnings.catch_warnings():  # Optuna flags heartbeats experimental; they are what resume rests on
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = make_storage(url, int(sweeper["heartbeat_s"]), int(sweeper["grace_s"]))
        study = optuna.load_study(study_name=name, storage=storage,
                                  pruner=optuna_pruner(mode, spec, run_cfg.trainer.epochs))
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    trial = optuna.trial.Trial(study, trial_id)
    trial.set_user_attr("run_dir", str(out.resolve()))
    if (retry_of := trial.user_attrs.get("retry_of")) is not None:  # a dead or interrupted trial's parameters again
        _continue_dead_attempt(study, int(retry_of), run_cfg, out)
    return EpochReporter(study, trial, objectives, mode, spec, running_best=run_cfg.trainer.select == "best_val",
                         epochs=run_cfg.trainer.epochs)


def _continue_dead_attempt(study: optuna.Study, number: int, run_cfg: RunConfig, out: Path) -> None:
    """A retried trial runs in a folder of its own: the dead attempt's last checkpoint, and its
    epochs, move there, so that the retry continues from its last epoch, not from 0."""
    from src.training.checkpoint import adopt  # torch: loaded by the jobs, not by the sweeper's driver

    dead = study._storage.get_trial(study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number))
    if dead.user_attrs.get("run_dir") and (moved := adopt(Path(dead.user_attrs["run_dir"]), out, run_cfg)):
        log.info("continuing trial %d from its last checkpoint, %s", number, moved)


def search(s: Search, launch: Launch, groups: int) -> str | None:
    """Trials until `total` completed or were pruned (every worker's count), `n_jobs` at a time
    through `launch`. Returns the error line when `max_failed` trials failed, else None."""
    waiting = False
    while True:
        with warnings.catch_warnings():  # experimental in Optuna 5; what resume after a dead worker rests on
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            settle_stale(s.study, s.objectives)  # a dead worker's finished trial keeps its result...
            optuna.storages.fail_stale_trials(s.study)  # ...any other frees its place (queued again)
        trials = s.study.get_trials(deepcopy=False)
        done = sum(t.state in DONE for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        if done >= s.total:
            return None
        free = s.total - done - running
        if free <= 0:
            if not waiting:
                log.info("%d of %d done, %d running elsewhere: waiting for them", done, s.total, running)
                waiting = True
            time.sleep(s.poll_s)
            continue
        waiting = False
        batch = _ask(s, min(s.n_jobs, free), groups)
        if batch:
            _launch(s, batch, launch)
        if s.max_failed and len(s.failed) >= s.max_failed:
            return (f"error: stopped after {len(s.failed)} failed trials ({', '.join(s.failed)}; "
                    f"hydra.sweeper.max_failed={s.max_failed}); their result.json files say why")


def _ask(s: Search, n: int, groups: int) -> list[tuple[optuna.Trial, dict[str, Any]]]:
    """n new trials with their sampled values; one whose place in the budget another worker took
    first is recorded as failed (surplus) and trains nothing."""
    batch = []
    for _ in range(n):
        trial = s.study.ask()
        if not holds_a_place(s.study, trial.number, s.total):
            trial.set_user_attr("surplus", True)
            s.study.tell(trial, state=TrialState.FAIL)
            continue
        batch.append((trial, {key: suggest(trial, key, p, groups) for key, p in s.params.items()}))
    return batch


def _launch(s: Search, batch: list[tuple[optuna.Trial, dict[str, Any]]], launch: Launch) -> None:
    """The batch through Hydra's launcher, with heartbeats, each trial told from its result.json.
    Job numbers are trial numbers, so the batch goes in runs of consecutive numbers."""
    beats = [get_heartbeat_thread(t._trial_id, s.study._storage) for t, _ in batch]
    for b in beats:
        b.start()
    told: set[int] = set()
    try:
        start = 0
        while start < len(batch):
            end = start + 1
            while end < len(batch) and batch[end][0].number == batch[end - 1][0].number + 1:
                end += 1
            run = batch[start:end]
            dirs = launch([s.fixed + [f"{k}={v}" for k, v in values.items()] for _, values in run], run[0][0].number)
            for (trial, _), out in zip(run, dirs):
                told.add(trial.number)  # its job ended: it is not an interrupted trial, whatever _tell finds
                _tell(s, trial, out)
            start = end
    except BaseException:
        # Ctrl-C, SIGTERM (the job exits 130/143), a full disk or a launcher error: the trials not
        # told keep what their job recorded complete (jobs of a batch that ran before the one that
        # stopped it); the others are failed and marked, and a resumed sweep runs their parameters
        # again. A storage that cannot be written now leaves them running: settle_stale or the
        # heartbeat's retry deals with them on resume.
        for trial, _ in batch:
            if trial.number not in told:
                with contextlib.suppress(Exception):
                    _stopped(s, trial)
        raise
    finally:
        for b in beats:
            b.join()


def recorded(study: optuna.Study, total: int, where: str) -> str:
    """What an interrupted sweep leaves behind, and how to go on: for its one-line message."""
    trials = study.get_trials(deepcopy=False)
    done = sum(t.state in DONE for t in trials)
    stopped = [t.number for t in trials if t.user_attrs.get("interrupted") and t.state == TrialState.FAIL]
    again = f"; trial {stopped[-1]} was stopped and runs again on resume" if stopped else ""
    return (f"{done} of {total} trials of study {study.study_name} are recorded in {where}{again}; "
            "run the same command to resume")


def _stopped(s: Search, trial: optuna.Trial) -> None:
    """A trial of a batch that was stopped: told from its job's result.json if that records a
    finished run, else failed as interrupted."""
    run_dir = s.study._storage.get_trial_user_attrs(trial._trial_id).get("run_dir")
    outcome = finished_outcome(run_dir, s.objectives)
    if outcome is not None:
        s.study.tell(trial, outcome[1], state=outcome[0], skip_if_finished=True)
        return
    trial.set_user_attr("interrupted", True)
    s.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)


def _tell(s: Search, trial: optuna.Trial, out: Path | None) -> None:
    """The trial's state and values, from its job's result.json."""
    state = s.study._storage.get_trial(trial._trial_id).state
    if state.is_finished():  # another worker took it for dead meanwhile, and recorded it
        log.warning("trial %d was recorded as %s by another worker meanwhile", trial.number, state.name)
        return
    record: RunRecord | None = None
    if out is not None:
        trial.set_user_attr("run_dir", str(out.resolve()))
        try:
            record = RunRecord.from_json(read_json_object(out / RESULT_FILE))
        except (OSError, ValueError) as err:
            log.warning("trial %d: no readable %s (%s)", trial.number, out / RESULT_FILE, err)
    if record is not None and record.status == "completed":
        s.study.tell(trial, values=[float(record.get(o)) for o in s.objectives])
    elif record is not None and record.status == "pruned":
        s.study.tell(trial, state=TrialState.PRUNED)
        log.info("trial %d pruned: %s", trial.number, record.reason)
    else:
        why = str((record.get("error") if record is not None else None) or "no result.json")
        trial.set_user_attr("fail_reason", why)
        s.study.tell(trial, state=TrialState.FAIL)
        kind, _, message = why.partition(": ")
        if kind in USER_ERRORS:  # a setting only a trial can check (its data): every trial would fail so
            raise ConfigError(message)
        log.warning("trial %d failed: %s", trial.number, why)
        s.failed.append(f"trial {trial.number}")
