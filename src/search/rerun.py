"""The Pareto set re-run on more seeds (`hydra.sweeper.rerun_seeds`) and reported on test, as mean and 95% CI."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import optuna

from src.config import RunConfig
from src.data.identity import dataset_identity_or_none
from src.gate import compose_train, to_run_config
from src.record.lock import FolderInUse
from src.record.schema import RunRecord
from src.reporting.stats import SHARE, format_ci, mean_ci
from src.training import checkpoint
from src.training.run import finished_run, run

log = logging.getLogger(__name__)
WAIT_S = 2.0  # how often a re-run that another worker is training is looked at again


def _as_record(result: RunRecord | dict[str, Any]) -> RunRecord:
    return result if isinstance(result, RunRecord) else RunRecord.from_json(result)


def rerun_pareto(
    study: optuna.Study, rows: list[dict[str, Any]], overrides: list[str], seeds: list[int], out: Path, group: str
) -> list[dict[str, Any]]:
    """Each Pareto-optimal configuration again on `seeds`, reported on test. Resumable: a seed whose
    run of this same config on the same data already finished is read back, not trained again. Every
    seed's folder is checked before any trains: one that holds a finished re-run of another config
    (other `rerun_overrides`, another dataset...) or on data that changed since, or a checkpoint of
    one, is refused (ConfigError, one line naming the folder and what differs), and kept: never
    reported as this re-run."""
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    instead = (f"move {out} away to re-run the Pareto set with these settings, or give the re-run settings it was "
               "run with (hydra.sweeper.rerun_overrides) to report it")
    planned: list[tuple[optuna.trial.FrozenTrial, list[tuple[int, Path, RunConfig, RunRecord | None]]]] = []
    for row in rows:
        trial = by_number[row["trial"]]
        seeds_of_trial = []
        for seed in seeds:
            run_dir = out / f"trial_{trial.number:04d}" / f"seed_{seed}"
            cfg = to_run_config(compose_train(overrides + [f"{k}={v}" for k, v in trial.params.items()] + [f"seed={seed}"]),
                                group=f"{group}-rerun")
            data_id = dataset_identity_or_none(cfg.dataset)
            kept = finished_run(run_dir, cfg, data_id, instead)
            if kept is None and cfg.trainer.resume:  # another config's or data's checkpoint: refused now, not after others trained
                checkpoint.latest(run_dir, cfg, data_id)
            seeds_of_trial.append((seed, run_dir, cfg, None if kept is None else _as_record(kept)))
        planned.append((trial, seeds_of_trial))
    done = _run_each([(run_dir, cfg, f"{group}-{trial.number}-s{seed}")
                      for trial, seeds_of_trial in planned for seed, run_dir, cfg, kept in seeds_of_trial if kept is None])
    table = []
    for trial, seeds_of_trial in planned:
        results = [kept if kept is not None else done[run_dir] for seed, run_dir, cfg, kept in seeds_of_trial]
        entry: dict[str, Any] = {"trial": trial.number, **trial.params, "seeds": seeds}
        for key in ("val_acc", "test_acc", "test_balanced_acc", "train_flops", "train_time_s"):
            got = [(seed, float(r.get(key))) for (seed, *_), r in zip(seeds_of_trial, results) if r.get(key) is not None]
            if got:
                entry[key], entry[f"{key}_ci95"] = mean_ci([v for _, v in got])
                entry[f"{key}_values"] = [v for _, v in got]
            if len(got) < len(seeds_of_trial):  # a null (a NaN measured) is not a number to average: said, not dropped unsaid
                measured = {seed for seed, _ in got}
                entry[f"{key}_missing_seeds"] = [seed for seed, *_ in seeds_of_trial if seed not in measured]
        table.append(entry)
    return table


def _run_each(jobs: list[tuple[Path, RunConfig, str]]) -> dict[Path, RunRecord]:
    """Each re-run trained, or read back where it finished. Every worker of a study (the same command
    in each) re-runs the same Pareto set when the search ends: a folder another worker is training
    now is left to it and read back once it is free, as a trial running elsewhere is waited for.
    Refused (FolderInUse), it ended the second worker with exit 2 while the first trained it."""
    done: dict[Path, RunRecord] = {}
    waiting, said = list(jobs), False
    while waiting:
        busy = []
        for run_dir, cfg, name in waiting:
            try:
                done[run_dir] = _as_record(run(cfg, run_dir, run_name=name))
            except FolderInUse:
                busy.append((run_dir, cfg, name))
        if busy and len(busy) == len(waiting):  # nothing else to do here meanwhile
            if not said:
                log.info("%d re-run(s) being trained by another process (%s): waiting for them", len(busy),
                         ", ".join(str(d) for d, _, _ in busy))
                said = True
            time.sleep(WAIT_S)
        waiting = busy
    return done


def format_rerun(table: list[dict[str, Any]]) -> str:
    lines = []
    for e in table:
        params = ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                           for k, v in e.items() if "." in k)
        flops = f"{e['train_flops']:.4g}" if "train_flops" in e else "-"
        lines.append(f"trial {e['trial']:>3}  test acc {_measure(e, 'test_acc')}  val acc {_measure(e, 'val_acc')}  "
                     f"train FLOPs {flops}  ({params})")
    return "\n".join(lines)


def _measure(entry: dict[str, Any], key: str) -> str:
    """An accuracy's mean and CI over the seeds that have one, and the seeds that recorded none."""
    text = format_ci(entry[key], entry[f"{key}_ci95"], bounds=SHARE) if key in entry else "-"
    if missing := entry.get(f"{key}_missing_seeds"):
        text += f" (none on seed{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))})"
    return text
