"""The config gate of the training entrypoint (`python -m src.train`, its Optuna sweeps included): YAML
and overrides in, a checked `RunConfig` out, or one line saying what is wrong.

`install()` (nothing happens at import) registers the config dataclasses (src/config/) with Hydra's
ConfigStore, so Hydra rejects an unknown key, a wrong type or a value outside an enum while it
composes: `base_config` for the whole config, `strategy/base_<name>` and `optim/optimizer/base_<name>`
for the YAML of each strategy and optimizer to start from. Values are `config.validate`'s, model-
dependent checks `preflight`'s; Hydra's multi-line errors become one line here. Public Hydra APIs only.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import itertools
import os
import shutil
import typing
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from src.cli_args import check_commands, check_config_dir, hydra_args
from src.config import OPTIMIZERS, OUR_SWEEPER, ConfigError, EntryConfig, RunConfig, check_path, config_error, hydra_sweep_error, name_group_choice, quoting_hint, structured
from src.record.io import RESULT_FILE, finished_status, writable_home
from src.strategies.registry import config_class, strategy_names
from src.training.preflight import preflight

CONF = Path(__file__).resolve().parents[1] / "conf"
# Sweep presets (`python -m src.train -m sweep=default`): the config group `sweep`, kept in the
# project's top-level sweeps/ folder and registered from there (register), whatever the cwd.
SWEEPS = CONF.parent / "sweeps"
# The file by which the Optuna sweeper claims its folder for one study (src.search.study.claim_out_dir).
STUDY_FILE = "study.json"
# The schemas' names in the ConfigStore: a config group option may start from one in its defaults list.
SCHEMA_PREFIX = "base_"
# Free space an output folder needs for a job to start: Hydra's three config files and the log, our
# config.yaml and param_groups.json, each a 4 KiB block or more, with room to spare. Less, and the
# job could not even record that it failed.
MIN_FREE = 64 * 1024


def install() -> None:
    """What Hydra needs from this module before it composes: the `${unique_dir:...}` resolver, the
    clean-up of unused run folders at exit, and the schemas (register). Called by the entrypoint and
    by every function here that composes; nothing happens at import time."""
    global _INSTALLED
    if not _INSTALLED:
        OmegaConf.register_new_resolver("unique_dir", unique_dir, use_cache=True, replace=True)
        atexit.register(release_unused_dirs)
        _INSTALLED = True
    register()


def register() -> None:
    """Store the schemas in Hydra's ConfigStore: `base_config` for the whole config,
    `strategy/base_<name>` for every strategy and `optim/optimizer/base_<name>` for every optimizer;
    and the sweep presets, sweeps/NAME.yaml as `sweep=NAME` (package _global_, like an experiment
    preset). Called again before every composition, so a strategy registered later in the process (a
    test's toy strategy) is found too."""
    cs = ConfigStore.instance()
    cs.store(name=f"{SCHEMA_PREFIX}config", node=structured(EntryConfig))
    for name in strategy_names():
        cs.store(group="strategy", name=f"{SCHEMA_PREFIX}{name}", node=structured(config_class(name)))
    for target, cls in OPTIMIZERS.items():
        name = target.rpartition(".")[2].lower()
        cs.store(group="optim/optimizer", name=f"{SCHEMA_PREFIX}{name}", node=structured(cls))
    for path in sorted(SWEEPS.glob("*.yaml")):
        try:
            stat = path.stat()
            node = _preset(path, stat.st_mtime_ns, stat.st_size)
        except (OSError, OmegaConfBaseException, ValueError) as err:  # yaml's errors are ValueErrors
            raise ConfigError(f"sweep={path.stem}: {path} cannot be read ({str(err).splitlines()[0]})") from None
        cs.store(group="sweep", name=path.stem, node=node, package="_global_", provider="src.gate")


@functools.lru_cache(maxsize=64)
def _preset(path: Path, mtime_ns: int, size: int) -> DictConfig:
    """A sweep preset, parsed once per version of its file: register() runs before every composition
    (a sweep's checks compose a dozen times), and parsing every preset each time cost a tenth of it."""
    return OmegaConf.load(path)


def compose_train(overrides: list[str], config_name: str = "config", **kwargs: Any) -> DictConfig:
    """The training config as Hydra composes it (schemas checked), for code outside `@hydra.main`:
    the sweep driver, precheck, tests. Hydra's errors are raised as they are (see `one_line`).
    Inside a running Hydra app (the sweeper's process) its `hydra.searchpath` is added: Hydra hands a
    sweeper the job overrides only, and a preset or strategy kept on that path must still compose."""
    install()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3", job_name="train"):
        return compose(config_name, overrides=active_searchpath(overrides) + list(overrides), **kwargs)


def active_searchpath(overrides: list[str]) -> list[str]:
    """`hydra.searchpath=[...]` of the running Hydra app, unless none runs, it has none, or the
    overrides set it themselves."""
    if not HydraConfig.initialized() or any(o.startswith("hydra.searchpath=") for o in overrides):
        return []
    paths = list(HydraConfig.get().searchpath or [])
    return [searchpath_override(paths)] if paths else []


def searchpath_override(paths: list[str]) -> str:
    """`hydra.searchpath=[...]` naming these paths, each quoted as Hydra's grammar reads it."""
    quoted = ",".join("'" + p.replace("\\", "\\\\").replace("'", "\\'") + "'" for p in paths)
    return f"hydra.searchpath=[{quoted}]"


def with_config_dir(overrides: list[str], config_dir: str | None) -> list[str]:
    """The overrides with `--config-dir DIR` as Hydra searches it: after conf/, before any `hydra.searchpath` entry.
    The checks compose through the Compose API, which has no such flag: a --config-dir command went unchecked,
    and a bad value made a run folder with a failed result.json (a multirun's, after earlier jobs had trained)."""
    if config_dir is None:
        return list(overrides)
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    at = next((i for i, p in enumerate(parsed) if p.get_key_element() == "hydra.searchpath"), None)
    given = parsed[at].value() if at is not None else []
    paths = [f"file://{os.path.abspath(config_dir)}", *(given if isinstance(given, list) else [])]
    return [searchpath_override(paths)] + [o for i, o in enumerate(overrides) if i != at]


def check_overrides(overrides: list[str]) -> DictConfig:
    """Compose the training config with these overrides; ConfigError (one line) for an unknown key or
    group option, a wrong type or a value validate() refuses. Returns the composed config."""
    try:
        cfg = compose_train(list(overrides))
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        raise composition_error(err, overrides) from None
    to_run_config(cfg)
    return cfg


def to_run_config(cfg: DictConfig, group: str | None = None) -> RunConfig:
    """The composed config as the frozen dataclasses everything below receives, checked by
    validate(); `group` is the W&B group when the config leaves it unset."""
    try:
        data: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[assignment]
    except OmegaConfBaseException as err:
        raise one_line(err) from None
    data.pop("hydra", None)
    data.pop("paths", None)  # where Hydra writes (EntryConfig), not what the run computes
    if group and isinstance(data.get("logger"), dict) and not data["logger"].get("group"):
        data["logger"]["group"] = group
    return RunConfig.from_dict(data)


def one_line(err: BaseException) -> ConfigError:
    """Hydra's or OmegaConf's multi-line error as one line: a missing group option with the options
    there, an unknown key with the keys allowed, a wrong type with the value and the type expected."""
    if isinstance(err, MissingConfigException) and err.options is not None and err.missing_cfg_file:
        group, _, option = err.missing_cfg_file.rpartition("/")
        options = sorted(o for o in err.options if not o.startswith(SCHEMA_PREFIX))
        return ConfigError(f"{group}={option} is not allowed (options: {', '.join(options)})")
    if isinstance(err, OverrideParseException):  # the grammar's message alone does not say which override
        text = str(err.message).strip().splitlines()
        hint = quoting_hint(err.override, text[0] if text else "")
        return ConfigError(f"{err.override}: {text[0] if text else 'cannot be parsed'}{hint}")
    cause: BaseException | None = err
    while cause is not None:  # Hydra wraps OmegaConf's error, which names the key and the type
        if isinstance(cause, OmegaConfBaseException):
            return config_error(cause)
        cause = cause.__cause__ or cause.__context__
    text = str(err).strip()
    return ConfigError(text.splitlines()[0] if text else type(err).__name__)


def composition_error(err: BaseException, overrides: list[str]) -> ConfigError:
    """A failed composition as one line. OmegaConf raises a bare ValueError for `key.sub=value` where
    `key` holds a list (`optim.optimizer.betas.x=1`): the override is found in the schema and named."""
    if isinstance(err, ConfigError):
        return err
    if isinstance(err, (HydraException, OmegaConfBaseException)):
        return ConfigError(name_group_choice(str(one_line(err)), overrides))
    for text in overrides:
        key = text.split("=", 1)[0].lstrip("+~")
        node: Any = RunConfig
        for depth, part in enumerate(key.split(".")[:-1], start=1):
            node = _field_type(node, part) if dataclasses.is_dataclass(node) else None
            if node is not None and not dataclasses.is_dataclass(node):
                return ConfigError(f"unknown key '{key}' ({'.'.join(key.split('.')[:depth])} has no sub-keys)")
    return ConfigError(f"{' '.join(overrides)}: {one_line(err)}")


def _field_type(cls: type, name: str) -> Any:
    """The type of field `name` of config class `cls` or of a subclass (the strategy's, the optimizer's)."""
    return next((h for k in (cls, *cls.__subclasses__()) if (h := typing.get_type_hints(k).get(name))), None)


# --- output folders: `${unique_dir:...}` in conf/config.yaml
_CLAIMED: dict[str, str] = {}
_MADE_PARENTS: list[Path] = []
_INSTALLED = False


def unique_dir(path: str) -> str:
    """`${unique_dir:outputs/${now:...}}`: the folder, created now, or `<folder>_1`, `_2`, ... if a run started in the same
    second has it. mkdir is atomic, so two processes never share a folder (Hydra's `${now:%H-%M-%S}` alone gives both the
    same one: one result lost, metrics interleaved). Cached: this process's resolutions and Hydra's copies share it."""
    if path not in _CLAIMED:
        base = Path(path)
        missing = [a for a in base.parents if not a.exists()]  # deepest first
        base.parent.mkdir(parents=True, exist_ok=True)
        _MADE_PARENTS.extend(missing)
        n = 0
        while True:
            candidate = base.with_name(f"{base.name}_{n}") if n else base
            try:
                candidate.mkdir()
                break
            except FileExistsError:
                n += 1
            except FileNotFoundError:  # another process released the (empty) parent it made, between our two mkdirs
                base.parent.mkdir(parents=True, exist_ok=True)
        _CLAIMED[path] = str(candidate)
    return _CLAIMED[path]


def release_unused_dirs() -> None:
    """Remove the folders `unique_dir` claimed that are still empty: OmegaConf resolves a value a preset merges over too,
    and checks that fail before Hydra starts leave theirs unused. A released folder is claimed afresh if resolved again."""
    for template, folder in list(_CLAIMED.items()):
        try:
            Path(folder).rmdir()  # only an empty folder: never one a run has written to
        except OSError:
            continue
        del _CLAIMED[template]
    # deepest first over every claim: a parent two claims share (runs/ of runs/outputs/.. and runs/multirun/..) empties last
    for parent in sorted(_MADE_PARENTS, key=lambda p: len(p.parts), reverse=True):
        try:
            parent.rmdir()
        except OSError:
            pass
    _MADE_PARENTS.clear()


# --- every job of a multirun checked before Hydra makes a folder
def expand_jobs(overrides: list[str], multirun: bool, config_name: str = "config") -> tuple[list[list[str]], DictConfig]:
    """The override list of every job Hydra will launch (the basic sweeper's expansion: sweep values from the command line
    and from `hydra.sweeper.params`), and the composed config with its `hydra` node (unresolved: resolving it would create
    the output folder). Call inside `initialize_config_dir(CONF)`."""
    install()
    # with the config loader, as Hydra's sweepers parse: glob() lists a group's options through it
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    parsed = parser.parse_overrides(overrides)
    fixed = [o for o, p in zip(overrides, parsed) if not p.is_sweep_override()]
    base = compose(config_name, overrides=fixed, return_hydra_config=True)
    if not (multirun or multirun_mode(base)):  # `seed=0,1` without -m: Hydra's own error ("Ambiguous value")
        return [overrides], base if fixed == overrides else compose(config_name, overrides=overrides, return_hydra_config=True)
    if swept := [p.input_line for p in parsed if p.is_sweep_override() and p.is_hydra_override()]:
        raise hydra_sweep_error(swept[0])  # Hydra's own refusal came later, 3 lines and exit 1
    sweeper = OmegaConf.select(base, "hydra.sweeper._target_", default="")
    if not str(sweeper).endswith("BasicSweeper"):
        return [fixed], base  # another sweeper picks the values itself: check what is fixed
    params = OmegaConf.to_container(base.hydra.sweeper.params, resolve=False) if base.hydra.sweeper.get("params") else {}
    everything = [f"{k}={v}" for k, v in (params or {}).items()] + list(overrides)
    return grid(parser.parse_overrides(everything)), base


def multirun_mode(cfg: DictConfig) -> bool:
    """`hydra.mode=MULTIRUN` (command line, or a preset as lightning-hydra-template's): Hydra's other way to say -m."""
    return getattr(OmegaConf.select(cfg, "hydra.mode"), "name", None) == "MULTIRUN"


def grid(overrides: list[Override]) -> list[list[str]]:
    """Every job of Hydra's basic sweeper: the product of each key's values (`seed=0,1`), a later
    override of a key replacing an earlier one (the command line over `hydra.sweeper.params`)."""
    choices: dict[str, list[str]] = {}
    for override in overrides:
        key = override.get_key_element()
        if not override.is_sweep_override():
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
            if not choices[key]:  # range(1,1): Hydra launched 0 jobs, exit 0, and nothing said so
                raise ConfigError(f"{override.input_line}: no values, so no job would run (the basic sweeper's range(a,b) stops before b)")
        else:
            raise ConfigError(f"{override.input_line}: the basic sweeper takes a list of values (a,b,c), not a {override.value_type.name}")
    return [list(job) for job in itertools.product(*choices.values())]


def job_config(job: list[str], config_name: str, composed: dict[tuple[str, ...], DictConfig]) -> DictConfig:
    """The job's config as Hydra composes it, at a fraction of the cost for a large multirun: the
    defaults list (config groups, additions, deletions) is composed once per distinct choice, and
    plain `key=value` overrides are set on a copy (a 120-job grid composes 8 times, not 120); the
    schema checks each value as it is set. Hydra's own settings (hydra.*, hydra/...) do not change
    the job's config and are left out, except `hydra.searchpath`, which adds config groups and
    options (a strategy of one's own), and the group `sweep` (sweeps/, registered, not in conf/). Call
    inside `initialize_config_dir(CONF)`."""
    parsed = OverridesParser.create().parse_overrides(job)
    structural, values = [], []
    for text, override in zip(job, parsed):
        key = override.key_or_group
        if key == "hydra.searchpath":
            structural.append((text, override))
            continue
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):
            continue
        plain = not (override.is_add() or override.is_delete() or override.is_force_add()) and key != "sweep" and \
            not ("." not in key and (CONF / key).is_dir())
        (values if plain else structural).append((text, override))
    key = tuple(text for text, _ in structural)
    if key not in composed:
        composed[key] = compose(config_name, overrides=list(key))
    cfg = composed[key].copy()
    for _, override in values:
        OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True)
    return cfg


