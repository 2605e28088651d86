"""What a study's trials come to: the exact budget, a trial's outcome read from its result.json,
stale and interrupted trials, the Pareto set and the summary of what the search cost.

The budget is exact: `n_trials` trials complete or are pruned with any number of workers (a trial
whose place another worker took first is failed as `surplus`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from src.record.io import RESULT_FILE, read_json_object
from src.record.schema import RunRecord
from src.search.optuna_compat import Heartbeats
from src.search.space import MAXIMISE

log = logging.getLogger(__name__)

DONE = (TrialState.COMPLETE, TrialState.PRUNED)


def trial_dir_attrs(out: Path, sweep_dir: Path | str) -> dict[str, str]:
    """The user attrs that record a trial's run folder: its absolute path (`run_dir`) and, when it
    lies in the sweep folder, its place there (`run_subdir`), which `trial_dir` reads."""
    out, base = out.resolve(), Path(sweep_dir).resolve()
    return {"run_dir": str(out)} | ({"run_subdir": str(out.relative_to(base))} if out.is_relative_to(base) else {})


def record_trial_dir(trial: optuna.Trial, out: Path, sweep_dir: Path | str) -> None:
    """`trial_dir_attrs` set on the trial."""
    for key, value in trial_dir_attrs(out, sweep_dir).items():
        trial.set_user_attr(key, value)


def trial_dir(attrs: Mapping[str, Any], sweep_dir: Path | str | None) -> Path | None:
    """A trial's run folder (None when its job recorded none): its place in the sweep folder as the
    sweep folder is now, so that one moved or copied (to a bigger disk, off a cluster) counts and
    continues its own trials' files, where the absolute path counted a moved sweep's cost as 0 and a
    copy's from the original; else the absolute path (a study of older code, a job folder outside)."""
    if attrs.get("run_subdir") is not None and sweep_dir is not None:
        return Path(sweep_dir) / attrs["run_subdir"]
    return Path(attrs["run_dir"]) if attrs.get("run_dir") else None


def holds_a_place(study: optuna.Study, number: int, total: int) -> bool:
    """Trial numbers are handed out atomically by the storage, so the trials numbered below this
    one that completed, were pruned or are running decide it: fewer than `total`, it trains."""
    ahead = sum(1 for t in study.get_trials(deepcopy=False, states=(*DONE, TrialState.RUNNING)) if t.number < number)
    return ahead < total



def pareto_rows(study: optuna.Study, objectives: list[str], sweep_dir: Path | str | None = None) -> list[dict[str, Any]]:
    rows = []
    for t in sorted(study.best_trials, key=lambda t: t.values[0], reverse=True):
        where = trial_dir(t.user_attrs, sweep_dir)
        rows.append({"trial": t.number, **dict(zip(objectives, t.values)), **t.params, "run_dir": where and str(where)})
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


def finished_outcome(run_dir: Path | str | None, objectives: list[str]) -> tuple[TrialState, list[float] | None] | None:
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


def settle_stale(study: optuna.Study, storage: Heartbeats, objectives: list[str],
                 sweep_dir: Path | str | None = None) -> list[int]:
    """Stale trials (their worker stopped sending heartbeats) whose job had recorded a finished run
    are told from its result.json, not failed and trained again: the worker died, or the storage
    could not be written (a full disk), after the run's record was complete. Returns their numbers."""
    settled = []
    for stale in storage.stale_trial_ids(storage.get_study_id_from_name(study.study_name)):
        trial = storage.get_trial(stale)
        where = trial_dir(trial.user_attrs, sweep_dir)
        outcome = finished_outcome(where, objectives)
        if outcome is None:
            continue
        state, values = outcome
        study.tell(trial.number, values, state=state, skip_if_finished=True)
        log.warning("trial %d: its worker stopped before telling the study; recorded %s from %s", trial.number,
                    state.name, where / RESULT_FILE)
        settled.append(trial.number)
    return settled


