"""Typed run configuration: every key, its type, default and allowed values, in one place.

Everything below the entrypoints receives the frozen dataclasses of `sections.py`. They are also the
structured configs OmegaConf and Hydra check a config against: an unknown key, a wrong type or a
value outside an `enum.Enum` is refused by OmegaConf itself while Hydra composes (src/gate.py
registers them) and in `RunConfig.from_dict`. `checks.validate()` holds the value and cross-field
checks beyond types. Defaults live in the dataclasses only: the YAML under conf/ sets what an option
changes (tests/test_config.py holds it to that). Problems are one line naming the key, the value and
what is allowed. Nothing below the entrypoints receives a DictConfig.
"""

from src.config.checks import check_path, config_error, from_cwd, hydra_sweep_error, name_group_choice, quoting_hint, structured, validate
from src.config.sections import (
    OPTIMIZERS, OUR_SWEEPER, AdamWConfig, Augment, BadImages, Cache, Choice, ConfigError, DataConfig, Device,
    EntryConfig, FolderRefused, FrozenBN, Granularity, LoggerConfig, LoggerKind, LoggerMode, ModelConfig, OptimConfig,
    OptimizerConfig, PathsConfig, RunConfig, Select, SGDConfig, StrategyConfig, Switch, TrainerConfig, Weights,
    augment_name, default_strategy, optimizer_config_class, strategy_config_class,
)

__all__ = [
    "OPTIMIZERS", "OUR_SWEEPER", "AdamWConfig", "Augment", "BadImages", "Cache", "Choice", "ConfigError",
    "DataConfig", "Device", "EntryConfig", "FolderRefused", "FrozenBN", "Granularity", "LoggerConfig", "LoggerKind", "LoggerMode",
    "ModelConfig", "OptimConfig", "OptimizerConfig", "PathsConfig", "RunConfig", "SGDConfig", "Select",
    "StrategyConfig", "Switch", "TrainerConfig", "Weights", "augment_name", "check_path", "config_error", "hydra_sweep_error", "default_strategy", "from_cwd", "name_group_choice",
    "optimizer_config_class", "quoting_hint", "strategy_config_class", "structured", "validate",
]