def check_output_dir(hydra_cfg: DictConfig, multirun: bool, output_dir: str | None = None) -> None:
    """The run (or multirun) folder can be created and written (the part before the first interpolation, or `output_dir`);
    our Optuna sweeper's fixed folder holds no finished run unless its study's, which it resumes (claim_out_dir)."""
    key, value = output_setting(hydra_cfg, multirun, output_dir)
    # "": `${paths.output_dir}/outputs` would be /outputs, and `hydra.run.dir="$UNSET"` wrote the run into the current folder
    check_path(key, value, required=True)
    prefix = value.split("${", 1)[0]
    try:
        existing = writable_home(Path(prefix or ".").absolute())
    except ValueError as err:
        raise ConfigError(f"{key}={value}: {err}") from None
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE:  # Hydra would fail writing the job's config, with its traceback
        raise ConfigError(f"{key}={value}: {existing} has {free // 1024} KiB free, not enough to start "
                          f"(at least {MIN_FREE // 1024} KiB); free some space or choose another folder")
    # Each job's run() keeps its folder's finished run, resumes a killed one, refuses another config's. Refused here: our
    # sweeper's folder without its study (a lost one), a study's folder given to a plain multirun or run (its runs reported as the study's).
    ours = multirun and str(OmegaConf.select(hydra_cfg, "sweeper._target_", default="")).startswith(OUR_SWEEPER)
    node = hydra_cfg.sweep if multirun else hydra_cfg.run  # resolved: a sweep's is ${paths.output_dir}/sweeps-out/STUDY
    if "unique_dir:" in str(OmegaConf.to_container(node, resolve=False)["dir"]) or \
            (resolved := OmegaConf.select(node, "dir", throw_on_resolution_failure=False)) is None:
        return  # always a new folder (resolving it would create it), or one only Hydra's job resolves
    folder = Path(str(resolved))
    where = f"{key}={value}" + ("" if str(folder) == value else f": {folder}")
    if (study := (folder / STUDY_FILE).is_file()) and not ours:
        raise ConfigError(f"{where} is an Optuna study's folder (its {STUDY_FILE}): this {'multirun' if multirun else 'run'}'s"
                          " results would be mixed into the study's report; choose another folder")
    if ours and not study and (finished := [p for p in sorted(folder.glob(f"*/{RESULT_FILE}")) if finished_status(p)]):
        # Said whose record is missing: "move them away" alone, to a user whose study.json was lost
        # (a file of the set deleted, a copy that left it out), took the study's own trials out of its report.
        raise ConfigError(f"{where} already holds {len(finished)} finished run(s) ({finished[0]}) but no {STUDY_FILE}, "
                          "the record of the study they belong to: if it was lost, restore it (from a copy) to resume "
                          "that study; else they are kept: choose another folder or move them away")