def summarise(study: optuna.Study, objectives: list[str], epochs: int, sweep_dir: Path | str | None = None) -> dict[str, Any]:
    """What the search cost: trials by state, epochs trained (of all trials, pruned included), best value.
    Surplus trials (a budget place taken by another worker first) trained nothing and are left out."""
    every = study.get_trials(deepcopy=False)
    trials = [t for t in every if not t.user_attrs.get("surplus")]
    states = {s.name.lower(): 0 for s in TrialState}
    for t in trials:
        states[t.state.name.lower()] += 1
    # A retry that continued a dead or interrupted attempt's checkpoint (src.search.job) replays and
    # records that attempt's epochs, and its record holds their cost: counted there, not twice.
    taken = {int(c["trial"]): c for t in trials if isinstance(c := t.user_attrs.get("continues"), dict)}
    trained = [max(0, int(t.user_attrs.get("epochs_trained", 0)) - int(taken.get(t.number, {}).get("epochs", 0)))
               for t in trials]
    # Pruning's saving is judged on the trials that ran their course (complete or pruned): a failed,
    # interrupted or still running trial's unrun epochs were not saved by pruning.
    unfinished = [n for t, n in zip(trials, trained) if t.state not in DONE and n]
    flops = seconds = 0.0  # what every trial used, pruned and failed ones included, from its run files
    for t in trials:
        where = trial_dir(t.user_attrs, sweep_dir)
        path = where / RESULT_FILE if where else None
        if path and path.is_file():
            try:
                r = RunRecord.from_json(read_json_object(path))
            except ValueError as err:  # cut short by a kill: its cost cannot be counted
                log.warning("skipped %s: %s", path, err)
                continue
            # a failed run's measurements are nested (measured_before_stop), a pruned one's are its own
            used = r.to_json() if r.train_time_s is not None else (r.measured_before_stop or {})
            moved = taken.get(t.number, {})  # the part a retry took over, in the retry's record
            flops += max(0.0, (used.get("train_flops") or 0) - (moved.get("train_flops") or 0))
            seconds += max(0.0, (used.get("train_time_s") or 0) - (moved.get("train_time_s") or 0))
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
        "epochs_trained": sum(trained),  # by every trial: what the search cost
        # what the complete and pruned trials would have trained had none been stopped early
        "epochs_unpruned": epochs * sum(1 for t, n in zip(trials, trained) if t.state in DONE and n),
        # of epochs_trained, by failed, interrupted or still running trials: no part of pruning's saving
        "epochs_unfinished": sum(unfinished),
        "trials_unfinished": len(unfinished),
        "total_train_flops": flops,
        "total_train_time_s": seconds,
        # first trial started to last trial finished (all workers; includes any pause between resumes)
        "span_s": (max(ends) - min(starts)).total_seconds() if starts and ends else None,
        f"best_{objectives[0]}": best.values[0] if best else None,
        "best_trial": best.number if best else None,
        # where its files are (model_best.pt, config.yaml): the trial's number alone sent users to the report
        "best_run_dir": str(where) if best and (where := trial_dir(best.user_attrs, sweep_dir)) else None,
    }


def format_summary(s: dict[str, Any]) -> str:
    states = ", ".join(f"{v} {k}" for k, v in s["states"].items())
    judged = s["epochs_trained"] - s.get("epochs_unfinished", 0)  # by complete and pruned trials
    share = f" ({judged / s['epochs_unpruned']:.0%})" if s["epochs_unpruned"] else ""
    other = (f"; {s['epochs_unfinished']} more in {s['trials_unfinished']} failed, interrupted or running trial"
             f"{'s' if s['trials_unfinished'] != 1 else ''}" if s.get("trials_unfinished") else "")
    best = next(k for k in s if k.startswith("best_") and k not in ("best_trial", "best_run_dir"))
    value = s[best] if s[best] is None else f"{s[best]:.4g}"  # summary.json keeps every digit
    return (f"trials: {s['trials']} ({states}); pruner {s['pruner']}; epochs trained {judged} of "
            f"{s['epochs_unpruned']}{share}{other}; {best} {value} (trial {s['best_trial']})")


