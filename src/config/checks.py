"""OmegaConf's nodes of the config dataclasses, its errors as one line, and `validate()`: the value and
cross-field checks beyond what the types say."""

from __future__ import annotations

import copy
import dataclasses
import enum
import functools
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from src.config.sections import Augment, ConfigError, DataConfig, OptimizerConfig, RunConfig, StrategyConfig

# --- OmegaConf's nodes of these dataclasses, and its errors as one line
# Where a config group picks the class (the strategy by name, the optimizer by `_target_`), the node
# Hydra composes into holds the base class; each option's own schema (strategy/base_<name>,
# optim/optimizer/base_<name>, registered by src/gate.py) extends it with that class's keys.
_CHOSEN = {"strategy": StrategyConfig, "optim.optimizer": OptimizerConfig}


def structured(cls: type) -> DictConfig:
    """The OmegaConf node of config dataclass `cls` (its keys, types, defaults and allowed values),
    writable, as Hydra and from_dict merge a config into it: OmegaConf makes a frozen dataclass's
    node read-only, and the dataclasses stay frozen for everything below. A copy of one built once."""
    return copy.deepcopy(_structured(cls))


@functools.cache
def _structured(cls: type) -> DictConfig:
    node = _writable(OmegaConf.structured(cls))
    for key, base in _CHOSEN.items():
        if OmegaConf.select(node, key) is not None:
            OmegaConf.update(node, key, structured(base), merge=False)
    return node


def _writable(node: Any) -> Any:
    OmegaConf.set_readonly(node, None)
    if OmegaConf.is_dict(node):
        for key in node:
            if OmegaConf.is_config(node[key]):
                _writable(node[key])
    return node


def config_error(err: OmegaConfBaseException) -> ConfigError:
    """OmegaConf's multi-line error (the cause of Hydra's at compose time) as one line naming the key:
    an unknown key with the keys allowed there, a wrong type or value with what is expected."""
    key, owner = err.full_key, err.object_type
    unknown = isinstance(err, (ConfigKeyError, ConfigAttributeError))
    if unknown and key and dataclasses.is_dataclass(owner):
        where = key.rpartition(".")[0] or "config"
        allowed = ", ".join(sorted(f.name for f in dataclasses.fields(owner)))
        return ConfigError(f"unknown key '{key}' (allowed in {where}: {allowed})")
    hints = typing.get_type_hints(owner) if dataclasses.is_dataclass(owner) else {}
    if isinstance(err, ValidationError) and key and err.key in hints:
        value = OmegaConf.to_container(err.value) if OmegaConf.is_config(err.value) else err.value
        tp = hints[err.key]
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return ConfigError(f"{key}={value!r} is not allowed (expected {' | '.join(repr(m.value) for m in tp)})")
        if get_origin(tp) in (list, tuple) and not isinstance(value, (list, tuple)):
            # `dataset.ood=/data/art`: Hydra's list syntax is not what a user guesses from "a list"
            return ConfigError(f"{key}={value!r}: expected {_expected(tp)} ([a,b] on the command line, e.g. "
                               f"{key}=[{value}])")
        return ConfigError(f"{key}={value!r}: expected {_expected(tp)}")
    if unknown and key and owner is dict:  # a plain mapping (a run's config.yaml given with --config-path)
        return ConfigError(f"unknown key '{key}' ({key.rpartition('.')[0] or 'the config'} has no such key)")
    if unknown and key:
        return ConfigError(f"unknown key '{key}' ({key.rpartition('.')[0]} has no sub-keys)")
    message = str(err.msg).strip().splitlines()[0] if str(err.msg).strip() else type(err).__name__
    return ConfigError(f"{key}: {message}" if key else message)


def _expected(tp: Any) -> str:
    """How an error names a field's type: 'an integer', 'a number or null', ..."""
    if get_origin(tp) in (Union, types.UnionType):
        return " or ".join(_expected(a) for a in get_args(tp))
    if get_origin(tp) in (list, tuple):
        return "a list"
    if dataclasses.is_dataclass(tp):
        return "a mapping of keys"
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}
    return words.get(tp, getattr(tp, "__name__", str(tp)))


def run_node(cls: type, strategy: type, optimizer: type) -> DictConfig:
    """The node a run's config merges into: `cls`'s, with the run's own strategy and optimizer classes
    (a copy of one built once: OmegaConf builds a node from a dataclass several times slower)."""
    return copy.deepcopy(_run_node(cls, strategy, optimizer))


@functools.cache
def _run_node(cls: type, strategy: type, optimizer: type) -> DictConfig:
    node = structured(cls)
    node.strategy = structured(strategy)
    node.optim.optimizer = structured(optimizer)
    return node


