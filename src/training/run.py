"""One fine-tuning run, end to end, from a typed config to the files in its run directory.

`run()` checks the config (`preflight`) and the folder (a finished run of this config is kept, a
checkpoint resumed: `claim_run_dir`, `checkpoint.latest`), records what the run is
(`record.config_record`), wires it (`setup`), starts the tracker, runs the epoch loop (`fit`; the loops
themselves are in `engine`, checkpoints in `checkpoint`) and writes the record at the end, however the run ends. What rides along
the loop is typed (`meters`); the record's fields are named in `record` only. It knows nothing of
Hydra.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from src.config import FolderRefused, RunConfig
from src.data.identity import dataset_identity_or_none, short_id
from src.models import weights_identity
from src.record import lock
from src.record.integrity import config_edited
from src.record.io import (CONFIG_FILE, METRICS_FILE, RESULT_FILE, DiskFull, finished_status, read_json_object,
                          write_text)
from src.reporting.tracking import Tracker, log_confusions, make_tracker, run_summary, run_tags
from src.reporting.wandb_folders import set_aside_earlier_attempts, wandb_runs
from src.strategies import Schedule
from src.training import checkpoint, record
from src.training.estimate import ESTIMATE_FILE, estimate
from src.training.fit import DivergedError, EpochCallback, fit, measure_drift
from src.training.meters import BestModel, Meters, Progress
from src.training.preflight import check_threads, preflight
from src.training.setup import seed_everything, setup

log = logging.getLogger(__name__)

# Also importable from here, where callers have always found them.
__all__ = ["BestModel", "DivergedError", "EpochCallback", "RunDirTaken", "claim_run_dir", "finished_run", "preflight", "run",
           "seed_everything"]


class RunDirTaken(FolderRefused):
    """The run folder holds a finished run of another config, or on other data: it is kept, and this
    run is refused."""


def finished_run(run_dir: Path, cfg: RunConfig, data_id: str | None,
                 instead: str = "choose another folder (hydra.run.dir=..., a multirun's hydra.sweep.dir=...) or move "
                                "that one away") -> dict[str, Any] | None:
    """The record of the finished run (completed or pruned) of this config on the data `data_id` that
    the folder holds, to be kept and reported, never trained again; None when it holds no finished
    run. A finished run of another config, or on other data, raises RunDirTaken, naming what differs
    and then `instead` (what to do). Reads only: nothing is written."""
    previous = run_dir / RESULT_FILE
    if not previous.is_file():
        if previous.is_symlink() or previous.exists():
            # A folder or a link to nothing where the record goes (rot, a hand's mkdir): it would train
            # over a kept model_best.pt and then fail to write its own record, the time spent for nothing.
            what = "a folder" if previous.is_dir() else "a link that leads to no file"
            raise RunDirTaken(f"{run_dir} holds a {RESULT_FILE} that is {what}, not a file: no run can be "
                              f"recorded there, and the folder is kept as it is: {instead}, or move that {RESULT_FILE} away")
        return None
    try:
        read_json_object(previous)
    except ValueError as err:  # written whole or not at all (write-then-rename): damaged since, by hand or disk
        if (run_dir / checkpoint.BEST_FILE).is_file():  # beside a kept model: perhaps a finished run's
            raise RunDirTaken(f"{run_dir} holds a {RESULT_FILE} that cannot be read ({err}) beside its "
                              f"{checkpoint.BEST_FILE}: it may be a finished run's, so it is kept: {instead}, or "
                              f"delete that {RESULT_FILE} to train here again") from None
        return None
    if not (status := finished_status(previous)):
        return None
    try:
        saved_config = yaml.safe_load((run_dir / CONFIG_FILE).read_text())
        if not isinstance(saved_config, dict):  # empty: read as None, it listed every setting as changed
            raise TypeError(CONFIG_FILE)
        changes = checkpoint.config_changes(saved_config, cfg)
    except (OSError, ValueError, yaml.YAMLError, AttributeError, TypeError):  # ValueError: not UTF-8 (a rotted byte)
        raise RunDirTaken(f"{run_dir} already holds a {status} run whose {CONFIG_FILE} is missing or unreadable, so "
                          f"it cannot be told whether it is this config's; it is kept: {instead}") from None
    kept = read_json_object(previous)
    if edited := config_edited(run_dir / CONFIG_FILE, kept.get("config_sha256")):
        # compared as it is now, it would have been kept as whatever config it was edited into
        raise RunDirTaken(f"{run_dir} already holds a {status} run whose {CONFIG_FILE} was {edited}; it is kept: {instead}")
    if changes:
        shown = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")
        raise RunDirTaken(f"{run_dir} already holds a {status} run of another config ({shown}); it is kept: {instead}")
    saved = kept.get("dataset_id")
    if saved and data_id and saved != data_id:
        # its numbers are not this data's: reported as this run's, they would mislead
        raise RunDirTaken(f"{run_dir} already holds a {status} run of this config on other data: "
                          f"{cfg.dataset.root or cfg.dataset.kind} changed since (dataset_id {short_id(saved)} "
                          f"-> {short_id(data_id)}); it is kept: restore the data to report it, or {instead}")
    was, now = kept.get("weights_id"), weights_identity(cfg.model)
    if was and was != now:  # as other data: its numbers are another starting point's
        raise RunDirTaken(f"{run_dir} already holds a {status} run of this config from other weights: "
                          f"model.checkpoint_path={cfg.model.checkpoint_path!r} changed since (weights_id {short_id(was)} "
                          f"-> {short_id(now)}); it is kept: restore the file to report it, or {instead}")
    if not (saved and data_id):  # a record from before dataset_id, or data that cannot be listed
        log.warning("%s: the data of its %s run could not be checked against the data now (dataset_id %s -> "
                    "%s)", run_dir, status, short_id(saved), short_id(data_id))
    log.info("%s already holds a %s run of this config: kept, not trained again (val_acc %s, test_acc %s)",
             run_dir, kept.get("status"), kept.get("val_acc"), kept.get("test_acc"))
    return kept


def claim_run_dir(run_dir: Path, cfg: RunConfig, data_id: str | None) -> dict[str, Any] | None:
    """What the folder holds, before anything is written into it: a finished run (completed or
    pruned) of this config on the data `data_id` is returned, to be kept and reported, never trained
    again; one of another config or on other data is refused (RunDirTaken); otherwise None, once the
    folder is known to be writable (FolderRefused if not). A failed or killed run's folder is reused:
    its checkpoint, if any, resumes."""
    if (kept := finished_run(run_dir, cfg, data_id)) is not None:
        return kept
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as err:
        raise FolderRefused(f"cannot write the run folder {run_dir}: {err.strerror or err}") from None
    return None


def run(
    cfg: RunConfig, run_dir: Path, run_name: str | None = None, on_epoch: EpochCallback | None = None,
    on_claimed: Callable[[Path], None] | None = None,
) -> dict[str, Any]:
    """Train one configuration; writes config.yaml, param_groups.json, metrics.jsonl, result.json,
    model_best.pt, and a checkpoint per epoch (removed at the end unless trainer.keep_checkpoints).

    A folder that holds a finished run of this config on this data: its record is returned, nothing
    is trained or written. One that holds a checkpoint of this config and data (a run killed or
    failed after an epoch): the run continues from it (trainer.resume). A config that cannot run, a
    folder that holds another config's finished run or one on other data, or a checkpoint that is
    damaged, another config's or of other data (or its epochs gone from metrics.jsonl), raises
    ConfigError before anything is written (FolderRefused: the folder is left byte for byte). A
    run that `on_epoch` stops returns its record with status "pruned". A run stopped by an error at
    any point (seeding, data, weights, device, training) or by Ctrl-C still writes result.json, with
    its status (failed, interrupted) and what was measured up to then, and re-raises.
    `on_claimed(run_dir)` runs once the folder is this run's, past every refusal (the entrypoint
    writes Hydra's `.hydra/` record there: written earlier, a refused command's said another seed).
    """
    preflight(cfg)
    check_threads(cfg.trainer.num_threads)  # here, not in the gate: a cluster job's CPUs are not the driver's
    if cfg.trainer.dry_run:
        return dry_run(cfg, run_dir)
    with lock.held(run_dir):  # one process at a time in a folder: checks, training and record alike
        return _run(cfg, run_dir, run_name, on_epoch, on_claimed)


def _run(cfg: RunConfig, run_dir: Path, run_name: str | None, on_epoch: EpochCallback | None,
         on_claimed: Callable[[Path], None] | None = None) -> dict[str, Any]:
    """`run` past its config checks, in a folder this process holds."""
    data_id = dataset_identity_or_none(cfg.dataset)  # computed once: the folder's checks and setup share it
    if (kept := claim_run_dir(run_dir, cfg, data_id)) is not None:
        return kept
    resume = checkpoint.latest(run_dir, cfg, data_id) if cfg.trainer.resume else None
    if on_claimed is not None:
        on_claimed(run_dir)
    checkpoint.remove_leftovers(run_dir)  # the folder passed its checks: a killed write's temp files go now
    # A resumed run's total_time_s includes what its earlier attempts spent up to the checkpoint, as
    # its train_time_s does (the meters' clock travels in the checkpoint): counted from this process
    # alone, a run killed late and resumed recorded less total time than training time.
    started = time.perf_counter() - checkpoint.elapsed_s(resume)
    rec = record.config_record(cfg, run_dir)  # a misspelled field fails here, before anything is written
    progress = Progress()
    tracker: Tracker | None = None
    exit_code = 1
    try:
        write_text(run_dir / CONFIG_FILE, record.config_text(cfg))
        if resume is None:
            (run_dir / METRICS_FILE).unlink(missing_ok=True)  # a failed earlier attempt's epochs
        s = setup(cfg, run_dir, data_id)
        rec = record.with_data(rec, s)
        est = estimate(cfg, s, checkpoint.first_epoch(resume))
        print(est.line(), flush=True)
        tracker = _start_tracker(cfg, run_dir, run_name or run_dir.name, s.schedule, run_tags(rec))
        meters = Meters.start(cfg.trainer.count_flops, s.num_classes, cfg.trainer.select, progress)
        meters.planned_s = dict(enumerate(est.epoch_s, start=est.first_epoch))
        measures = fit(cfg, s, run_dir, tracker, meters, on_epoch, resume)
        if measures is None:
            ended = record.pruned(rec, progress, started)
        else:
            drift = measure_drift(cfg, s) if s.reference is not None else None
            ended = record.completed(rec, measures, drift, started)
        result = record.write(run_dir, ended)
        checkpoint.prune(run_dir, cfg.trainer.keep_checkpoints)  # finished: resume needs none
        tracker.summary(run_summary(result))
        log_confusions(tracker, result)
        exit_code = 0
        return result
    except BaseException as err:
        try:  # from what the run is, not from a result it may have half assembled
            stopped = record.write(run_dir, record.stopped(rec, err, progress))
        except DiskFull as lost:  # nothing could be recorded, and that is what to say (a Ctrl-C stays one)
            if isinstance(err, KeyboardInterrupt):
                raise err from None
            raise lost from err
        if tracker is not None:  # W&B's summary says what result.json says: failed or interrupted, and why
            tracker.summary(run_summary(stopped))
        raise
    finally:
        if tracker is not None:
            tracker.finish(exit_code=exit_code)


def dry_run(cfg: RunConfig, run_dir: Path) -> dict[str, Any]:
    """trainer.dry_run: the run's estimate, printed and kept in estimate.json (a dry multirun's end sums
    them); nothing trained, no result.json. Returns the estimate with status "dry_run". The folder is
    read as the run would read it (nothing written before): a finished run of this config is kept,
    nothing to price (status "dry_run", `kept`: its status, and so in estimate.json); another config's is
    refused (RunDirTaken); a checkpoint leaves the epochs after it to price. Priced whole, a dry run
    in a killed run's folder said 3 epochs where the command trains 1, and one in another config's
    folder priced a run that is refused."""
    real = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, dry_run=False))  # what the folder holds
    data_id = dataset_identity_or_none(cfg.dataset)
    if (kept := finished_run(run_dir, real, data_id)) is not None:
        print(f"estimate: nothing to train: {run_dir} holds a {kept.get('status')} run of this config, which the "
              "run keeps", flush=True)
        write_text(run_dir / ESTIMATE_FILE, json.dumps({"kept": kept.get("status")}))  # a dry multirun's total counts it
        return {"status": "dry_run", "kept": kept.get("status")}
    resume = checkpoint.latest(run_dir, real, data_id) if cfg.trainer.resume else None
    with tempfile.TemporaryDirectory() as scratch:  # setup writes param_groups.json: not into the run's folder
        s = setup(cfg, Path(scratch), data_id)
    est = estimate(cfg, s, checkpoint.first_epoch(resume))
    print(est.line(), flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / ESTIMATE_FILE, json.dumps(est.to_dict(), indent=1))
    return {"status": "dry_run"} | est.to_dict()


def _start_tracker(cfg: RunConfig, run_dir: Path, name: str, schedule: Schedule, tags: list[str]) -> Tracker:
    earlier = wandb_runs(run_dir)  # a killed or failed attempt's, in this folder
    tracker = make_tracker(cfg.logger, run_dir, name, cfg.to_dict() | {"param_groups": schedule.to_dict()},
                           cfg.strategy.name, tags=tags, per_epoch=True)
    set_aside_earlier_attempts(run_dir, earlier)
    # The schedule as a table too: W&B shows it beside the run's LR curves.
    tracker.table("param_groups", [
        dict(g) | {"epochs": ",".join(map(str, g["epochs"]))} for g in schedule.to_dict()["groups"]
    ])
    return tracker
