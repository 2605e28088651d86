"""The wiring of one run: seed, device, data, model, schedule, optimizer and batches, built from the
typed config into a `Setup` that the epoch loop (`src.training.fit`) works on."""

from __future__ import annotations

import copy
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from src.config import ConfigError, DataConfig, RunConfig
from src.data.identity import dataset_identity
from src.data.paths import one_line
from src.data.batches import Batches, passes_for
from src.data.ood import OodSet, load_ood
from src.models import normalization, weights_source
from src.record.io import GROUPS_FILE, write_json
from src.strategies import LayerGroup, Schedule, Strategy, layer_groups, plan_schedule, strategy_for
from src.training import reuse
from src.training.optim import build_optimizer, build_scheduler, param_groups

_PROCESS_THREADS = torch.get_num_threads()  # torch's own choice for this process, before any run sets it

if TYPE_CHECKING:
    from src.data.splits import DataBundle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool


@dataclass
class Setup:
    """Everything one training run works on, built by setup() and consumed by the epoch loop."""

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
    data: DataBundle  # the loaded data (drift probes its validation images; the record its sizes)
    passes: int  # passes over the training images per epoch (trainer.min_epoch_steps)
    dataset_id: str | None  # what the data is (src/data/identity.py); None when its files cannot be listed
    penalty: Callable[[], torch.Tensor] | None = None  # a strategy's regulariser (L2-SP), added to the loss
    reference: torch.nn.Module | None = None  # the pretrained model, for drift (None when off)
    batch_kw: dict[str, Any] = field(default_factory=dict)  # how Batches normalise and place images
    ood: list[OodSet] = field(default_factory=list)  # out-of-distribution test sets (dataset.ood)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def require_cuda(setting: str, instead: str = "auto or cpu") -> None:
    """The one check that a setting asking for CUDA (trainer.device, src.predict's --device) can have
    it: ConfigError, one line naming `setting`, where torch would raise deep inside a first copy."""
    if not torch.cuda.is_available():
        raise ConfigError(f"{setting} but no CUDA device is available (use {instead})")


DEVICE_TYPES = ("cpu", "cuda", "mps")


def usable_device(name: str) -> torch.device:
    """`name` (src.predict's --device) as a torch device this machine has; ConfigError, one line naming it,
    otherwise (torch says so only at the first copy, in a traceback): CUDA by trainer.device's own check."""
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    if dev is None or dev.type not in DEVICE_TYPES:
        raise ConfigError(f"--device {name!r} is not allowed (cpu, cuda, cuda:N or mps)")
    if dev.type == "cuda":
        require_cuda(f"--device {name}", "cpu")
    try:  # the device's index exists (cuda:3 on one GPU), its backend is built in (mps)
        torch.empty(0, device=dev)
    except Exception as err:
        raise ConfigError(f"--device {name}: not usable here ({one_line(err)})") from None
    return dev


def resolve_runtime(cfg: RunConfig) -> Runtime:
    t = cfg.trainer
    if t.device == "cuda":
        require_cuda("trainer.device='cuda'")
    on_gpu = t.device == "cuda" or (t.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if on_gpu else "cpu")
    amp = t.amp == "on" or (t.amp == "auto" and on_gpu)
    # "auto" is channels_last on CPU and channels-first on CUDA, both as measured (docs/cost-and-speed.md).
    # CPU, the pinned torch (2.14): oneDNN's kernels 1.25-1.38x faster per training step and 1.5-1.7x
    # per evaluation, Lite0 at 64-224 px, every unfreeze depth (benchmarks/layout.py); an older torch
    # measured it slower. CUDA (an H200, benchmarks/gpu.sh): Lite0 in channels_last took ~25 % longer
    # per epoch at 96 px, batch 16, bf16 or not, and its first epoch 6 s more; `make sweep` 3.6x the
    # time per TFLOP trained. Larger images and batches were not measured there: "on" is one setting
    # away for whoever measures it faster.
    channels_last = t.channels_last == "on" or (t.channels_last == "auto" and not on_gpu)
    # set either way: the setting lasts for the process, and a multirun's job that leaves it unset
    # ran (and was estimated and recorded) at the thread count the job before it had set
    torch.set_num_threads(t.num_threads or _PROCESS_THREADS)
    return Runtime(device, torch.bfloat16 if amp else None, channels_last)


def _build_model(cfg: RunConfig, num_classes: int) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """The model to train, and the pretrained reference for drift (None when drift is off).
    The pretrained model comes from this process's earlier run where there was one (src.training.reuse:
    the same weights and the same random state after it, so the new head draws what it always did)."""
    model = reuse.pretrained(cfg.model)
    if not cfg.trainer.drift_probe:
        model.reset_classifier(num_classes)  # src.models.build_model's second step
        return model, None
    # The pretrained model with its original head stays on the CPU as the reference for drift
    # (src/measurement/drift.py); the model trained is a copy with a new head.
    reference = model
    model = copy.deepcopy(reference)
    model.reset_classifier(num_classes)
    return model, reference


def setup(cfg: RunConfig, run_dir: Path, dataset_id: str | None = None) -> Setup:
    """Seed, data, model, schedule (written to param_groups.json), optimizer and batches. `dataset_id`:
    the data's identity where the caller has it already (None: computed here)."""
    seed_everything(cfg.seed)
    rt = resolve_runtime(cfg)
    data, dataset_id = reuse.dataset(cfg.dataset, progress=cfg.trainer.progress, identity=dataset_id)  # once per process
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
    if cfg.model.pretrained and weights_source(cfg.model) == "file":  # a kept model given to go on from: its head is not
        log.info("model.checkpoint_path=%r: the backbone comes from this file; the head is new (every strategy trains "
                 "a new head for the data's %d classes), whatever classifier the file holds", cfg.model.checkpoint_path,
                 data.num_classes)
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
    return Setup(
        model=model, groups=groups, strategy=strategy, schedule=schedule, optimizer=optimizer,
        scheduler=build_scheduler(optimizer, cfg.optim, schedule, len(train)), train=train,
        val=Batches(data.val, t.eval_batch_size, **batch_kw), test=Batches(data.test, t.eval_batch_size, **batch_kw),
        num_classes=data.num_classes, input_shape=(3, cfg.dataset.image_size, cfg.dataset.image_size), runtime=rt,
        data=data, passes=passes, dataset_id=dataset_id or _dataset_id(cfg.dataset), penalty=penalty, reference=reference,
        batch_kw=batch_kw, ood=ood,
    )


def _dataset_id(cfg: DataConfig) -> str | None:
    """The data's identity for result.json; None (the report then goes by the name) when its files
    cannot be listed or read again, which must not fail a run whose data did load."""
    try:
        return dataset_identity(cfg)
    except OSError as err:
        log.warning("no dataset_id recorded (%s: %s)", type(err).__name__, err)
        return None
