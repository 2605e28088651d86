"""The search behind `hydra/sweeper=optuna`: Optuna asks, Hydra's launcher trains, result.json answers.

The project's one Optuna search loop, behind `python -m src.train -m sweep=default` (`make sweep`)
and `python -m src.train -m hydra/sweeper=optuna ...`. The sweeper plugin (hydra_plugins/ft_optuna_sweeper)
parses Hydra's syntax into the search space (src.search.space) and hands this module a `launch`
function (Hydra's launcher). The study's machinery: the storage with heartbeats (src.search.storage),
the study's identity (src.search.study), the exact budget and what trials come to
(src.search.results); the pruning rules are src.search.pruning's.

Each trial is a Hydra job numbered by its trial number (`hydra.job.num`); the job opens its trial
from the storage (src.search.job). The objectives are read from each job's result.json, not from
the task function's return value.
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
from optuna.trial import TrialState

from src.config import ConfigError
from src.record.io import RESULT_FILE, read_json_object
from src.record.schema import RunRecord
from src.search.results import DONE, finished_outcome, holds_a_place, record_trial_dir, settle_stale, trial_dir
from src.search.scheduler_end import not_its_fault
from src.search.space import suggest
from src.search.storage import SweepJournalStorage, SweepRDBStorage, heartbeats

log = logging.getLogger(__name__)
# A trial that failed on one of these (as its result.json records it) stops the sweep with its one line.
USER_ERRORS = ("ConfigError", "PretrainedWeightsError", "DamagedStorage")

# What a launch returns for each job: its output folder (None when Hydra returned none).
Launch = Callable[[list[list[str]], int], Sequence[Path | None]]


@dataclass
class Search:
    """What the sweeper resolved: the study, its space and budget, the overrides every job gets."""

    study: optuna.Study
    storage: SweepRDBStorage | SweepJournalStorage  # the study's, as make_storage opened it
    params: dict[str, dict[str, Any]]  # src.search.space's param specs ({type, low, high, log, step} | {choices})
    fixed: list[str]  # overrides every job gets (the command line's and hydra.sweeper.params' fixed ones)
    objectives: list[str]
    total: int
    n_jobs: int
    max_failed: int
    poll_s: float
    worker: int = 0  # this worker's index (hydra.sweeper.worker_index): recorded on each trial it asks
    sweep_dir: Path | None = None  # where the trials' folders are now (src.search.results.trial_dir)
    failed: list[str] = field(default_factory=list)

    def trial_id(self, trial: optuna.Trial) -> int:
        """The trial's id in the storage (what the storage's methods take)."""
        return self.storage.get_trial_id_from_study_id_trial_number(
            self.storage.get_study_id_from_name(self.study.study_name), trial.number)


@dataclass
class Pace:
    """The sweep's progress, a line each time trials finish: how many of the budget are done, and
    the time left at the pace since this process started (`since`, with `done` trials then: a
    resumed sweep times only its own part). Every worker's trials count, so workers sharing a study
    each see the whole sweep's pace; pruned trials are in it too, so it holds while pruning stops
    about as many trials as before."""

    since: float
    done: int
    told: int = -1

    def log(self, done: int, total: int) -> None:
        if done == self.told or done <= self.done:
            return
        from src.training.estimate import duration  # (torch is loaded by now: a trial has run)

        self.told = done
        spent = time.monotonic() - self.since
        left = max(total - done, 0) * spent / (done - self.done)
        log.info("%s%s", trials_done(done, total, f" in {duration(spent)}"),
                 f"; about {duration(left)} left at this pace" if done < total else "")


def trials_done(done: int, total: int, took: str = "") -> str:
    """'D of T trials done' (`took`: ' in 5s', after 'done'); a study resumed with a lower n_trials
    than it already has says its budget is met (not 'D of T' with D over T)."""
    if done > total:
        return f"{done} trials done{took}, more than hydra.sweeper.n_trials={total}: the budget is already met"
    return f"{done} of {total} trials done{took}"


def search(s: Search, launch: Launch, groups: int) -> str | None:
    """Trials until `total` completed or were pruned (every worker's count), `n_jobs` at a time
    through `launch`. Returns why the sweep stops when `max_failed` trials failed (a line, which
    src.exits prints as the error), else None."""
    waiting = False
    pace = Pace(time.monotonic(), sum(t.state in DONE for t in s.study.get_trials(deepcopy=False)))
    while True:
        with warnings.catch_warnings():  # experimental in Optuna 5; what resume after a dead worker rests on
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            settle_stale(s.study, s.storage, s.objectives, s.sweep_dir)  # a dead worker's finished trial keeps its result...
            optuna.storages.fail_stale_trials(s.study)  # ...any other frees its place (queued again)
        trials = s.study.get_trials(deepcopy=False)
        done = sum(t.state in DONE for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        pace.log(done, s.total)
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
            return (f"stopped after {len(s.failed)} failed trials ({', '.join(s.failed)}; "
                    f"hydra.sweeper.max_failed={s.max_failed}); their result.json files say why")


def _ask(s: Search, n: int, groups: int) -> list[tuple[optuna.Trial, dict[str, Any]]]:
    """n new trials with their sampled values; one whose place in the budget another worker took
    first is recorded as failed (surplus) and trains nothing."""
    batch = []
    for _ in range(n):
        trial = s.study.ask()
        trial.set_user_attr("worker", s.worker)  # the worker's sampler seed moves on with its own trials
        if not holds_a_place(s.study, trial.number, s.total):
            trial.set_user_attr("surplus", True)
            s.study.tell(trial, state=TrialState.FAIL)
            continue
        batch.append((trial, {key: suggest(trial, key, p, groups) for key, p in s.params.items()}))
    return batch


def _launch(s: Search, batch: list[tuple[optuna.Trial, dict[str, Any]]], launch: Launch) -> None:
    """The batch through Hydra's launcher, with heartbeats, each trial told from its result.json.
    Job numbers are trial numbers, so the batch goes in runs of consecutive numbers."""
    told: set[int] = set()
    with heartbeats(s.storage, [s.trial_id(t) for t, _ in batch]):
        try:
            for run in _consecutive(batch):
                dirs = launch([s.fixed + [f"{k}={v}" for k, v in values.items()] for _, values in run], run[0][0].number)
                for (trial, _), out in zip(run, dirs):
                    told.add(trial.number)  # its job ended: it is not an interrupted trial, whatever _tell finds
                    _tell(s, trial, out)
        except BaseException:
            # Ctrl-C, SIGTERM (src.exits.Stopped, from this process or a job's), a full disk or a
            # launcher error: the trials not told keep what their job recorded complete (jobs of a
            # batch that ran before the one that stopped it); the others are failed and marked, and
            # a resumed sweep runs their parameters again. A storage that cannot be written now
            # leaves them running: settle_stale or the heartbeat's retry deals with them on resume.
            for trial, _ in batch:
                if trial.number not in told:
                    with contextlib.suppress(Exception):
                        _stopped(s, trial)
            raise


def _consecutive(batch: list[tuple[optuna.Trial, Any]]) -> list[list[tuple[optuna.Trial, Any]]]:
    """The batch in runs of consecutive trial numbers (a launch numbers its jobs from the first)."""
    runs: list[list[tuple[optuna.Trial, Any]]] = []
    for item in batch:
        if runs and item[0].number == runs[-1][-1][0].number + 1:
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


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
    outcome = finished_outcome(trial_dir(s.storage.get_trial_user_attrs(s.trial_id(trial)), s.sweep_dir), s.objectives)
    if outcome is not None:
        s.study.tell(trial, outcome[1], state=outcome[0], skip_if_finished=True)
        return
    trial.set_user_attr("interrupted", True)
    s.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)


def _retried(s: Search, trial: optuna.Trial, record: RunRecord) -> bool:
    """A trial the cluster ended through no fault of its own (preempted, its node failed:
    src.search.scheduler_end) is failed without counting against max_failed, and its parameters are
    queued once more: the retry continues its checkpoint (src.search.job). Once: a retry that ends the
    same way is failed as any other (False)."""
    state = not_its_fault(record.get("scheduler"))
    if state is None:
        return False
    if (first := trial.user_attrs.get("retry_of")) is not None:
        log.warning("trial %d: the scheduler ended its job (%s) again; it was the retry of trial %d: not retried "
                    "again", trial.number, state, first)
        return False
    trial.set_user_attr("fail_reason", str(record.get("error") or state))
    trial.set_user_attr("scheduler_ended", state)
    params = trial.params
    s.study.tell(trial, state=TrialState.FAIL)
    # queued after the tell: a driver killed in between leaves it to requeue_interrupted on resume
    s.study.enqueue_trial(params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)
    log.warning("trial %d: the scheduler ended its job (%s), not the trial's doing: its parameters run once more, "
                "from its last checkpoint", trial.number, state)
    return True


def _tell(s: Search, trial: optuna.Trial, out: Path | None) -> None:
    """The trial's state and values, from its job's result.json."""
    state = s.storage.get_trial(s.trial_id(trial)).state
    if state.is_finished():  # another worker took it for dead meanwhile, and recorded it
        log.warning("trial %d was recorded as %s by another worker meanwhile", trial.number, state.name)
        return
    record: RunRecord | None = None
    if out is not None:
        record_trial_dir(trial, out, s.sweep_dir or out.parent)
        try:
            record = RunRecord.from_json(read_json_object(out / RESULT_FILE))
        except (OSError, ValueError) as err:
            log.warning("trial %d: no readable %s (%s)", trial.number, out / RESULT_FILE, err)
    if record is not None and record.status == "completed":
        s.study.tell(trial, values=[float(record.get(o)) for o in s.objectives])
    elif record is not None and record.status == "pruned":
        s.study.tell(trial, state=TrialState.PRUNED)
        log.info("trial %d pruned: %s", trial.number, record.reason)
    elif record is not None and _retried(s, trial, record):
        return
    else:
        why = str((record.get("error") if record is not None else None) or "no result.json")
        trial.set_user_attr("fail_reason", why)
        s.study.tell(trial, state=TrialState.FAIL)
        kind, _, message = why.partition(": ")
        if kind in USER_ERRORS:  # a setting only a trial can check (its data): every trial would fail so
            raise ConfigError(message)
        log.warning("trial %d failed: %s", trial.number, why)
        s.failed.append(f"trial {trial.number}")
