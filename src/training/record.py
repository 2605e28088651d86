"""A run's record, assembled in this one module from typed parts; no other module names its fields.

result.json is a `RunRecord` (src/record/schema.py), built in steps: the configuration as soon as
the config is known (`config_record`), the data's facts once it is loaded (`with_data`), both
before the first epoch, so that a misspelled field is a TypeError before any training; then the
schema's typed sections from the meters (`measured`, `fit_measures`, and drift's `DriftMeasures`)
and how the run ended (`completed`, `pruned`, `stopped`). Every section's field names are checked
against RunRecord when the schema loads. Each epoch is one row (`epoch_row`): an EpochRecord that is
both the metrics.jsonl line and what the tracker logs (`log_epoch`), as timm's `update_summary` feeds
its CSV and W&B from one dict.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
import traceback
from pathlib import Path
from typing import Any

import timm
import torch
import yaml

from src.config import RunConfig
from src.data.augment import augment_params
from src.measurement.memory import PeakMemory
from src.models import weights_identity, weights_source
from src.record.digest import signed
from src.record.ending import stop_status
from src.record.integrity import config_sha256
from src.record.io import METRICS_FILE, RESULT_FILE, append_jsonl, dumps, write_json
from src.record.schema import DriftMeasures, Environment, EpochRecord, FitMeasures, Measured, RunRecord
from src.reporting.tracking import Tracker
from src.strategies import strategy_for
from src.training.engine import EpochStats, EvalStats
from src.training.meters import FinalEval, Meters, Progress
from src.training.setup import Setup


def config_text(cfg: RunConfig) -> str:
    """The run's config.yaml, as it is written and as result.json's `config_sha256` digests it."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def config_record(cfg: RunConfig, run_dir: Path) -> RunRecord:
    """The fields known from the config alone: a run that fails before its data is loaded still
    records what it was."""
    return RunRecord(
        strategy=cfg.strategy.name,
        model=cfg.model.name,
        pretrained_weights=weights_source(cfg.model) if cfg.model.pretrained else "none (random init)",
        weights_id=weights_identity(cfg.model),
        config_sha256=config_sha256(config_text(cfg)),
        dataset=cfg.dataset.name or cfg.dataset.flag or cfg.dataset.tv_name or cfg.dataset.kind,
        seed=cfg.seed,
        epochs=cfg.trainer.epochs,
        image_size=cfg.dataset.image_size,
        train_per_class=cfg.dataset.train_per_class,
        augment=cfg.dataset.augment,
        augment_params=augment_params(cfg.dataset.augment, cfg.dataset.hflip),
        min_epoch_steps=cfg.trainer.min_epoch_steps,
        lr=cfg.optim.lr,
        # the strategy's own settings (src/strategies/<name>.py), and the shared BatchNorm choice
        strategy_params=strategy_for(cfg.strategy).record(),
        frozen_bn=cfg.strategy.frozen_bn,
        optimizer=cfg.optim.name,
        join_warmup_epochs=cfg.optim.join_warmup_epochs,
        run_dir=str(run_dir),
    )


def with_data(record: RunRecord, s: Setup) -> RunRecord:
    """The data's facts and the layer-group count, once setup has loaded them."""
    data = s.data
    return record.replace(
        dataset=data.name, train_samples=len(data.train), passes_per_epoch=s.passes, steps_per_epoch=len(s.train),
        skipped_files=len(data.skipped_files), val_samples=len(data.val), test_samples=len(data.test),
        num_classes=data.num_classes, num_groups=len(s.groups), device=str(s.runtime.device),
        data_load_s=data.load_s, data_cache=data.cache, dataset_id=s.dataset_id,
    )


def epoch_row(epoch: int, lrs: dict[str, float], trainable: int, train: EpochStats, val: EvalStats,
              meters: Meters) -> EpochRecord:
    """One epoch's row, with the meters' running totals after it."""
    return EpochRecord(
        epoch=epoch, train_loss=train.loss, train_acc=train.acc, val_loss=val.loss, val_acc=val.acc,
        val_balanced_acc=val.balanced_acc, trainable_params=trainable, epoch_train_s=train.seconds,
        epoch_val_s=val.seconds, elapsed_s=meters.clock.elapsed_s, train_s_cum=meters.clock.train_s,
        train_flops_cum=meters.flops.total, lrs=lrs,
    )


def log_epoch(row: EpochRecord, run_dir: Path, tracker: Tracker) -> None:
    """The row as a metrics.jsonl line, and the same values to the tracker at step `epoch`."""
    line = row.to_json()
    append_jsonl(run_dir / METRICS_FILE, line)
    log_epoch_again(line, tracker)


def log_epoch_again(line: dict[str, Any], tracker: Tracker) -> None:
    """A metrics.jsonl line to the tracker at step `epoch` (a resumed run's earlier epochs, as log_epoch sent them)."""
    tracker.log({k: v for k, v in line.items() if k != "schema_version"}, step=line["epoch"])


def measured(meters: Meters, epochs_trained: int) -> Measured:
    """What the run has measured after `epochs_trained` epochs."""
    return Measured(
        epochs_trained=epochs_trained, best_epoch=meters.best.epoch, val_acc=meters.best.acc,
        train_flops=meters.flops.train_flops, train_time_s=meters.clock.train_s,
        max_trainable_params_per_epoch=meters.max_trainable, **_flops_split(meters), **_cache_used(meters),
    )


