"""The search for any Hydra application, as hydra-optuna-sweeper 1.3 runs it on Optuna 5: Optuna asks
`n_jobs` trials at a time, Hydra's launcher runs them, and each job's return value is its objective
(a float, or a sequence with one value per `direction`). A job that raised `optuna.TrialPruned` (as
`report()` does when the pruner says stop) is PRUNED; any other exception, or a return value that is
no objective, FAILs the trial. A batch whose share of failed trials is above `max_failure_rate` stops
the sweep with the first failed job's own exception, as in 1.3.

Each trial's job number is its trial number (`hydra.job.num`), so a job finds its trial (__report.py).
At the end, `<sweep dir>/optimization_results.yaml` holds the best trial (or, for several
directions, the Pareto set), in 1.3's shape.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import optuna
from optuna.trial import TrialState

from hydra_plugins.ft_optuna_sweeper._report import shown_url
from hydra_plugins.ft_optuna_sweeper.ending import Interrupted, signum_of
from hydra_plugins.ft_optuna_sweeper.errors import SettingError
from hydra_plugins.ft_optuna_sweeper.space import override, spec_from_config, suggest

log = logging.getLogger(__name__)
RESULTS_FILE = "optimization_results.yaml"
DOCS = "https://hydra.cc/docs/upgrades/1.1_to_1.2/changes_to_sweeper_config/"

# Hydra's launcher: the overrides of each job and the first job's number -> Hydra's JobReturns.
Launch = Callable[[list[list[str]], int], Sequence[Any]]


@dataclass
class Plan:
    """What the sweeper resolved for one invocation."""

    study: optuna.Study
    params: dict[str, dict[str, Any]]  # space.py's param specs
    fixed: list[str]  # overrides every job gets
    n_trials: int  # trials this invocation runs (1.3: more on each resume of a stored study)
    n_jobs: int
    max_failure_rate: float
    max_failed: int  # 0: no count of its own
    custom: Callable[[Any, optuna.Trial], None] | None = None  # 1.3's custom_search_space hook
    config: Any = None  # what the hook gets: the sweeper's composed config
    storage: str | None = None  # hydra.sweeper.storage (None: in memory), for the line of a stopped sweep
    named: bool = True  # hydra.sweeper.study_name given (null: Optuna made one up, which the same command would not find)
    # launch the batch's jobs one by one, each told as it ends: a launcher that runs them one after another
    # anyway (Hydra's basic one), where a stop in job 2 would otherwise lose job 1's finished result
    one_by_one: bool = False


def space_from_config(search_space: Mapping[str, Any] | None, params: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """1.3's deprecated `hydra.sweeper.search_space` as param specs, with 1.3's warnings: it is used
    only when `params` is not given."""
    if search_space is None:
        return {}
    if params is not None:
        warnings.warn("Both hydra.sweeper.params and hydra.sweeper.search_space are configured: the sweep uses "
                      f"hydra.sweeper.params and ignores hydra.sweeper.search_space ({DOCS})", UserWarning, stacklevel=2)
        return {}
    warnings.warn("`hydra.sweeper.search_space` is deprecated and will be removed in the next major release of "
                  f"hydra-optuna-sweeper; give the search space in hydra.sweeper.params ({DOCS})", UserWarning, stacklevel=2)
    return {str(k): spec_from_config(str(k), v) for k, v in search_space.items()}


def check_resumed(study: optuna.Study, directions: list[str], params: Mapping[str, dict[str, Any]], where: str) -> None:
    """A stored study resumed to measure something else, refused in one line before any trial: other
    directions (Optuna loads the study with its own and keeps them, unsaid, so "best" would be the
    other end), or a key swept as a kind its earlier trials were not (Optuna refuses that only when
    the first trial asks for it: a traceback, and a failed trial left in the study)."""
    from hydra_plugins.ft_optuna_sweeper.space import distribution

    recorded = [d.name.lower() for d in study.directions]
    again = f"study {study.study_name} in {where}"
    if recorded != directions:
        raise SettingError(f"hydra.sweeper.direction={directions[0] if len(directions) == 1 else directions}: {again} "
                           f"was created with direction={recorded[0] if len(recorded) == 1 else recorded}; "
                           "give that, or another hydra.sweeper.study_name")
    seen: dict[str, Any] = {}
    for trial in study.get_trials(deepcopy=False):
        seen |= {k: v for k, v in trial.distributions.items() if k in params and k not in seen}
    for key, old in seen.items():
        new = distribution(params[key])
        try:
            optuna.distributions.check_distribution_compatibility(old, new)
        except ValueError as err:
            raise SettingError(f"{key}: {again} sampled it as {old}, not {new} ({err}); sweep it as before, "
                               "or give another hydra.sweeper.study_name") from None


def sampler_for(study: optuna.Study, sampler: Mapping[str, Any], grid: Mapping[str, list[Any]] | None) -> Any:
    """The sampler its checked config names, for `study`, given `grid` if it is a GridSampler's partial (1.3's
    `_partial_: true`). A seeded one restarted with its seed on a resumed study would propose the very
    trials it proposed before, and run them again: its seed moves on by the trials the study holds
    (settings.seed_moved_on; a new study keeps the seed as given, so one run is 1.3's run)."""
    from hydra.utils import instantiate

    from hydra_plugins.ft_optuna_sweeper.settings import seed_moved_on

    built = instantiate(seed_moved_on(sampler, len(study.get_trials(deepcopy=False))))
    return built if grid is None else built(dict(grid))


def grid_left(study: optuna.Study, grid: Mapping[str, list[Any]]) -> int:
    """How many points of `grid` the study has not finished: a resumed grid runs those, not its done points
    again (Optuna's GridSampler, its grid exhausted, re-evaluates finished points). A trial stopped by
    Ctrl-C or SIGTERM counts as not run: its parameters are queued again (requeue_interrupted)."""
    import itertools

    done = {tuple(t.params.get(k) for k in grid) for t in study.get_trials(deepcopy=False)
            if t.state.is_finished() and not (t.state == TrialState.FAIL and t.user_attrs.get("interrupted"))}
    return sum(point not in done for point in itertools.product(*grid.values()))


def run(plan: Plan, launch: Launch) -> None:
    """`n_trials` trials, `n_jobs` at a time; raises the first failed job's exception when a batch
    fails above `max_failure_rate` (or when `max_failed` trials failed). Ctrl-C or SIGTERM (here or in
    a job) fails the batch's trials not yet told, marked `interrupted` as src.train marks them (a
    stored study would otherwise keep them RUNNING for good), and raises ending.Interrupted saying
    what the study holds; the next invocation runs their parameters first (within its n_trials)."""
    requeue_interrupted(plan.study)
    left, failed = plan.n_trials, 0
    while left > 0:
        batch: list[optuna.Trial] = []
        told: set[int] = set()
        failures: list[Any] = []
        try:
            for _ in range(min(plan.n_jobs, left)):
                batch.append(plan.study.ask())
            overrides = [_configure(plan, trial) for trial in batch]
            returns: list[Any] = []
            for start, end in _runs([t.number for t in batch], plan.one_by_one):
                ended = list(launch(overrides[start:end], batch[start].number))
                for trial, ret in zip(batch[start:end], ended):
                    failure = _tell(plan.study, trial, ret)
                    if failure is not None:
                        failures.append(failure)
                    told.add(trial.number)
                returns += ended
        except BaseException as err:
            stopped = isinstance(err, KeyboardInterrupt)
            for trial in batch:
                if trial.number not in told:
                    _fail_untold(plan.study, trial, interrupted=stopped)
            if stopped:
                raise Interrupted(signum_of(err), recorded(plan)) from None
            raise
        failed += len(failures)
        too_many = len(failures) / len(returns) > plan.max_failure_rate or bool(plan.max_failed and failed >= plan.max_failed)
        if failures and too_many:
            log.error("%d of %d trials of this batch failed (hydra.sweeper.max_failure_rate=%s)", len(failures),
                      len(returns), plan.max_failure_rate)
            if isinstance(failures[0], NoObjective):  # nothing of the job's to show: the line says what it returned
                raise failures[0]
            failures[0].return_value  # noqa: B018  (raises the job's own exception, with its traceback)
        left -= len(batch)


def _fail_untold(study: optuna.Study, trial: optuna.Trial, interrupted: bool) -> None:
    """A trial whose job did not end (stopped, or the batch raised): FAIL, not RUNNING for good. A
    storage that cannot be written now leaves it as it is: the error that stopped the sweep says more."""
    try:
        if interrupted:
            trial.set_user_attr("interrupted", True)
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
    except Exception as err:  # noqa: BLE001
        log.warning("trial %d could not be recorded as failed: %s", trial.number, err)


def requeue_interrupted(study: optuna.Study) -> None:
    """Trials stopped by Ctrl-C or SIGTERM are failed in the study; their parameters are queued once
    more, so that a resumed sweep finishes what was interrupted instead of sampling something else
    (src.train's sweep uses this too)."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    for t in trials:
        # (scheduler_ended: its job preempted or its node lost, src.search.launched._retried)
        if t.state == TrialState.FAIL and t.number not in retried and \
                (t.user_attrs.get("interrupted") or t.user_attrs.get("scheduler_ended")):
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
            log.info("trial %d was interrupted: its parameters run again", t.number)


def recorded(plan: Plan) -> str:
    """What an interrupted sweep leaves behind, and how to go on: for its one-line message."""
    study = plan.study
    if plan.storage is None:
        return f"study {study.study_name} was in memory (hydra.sweeper.storage=null): nothing is kept"
    # with study_name null each run makes a study of its own: the same command would start afresh
    resume = "run the same command to resume" if plan.named else \
        f"resume with the same command and hydra.sweeper.study_name={study.study_name}"
    try:
        trials = study.get_trials(deepcopy=False)
    except Exception:  # noqa: BLE001  (the storage itself may be what cannot be read now)
        return f"study {study.study_name} is in {shown_url(plan.storage)}; {resume}"
    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    stopped = [t.number for t in trials if t.user_attrs.get("interrupted") and t.state == TrialState.FAIL
               and t.number not in {u.user_attrs.get("retry_of") for u in trials}]
    again = (f"; trial{'s' * (len(stopped) > 1)} {', '.join(map(str, stopped))} stopped, run{'s' * (len(stopped) == 1)} "
             "again first on resume") if stopped else ""
    where = shown_url(plan.storage)  # no password in the line
    return f"{done} finished trial{'s' * (done != 1)} of study {study.study_name} recorded in {where}{again}; {resume}"


def _runs(numbers: list[int], one_by_one: bool = False) -> list[tuple[int, int]]:
    """The batch as runs of consecutive trial numbers (a launch numbers its jobs from the first): index
    ranges; each job alone with `one_by_one`."""
    runs: list[tuple[int, int]] = []
    for i, n in enumerate(numbers):
        if runs and n == numbers[i - 1] + 1 and not one_by_one:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def _configure(plan: Plan, trial: optuna.Trial) -> list[str]:
    """The trial's values suggested, the custom hook called, and the job's overrides."""
    for key, spec in plan.params.items():
        suggest(trial, key, spec)
    fixed = dict(text.partition("=")[::2] for text in plan.fixed)  # `~key` deletes: no value
    for key, value in fixed.items():
        trial.set_user_attr(key, value)  # as 1.3 records them
    if plan.custom is not None:
        plan.custom(plan.config, trial)
    both = sorted(trial.params.keys() & fixed.keys())
    if both:  # only the hook can get here: split_space lets the fixed value win for the overrides
        raise SettingError(f"hydra.sweeper.custom_search_space suggested {both[0]}, which is also fixed")
    return [override(k, v) for k, v in trial.params.items()] + list(plan.fixed)


class NoObjective(SettingError):
    """A job that ended well but returned no objective for `hydra.sweeper.direction` (a dict, a string, a
    count of values other than the directions', NaN): one line, exit 2, naming the trial and what it returned."""


def _tell(study: optuna.Study, trial: optuna.Trial, ret: Any) -> Any:
    """The trial's state from its job; None when it did not fail, else what to raise: its JobReturn (whose
    return_value raises the job's own exception) or a NoObjective."""
    from hydra.core.utils import JobStatus

    if ret.status == JobStatus.FAILED and isinstance(ret._return_value, optuna.TrialPruned):  # noqa: SLF001
        _told(study, trial, state=TrialState.PRUNED)
        log.info("trial %d pruned: %s", trial.number, ret._return_value)  # noqa: SLF001
        return None
    if ret.status != JobStatus.COMPLETED:
        _told(study, trial, state=TrialState.FAIL)
        log.warning("trial %d failed: %r", trial.number, ret._return_value)  # noqa: SLF001
        return ret
    try:
        values = objective_values(ret.return_value, len(study.directions))
    except ValueError as err:
        _told(study, trial, state=TrialState.FAIL)
        log.warning("trial %d failed: %s", trial.number, err)
        return NoObjective(f"trial {trial.number} ({' '.join(ret.overrides)}): {err}")
    _told(study, trial, values=values)
    return None


def _told(study: optuna.Study, trial: optuna.Trial, **outcome: Any) -> None:
    """study.tell; a GridSampler whose grid is done calls `Study.stop`, which Optuna allows only inside
    `optimize` and refuses with a RuntimeError after the trial is recorded: that one is let pass (1.3 did too)."""
    try:
        study.tell(trial, **outcome)
    except RuntimeError as err:
        if "Study.stop" not in str(err):
            raise


def objective_values(value: Any, n: int) -> list[float]:
    """A job's return value as its objectives: a float for one direction (or what float() takes, as 1.3),
    a sequence of n for n; a ValueError saying what it returned otherwise."""
    plural = "one direction" if n == 1 else f"{n} directions"
    wanted = f"{'a number' if n == 1 else f'a sequence of {n} numbers'} (hydra.sweeper.direction has {plural})"
    try:
        if n == 1:
            values = [float(value)]
        elif isinstance(value, (str, bytes, Mapping)):  # a dict's keys, or a string's characters, are no objectives
            raise TypeError
        else:
            values = [float(v) for v in value]
    except (TypeError, ValueError):
        raise ValueError(f"the task returned {value!r}, not {wanted}") from None
    if len(values) != n:
        raise ValueError(f"the task returned {len(values)} values, not {wanted}")
    if any(math.isnan(v) for v in values):  # Optuna would record the trial FAIL unsaid, and the sweep count it done
        raise ValueError(f"the task returned {value!r}: NaN is no objective value")
    return values


def conclude(study: optuna.Study, sweep_dir: Path) -> dict[str, Any]:
    """The best trial (one direction) or the Pareto set (several), logged and saved in 1.3's shape."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    results: dict[str, Any] = {"name": "optuna"}
    if not done:
        log.warning("no trial of study %s completed", study.study_name)
        results |= {"best_params": None, "best_value": None} if len(study.directions) == 1 else {"solutions": []}
    elif len(study.directions) == 1:
        best = study.best_trial
        results |= {"best_params": best.params, "best_value": best.value}
        log.info("Best parameters: %s; best value: %s", best.params, best.value)
    else:
        results["solutions"] = [{"params": t.params, "values": t.values} for t in study.best_trials]
        log.info("%d Pareto-optimal trials", len(results["solutions"]))
    from hydra_plugins.ft_optuna_sweeper._report import save_yaml

    save_yaml(results, sweep_dir / RESULTS_FILE)
    return results