def _check_types(cfg: RunConfig) -> None:
    """The field types and values of a config built in code (from_dict's come checked), read by
    OmegaConf as it reads YAML, so an error names the key the same way."""
    try:
        OmegaConf.merge(run_node(type(cfg), type(cfg.strategy), type(cfg.optim.optimizer)), cfg.to_dict())
    except OmegaConfBaseException as err:
        raise config_error(err) from None


def _check_finite(obj: Any, prefix: str = "") -> None:
    """Every number finite (OmegaConf takes nan and inf for a float)."""
    for f in dataclasses.fields(obj):
        key, value = prefix + f.name, getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _check_finite(value, key + ".")
        elif isinstance(value, (tuple, list)) and any(isinstance(v, float) and not math.isfinite(v) for v in value):
            raise ConfigError(f"{key}={list(value)!r}: expected finite numbers")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}={value!r}: expected a finite number")


def _check_str_items(obj: Any, prefix: str = "") -> None:
    """Every item of a list of strings (`tuple[str, ...]`) a string: OmegaConf lets a nested list, a
    mapping or null in (`logger.tags=[a,[b]]` failed inside W&B's init after the run folder was made:
    "TypeError: unhashable type: 'list'")."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        key, value = prefix + f.name, getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _check_str_items(value, key + ".")
        elif isinstance(value, (tuple, list)) and get_args(hints[f.name])[:1] == (str,):
            for i, item in enumerate(value):
                if not isinstance(item, str):
                    raise ConfigError(f"{key}[{i}]={item!r}: expected a string (each item of {key})")


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
    _check_types(cfg)
    check_values(cfg)


def check_values(cfg: RunConfig) -> None:
    """validate() for a config whose types OmegaConf has checked already (RunConfig.from_dict's)."""
    _check_finite(cfg)
    _check_dataset_kind(cfg.dataset.kind)
    check_path("model.checkpoint_path", cfg.model.checkpoint_path)
    # '' read as "no file": `model.checkpoint_path="$UNSET"` trained from the bundled (or hub) weights,
    # exit 0, a result that looked like the user's own checkpoint's.
    if cfg.model.checkpoint_path is not None and not cfg.model.checkpoint_path.strip():
        raise ConfigError(f"model.checkpoint_path={cfg.model.checkpoint_path!r} is an empty path (an unset variable?): "
                          "give the weights file, or null for none")
    _check_str_items(cfg)
    cfg.logger.check()
    cfg.optim.optimizer.check()
    _positive("optim.lr", cfg.optim.lr)
    cfg.strategy.check()
    _positive("trainer.epochs", cfg.trainer.epochs)
    if cfg.trainer.epochs > MAX_EPOCHS:
        raise ConfigError(f"trainer.epochs={cfg.trainer.epochs!r} must be <= {MAX_EPOCHS}")
    if cfg.trainer.batch_size < 2:  # BatchNorm cannot train on one sample
        raise ConfigError(f"trainer.batch_size={cfg.trainer.batch_size!r} must be >= 2")
    _positive("trainer.eval_batch_size", cfg.trainer.eval_batch_size)
    _positive("trainer.feature_cache_max_mb", cfg.trainer.feature_cache_max_mb)
    _positive("trainer.num_threads", cfg.trainer.num_threads, allow_none=True)
    # torch.set_num_threads takes a C int (2**31 was "ValueError: Overflow when unpacking long", a
    # traceback); far below that, each thread is a real one: the largest machines have well under
    # MAX_THREADS hardware threads (two 192-core CPUs with SMT: 768).
    if cfg.trainer.num_threads is not None and cfg.trainer.num_threads > MAX_THREADS:
        raise ConfigError(f"trainer.num_threads={cfg.trainer.num_threads!r} must be <= {MAX_THREADS} "
                          "(or null: torch's default, the CPU cores)")
    if cfg.trainer.min_epoch_steps < 0:
        raise ConfigError(f"trainer.min_epoch_steps={cfg.trainer.min_epoch_steps!r} must be >= 0 (0 = one pass per epoch)")
    if cfg.trainer.drift_probe < 0 or cfg.trainer.drift_probe == 1:  # CKA compares >= 2 images
        raise ConfigError(f"trainer.drift_probe={cfg.trainer.drift_probe!r} must be 0 (off) or >= 2")
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
    _check_seed("seed", cfg.seed)
    if not 0 <= cfg.optim.min_lr_ratio <= 1:
        raise ConfigError(f"optim.min_lr_ratio={cfg.optim.min_lr_ratio!r} must be in [0, 1]")
    if not 0 <= cfg.model.drop_rate < 1:
        raise ConfigError(f"model.drop_rate={cfg.model.drop_rate!r} must be in [0, 1)")
    _check_dataset(cfg.dataset)
    if cfg.model.weights == "file" and cfg.model.pretrained and not cfg.model.checkpoint_path:
        raise ConfigError("model.checkpoint_path is required when model.weights='file'")


# The schedule lists, for each layer group, the epochs it trains in (param_groups.json holds them): far
# past any fine-tuning (or ImageNet's 300-epoch trainings), and trainer.epochs=99999999999 was a
# MemoryError traceback while the schedule was planned.
MAX_EPOCHS = 10_000
SEED_MAX = 2**32 - 1  # numpy's seed range (and sklearn's random_state, which hands it to numpy), 0..2**32-1
MAX_THREADS = 4096
# Larger than any image a model is trained at: timm's largest pretrained input is 1024 px (SAM's ViTs,
# Sapiens2), and 4096 px is already 50 MB a decoded image. Far above it, one image outgrows memory
# (image_size=100000 is 30 GB an image: the OOM killer took a decoding worker, with no message).
MAX_IMAGE_SIZE = 4096


def _check_seed(key: str, value: int) -> None:
    """A seed that numpy, sklearn and torch all take: every seed reaches numpy in some form (a
    split_seed=-1 failed inside sklearn's splitter, after the run folder was made)."""
    if isinstance(value, bool) or not 0 <= value <= SEED_MAX:
        raise ConfigError(f"{key}={value!r} must be in 0..{SEED_MAX}")


def check_path(key: str, value: object, required: bool = False) -> None:
    """A path setting is used as written, and nothing expands `~` (the shell does not inside quotes,
    Hydra and Python leave it): `paths.output_dir="~/runs"` made a folder named '~' in the current one,
    and `root: ~/photos` in a preset was 'no such folder'. Refused, naming what to write instead.
    `required`: an empty value is refused too."""
    if required and not str(value).strip():
        raise ConfigError(f"{key}={value!r}: expected a folder ('.' for the current one)")
    if isinstance(value, str) and value.startswith("~"):
        home = f"$HOME{value[1:]}" if value[1:2] in ("", "/") else "the full path"
        raise ConfigError(f"{key}={value!r}: '~' is not expanded here (it would be taken as a folder named '~' in the current one); write {home}")


def from_cwd(cfg: RunConfig, cwd: Path) -> RunConfig:
    """`cfg` with its relative file and folder settings (model.checkpoint_path, dataset.root, dataset.cache_dir,
    dataset.ood) made absolute against `cwd`, the folder the command ran in: under `hydra.job.chdir=true` a
    job runs in its own folder, where `dataset.root=pm.npz`, there when the checks passed, was 'no such .npz
    file' (after the run folder was made). Hydra's own way is `hydra.utils.to_absolute_path`."""
    def whole(value: str | None) -> str | None:
        return value if value is None or not value.strip() or Path(value).is_absolute() else str(cwd / value)

    data = dataclasses.replace(cfg.dataset, root=whole(cfg.dataset.root), cache_dir=whole(cfg.dataset.cache_dir),
                               ood=tuple(whole(p) or p for p in cfg.dataset.ood))
    model = dataclasses.replace(cfg.model, checkpoint_path=whole(cfg.model.checkpoint_path))
    return dataclasses.replace(cfg, dataset=data, model=model)


def name_group_choice(line: str, overrides: list[str]) -> str:
    """Hydra resolves an interpolation in a config group's choice (`model=${oc.env:MODEL}`) as the value of a
    key `_dummy_`, which OmegaConf's error then named: the line names the override instead."""
    given = next((o for o in overrides if "${" in o.partition("=")[2] and "." not in o.partition("=")[0]), None)
    return f"{given}: {line.removeprefix('_dummy_: ')}" if given and line.startswith("_dummy_: ") else line


def _list_quoting_hint(override: object) -> str:
    """For `hydra.sweeper.rerun_overrides=[trainer.epochs=3]`: a list of overrides whose `=` Hydra's
    grammar cannot read unquoted; the hint spells the command line that works."""
    key, _, value = str(override).partition("=")
    value = value.strip()
    if key.lstrip("+~") != "hydra.sweeper.rerun_overrides" or not value.startswith("[") or "=" not in value:
        return ""
    items = [i.strip().strip("'\"") for i in value.removeprefix("[").removesuffix("]").split(",") if i.strip()]
    quoted = ",".join(f'"{i}"' for i in items)
    return f"; quote each override, and the whole argument for the shell: '{key}=[{quoted}]'"


def _groups_hint(override: object) -> str:
    """For `range(0,groups)` on the command line, where Hydra's grammar evaluates range() and takes
    numbers only (`groups` is read in a preset's hydra.sweeper.params, text Hydra does not evaluate)."""
    if not re.search(r"\b(range|interval)\s*\(.*\bgroups\b", str(override).partition("=")[2]):
        return ""
    return ("; `groups` (the model's backbone group count) is read only in a preset's hydra.sweeper.params "
            "(sweeps/default.yaml): on the command line give the number, e.g. range(0,8) for EfficientNet-Lite0, "
            "whose run prints its groups")


def quoting_hint(override: object, message: str) -> str:
    """For an override Hydra's lexer could not read (`dataset.root=/data/café`, `~/x`, `a#b`, `a&b`:
    unquoted, its grammar takes ASCII letters, digits and a few signs only), the quoted spelling that
    it reads; the bare "LexerNoViableAltException" said neither what nor how. No hint for a value with
    quotes, a list, a sweep's `a,b` or a function: quoting it whole would change what it means."""
    if hint := _list_quoting_hint(override) or _groups_hint(override):
        return hint
    key, sep, value = str(override).partition("=")
    if "LexerNoViableAlt" not in message or not sep or any(q in value for q in "'\"[](),"):
        return ""
    if value.startswith("~"):  # quoted, it would be refused next: nothing expands `~` (check_path)
        return f"; '~' is not expanded here: write {'$HOME' + value[1:] if value[1:2] in ('', '/') else 'the full path'}"
    return f"; Hydra's grammar reads this value only quoted (and the shell needs its own quotes around that): '{key}=\"{value}\"'"


def hydra_sweep_error(override: str) -> ConfigError:
    """A sweep over a `hydra.*` key (`hydra.sweeper.params.optim.lr=interval(0.001,0.1)`), which Hydra
    refuses: on the command line a searched key is given as itself (a preset's `hydra.sweeper.params`
    holds the same text under the key's name)."""
    key, _, value = override.partition("=")
    searched = key.removeprefix("+").removeprefix("hydra.sweeper.params.")
    hint = f": give the searched key itself, '{searched}={value}'" if searched != key.removeprefix("+") else ""
    return ConfigError(f"{override}: Hydra cannot sweep over its own hydra.* settings{hint}")


def _check_dataset(d: DataConfig) -> None:
    for key in ("root", "cache_dir"):
        check_path(f"dataset.{key}", getattr(d, key))
    for i, path in enumerate(d.ood):
        check_path(f"dataset.ood[{i}]", path)
    if d.augment not in Augment.__members__:
        raise ConfigError(f"dataset.augment={d.augment!r} is not allowed (expected {' | '.join(map(repr, Augment))})")
    _positive("dataset.train_per_class", d.train_per_class, allow_none=True)
    _positive("dataset.ood_per_class", d.ood_per_class, allow_none=True)
    for key in ("val_fraction", "test_fraction"):
        value = getattr(d, key)
        if not 0 < value < 1:
            raise ConfigError(f"dataset.{key}={value!r} must be in (0, 1)")
    if d.val_fraction + d.test_fraction >= 1:
        raise ConfigError("dataset.val_fraction + dataset.test_fraction must be < 1")
    if d.cache_dir is not None and not str(d.cache_dir).strip():
        raise ConfigError("dataset.cache_dir='' must be a folder path or null (the user's cache folder)")
    if d.num_workers is not None and (isinstance(d.num_workers, bool) or d.num_workers < 0):
        raise ConfigError(f"dataset.num_workers={d.num_workers!r} must be >= 0 or null (the CPU cores)")
    if d.image_size < 16:
        raise ConfigError(f"dataset.image_size={d.image_size!r} must be >= 16")
    if d.image_size > MAX_IMAGE_SIZE:
        raise ConfigError(f"dataset.image_size={d.image_size!r} must be <= {MAX_IMAGE_SIZE} (pixels a side)")
    _check_seed("dataset.split_seed", d.split_seed)
    if d.kind in ("imagefolder", "medmnist") and not d.root:
        if not (d.kind == "medmnist" and d.flag and d.download):
            raise ConfigError(f"dataset.root is required for dataset.kind={d.kind!r}")
    for i, path in enumerate(d.ood):
        if not path or not Path(path).exists():
            raise ConfigError(f"dataset.ood[{i}]={path!r}: no such folder or .npz file")
    if d.kind == "torchvision" and not d.tv_name:
        raise ConfigError("dataset.tv_name is required for dataset.kind='torchvision' (e.g. CIFAR10)")