def _flops_split(meters: Meters) -> dict[str, int | None]:
    enabled = meters.flops.enabled
    return {"train_flops_forward": meters.flops.forward if enabled else None,
            "train_flops_backward": meters.flops.backward if enabled else None}


def _cache_used(meters: Meters) -> dict[str, Any]:
    return {"feature_cache": meters.feature_cache_blocker is None, "feature_cache_blocker": meters.feature_cache_blocker,
            "feature_cache_cut": meters.feature_cache_cut}


def fit_measures(s: Setup, meters: Meters, final: FinalEval, mem: PeakMemory) -> FitMeasures:
    """A completed run's measures."""
    return FitMeasures(
        epochs_trained=s.schedule.epochs, best_epoch=meters.best.epoch, val_acc=final.val.acc,
        val_balanced_acc=final.val.balanced_acc, test_acc=final.test.acc, test_balanced_acc=final.test.balanced_acc,
        test_loss=final.test.loss, trainable_params=s.schedule.trainable_params,
        max_trainable_params_per_epoch=meters.max_trainable, total_params=sum(p.numel() for p in s.model.parameters()),
        train_flops=meters.flops.train_flops, **_flops_split(meters),
        inference_flops_per_image=final.inference_flops_per_image, train_time_s=meters.clock.train_s,
        images_per_s=meters.clock.images_per_s, peak_mem_mb=mem.peak_mb, peak_mem_start_mb=mem.start_mb,
        peak_mem_method=mem.method, **_cache_used(meters), ood=final.ood,
        per_class=per_class(s.data.classes, final.val, final.test),
    )


def per_class(classes: list[str], val: EvalStats, test: EvalStats) -> dict[str, Any]:
    """result.json's `per_class` block: the class names and, for val and test, the confusion matrix
    and what it gives per class (recall, which is the class's accuracy; precision; support)."""
    return {"classes": list(classes), "val": split_per_class(val.confusion), "test": split_per_class(test.confusion)}


def split_per_class(confusion: list[list[int]]) -> dict[str, Any]:
    """Per class from a confusion matrix (rows true, columns predicted); None where a ratio has no
    denominator (no images of the class; never predicted)."""
    support = [sum(row) for row in confusion]
    predicted = [sum(col) for col in zip(*confusion)] if confusion else []
    hits = [confusion[i][i] for i in range(len(confusion))]
    return {"confusion": confusion, "support": support,
            "recall": [h / n if n else None for h, n in zip(hits, support)],
            "precision": [h / n if n else None for h, n in zip(hits, predicted)]}


def ood_measures(stats: EvalStats, skipped_files: int, identity: str | None = None) -> dict[str, Any]:
    """One OOD set's entry in result.json's `ood` block; `id`: which images (src.data.identity.ood_identity);
    `per_class`: as val's and test's (`split_per_class`, the classes of result.json's `per_class`), since
    a shift rarely costs every class alike and one accuracy cannot say which class it cost."""
    return {"acc": stats.acc, "balanced_acc": stats.balanced_acc, "n": stats.samples, "skipped_files": skipped_files,
            **({"id": identity} if identity is not None else {}),
            **({"per_class": split_per_class(stats.confusion)} if stats.confusion else {})}


def environment() -> Environment:
    return Environment(
        torch_version=torch.__version__, timm_version=timm.__version__, python_version=platform.python_version(),
        cpu_threads=torch.get_num_threads(), hostname=platform.node(), pid=os.getpid(),
    )


def completed(record: RunRecord, fit: FitMeasures, drift: DriftMeasures | None, started: float) -> RunRecord:
    sections = (fit, drift) if drift is not None else (fit,)
    return record.replace(*sections, environment(), status="completed", total_time_s=time.perf_counter() - started)


def pruned(record: RunRecord, progress: Progress, started: float) -> RunRecord:
    """Pruned is an outcome, not an error: the cost so far is real and counts in a sweep's total."""
    assert progress.measured is not None  # on_epoch stops a run only after an epoch
    return record.replace(progress.measured, environment(), status="pruned", pruned_epoch=progress.epoch,
                          reason=progress.stopped, total_time_s=time.perf_counter() - started)


def stopped(record: RunRecord, err: BaseException, progress: Progress) -> RunRecord:
    """A run an error or Ctrl-C stopped: what it measured up to then is kept nested, so that no
    reader mistakes it for a result. Call it inside the `except` block (the traceback)."""
    return record.replace(
        environment(), status=stop_status(err),
        error=f"{type(err).__name__}: {err}", failed_epoch=progress.epoch,
        measured_before_stop=dataclasses.asdict(progress.measured) if progress.measured else {},
        traceback=traceback.format_exc(limit=5),
    )


def write(run_dir: Path, record: RunRecord) -> dict[str, Any]:
    """result.json: what is written is what every reader reads back. Returns it as written."""
    data = json.loads(dumps(record.to_json()))  # as every reader gets it back: non-finite numbers null
    write_json(run_dir / RESULT_FILE, signed(data))
    return data