def output_setting(hydra_cfg: DictConfig, multirun: bool, output_dir: str | None = None) -> tuple[str, str]:
    """The setting that places the run (or multirun) folder, and its value as given: `hydra.run.dir`
    (`hydra.sweep.dir`), or `paths.output_dir` when the folder is built under it (conf/config.yaml).
    Unresolved: resolving `${unique_dir:...}` would create the folder."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    value = str(OmegaConf.to_container(hydra_cfg.sweep if multirun else hydra_cfg.run, resolve=False)["dir"])
    if output_dir is not None and "${paths.output_dir}" in value:
        return "paths.output_dir", str(output_dir)
    return key, value


def precheck(argv: list[str]) -> int:
    """Every job's configuration checked before Hydra creates a folder or job 0 trains: a value that
    cannot run in job 5 of 9 stops the multirun now, not after job 4. Returns the number of jobs
    checked (0 when Hydra is only asked for help, its config or shell completion)."""
    args, _ = hydra_args().parse_known_args(argv)
    check_commands(args)
    check_config_dir(args, CONF, Path(__file__).parent)  # src/: the folder of src.train, the app
    if args.help or args.hydra_help or args.version or args.cfg or args.shell_completion or args.info \
            or args.experimental_rerun:
        return 0
    if args.config_path and not Path(args.config_path).is_absolute():
        return 0  # Hydra reads it against src/ (check_config_dir refused one that is not there)
    # --config-path RUN (a run's config.yaml run again) is checked as conf/ is: a bad value made a failed run folder
    conf = Path(args.config_path) if args.config_path else CONF
    config_name = args.config_name or "config"
    install()
    try:
        with initialize_config_dir(config_dir=str(conf), version_base="1.3", job_name="train"):
            jobs, base = expand_jobs(with_config_dir(args.overrides, args.config_dir), args.multirun, config_name)
            check_output_dir(base.hydra, args.multirun or multirun_mode(base), OmegaConf.select(base, "paths.output_dir", default=None))
            varying = {o.split("=", 1)[0] for job in jobs for o in job if sum(o in j for j in jobs) < len(jobs)}
            composed: dict[tuple[str, ...], DictConfig] = {}
            for number, job in enumerate(jobs):
                where = "" if len(jobs) == 1 else f"job {number} of {len(jobs)} ({' '.join(o for o in job if o.split('=', 1)[0] in varying)}): "
                try:
                    preflight(to_run_config(job_config(job, config_name, composed)))
                except ConfigError as err:
                    raise ConfigError(f"{where}{err}") from None
                except (HydraException, OmegaConfBaseException, ValueError) as err:
                    raise ConfigError(f"{where}{composition_error(err, job)}") from None
    except ConfigError:
        raise
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        raise composition_error(err, list(args.overrides)) from None
    return len(jobs)
