"""The sweeper's own settings (`hydra.sweeper.*`, the sampler's included) checked before a storage is
opened or a trial trains: each problem is one SettingError naming the key, as for any other setting.

Hydra's schema (config.py) types the keys it declares while it composes; what it cannot see is
checked here: keys added with `+hydra.sweeper...`, the sampler's keyword arguments against the
sampler class's own signature, values Optuna would refuse only when the sampler is built or first
used (a seed outside numpy's range), and a worker's index. Imports are inside the functions: Hydra
imports every module of `hydra_plugins` when it scans for plugins.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

SEED_MAX = 2**32 - 1  # numpy's (and so every Optuna sampler's) seed range is 0..2**32-1
# Keyword arguments whose annotation is one of these can be given as a plain config value.
_PLAIN = {"int": int, "float": (int, float), "bool": bool, "str": str, "None": type(None), "dict": Mapping}
# Limits Optuna checks late or not at all (a bad value would fail the first trial, or silently do nothing).
_AT_LEAST = {"n_startup_trials": 0, "n_ei_candidates": 1, "population_size": 2, "popsize": 1, "dividing_parameter": 1}
_POSITIVE = ("prior_weight", "sigma0")
_PROBABILITY = ("mutation_prob", "crossover_prob", "swapping_prob")

# Keys only one config group option's schema brings (config.py), and the option that selects each class:
# hydra.sweeper.sampler._target_ changed alone keeps the group option's other keys.
_GROUP_OF = {"consider_prior": "tpe", "n_ei_candidates": "tpe", "population_size": "nsgaii", "crossover_prob": "nsgaii",
             "sigma0": "cmaes", "popsize": "cmaes", "qmc_type": "qmc", "scramble": "qmc"}
_OPTION = {"TPESampler": "tpe", "RandomSampler": "random", "NSGAIISampler": "nsgaii", "CmaEsSampler": "cmaes",
           "QMCSampler": "qmc", "GridSampler": "grid"}


def _error(message: str) -> Exception:
    from hydra_plugins.ft_optuna_sweeper.errors import SettingError

    return SettingError(message)


def check_unknown(unknown: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Keys Hydra's schema did not declare (added with `+hydra.sweeper.KEY=...`)."""
    if unknown:
        key = sorted(unknown)[0]
        raise _error(f"hydra.sweeper.{key} is not a setting of hydra/sweeper=optuna (allowed: {', '.join(sorted(allowed))})")


def check_numbers(values: Mapping[str, Any]) -> None:
    """The counts and times: integers (not booleans) at or above their least value."""
    for key, low in (("n_trials", 1), ("n_jobs", 1), ("max_failed", 0), ("heartbeat_s", 1), ("grace_s", 1)):
        v = values[key]
        if isinstance(v, bool) or not isinstance(v, int):
            raise _error(f"hydra.sweeper.{key}={v!r} must be an integer")
        if v < low:
            raise _error(f"hydra.sweeper.{key}={v} must be >= {low}")
    if values["grace_s"] <= values["heartbeat_s"]:  # a live worker between two heartbeats would be taken for dead
        raise _error(f"hydra.sweeper.grace_s={values['grace_s']} must be longer than "
                     f"hydra.sweeper.heartbeat_s={values['heartbeat_s']}")


def check_names(storage: Any, study_name: Any) -> None:
    """null or a non-empty string: an empty one would silently mean the default."""
    for key, v, default in (("storage", storage, "sqlite in hydra.sweep.dir"), ("study_name", study_name, "sweep")):
        if v is not None and (not isinstance(v, str) or not v.strip()):
            raise _error(f"hydra.sweeper.{key}={v!r} must be a non-empty string, or null ({default})")


def sampler_class(sampler: Any) -> type:
    """The Optuna sampler class `hydra.sweeper.sampler._target_` names."""
    import importlib

    import optuna

    target = sampler.get("_target_") if isinstance(sampler, Mapping) else None
    if not isinstance(target, str) or "." not in target:
        raise _error(f"hydra.sweeper.sampler._target_={target!r} must name an Optuna sampler class "
                     "(hydra/sweeper/sampler=tpe | random | nsgaii | motpe | cmaes | qmc | grid)")
    module, _, name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise _error(f"hydra.sweeper.sampler._target_={target}: cannot be imported ({type(err).__name__}: {err})") from None
    if not (isinstance(cls, type) and issubclass(cls, optuna.samplers.BaseSampler)):
        raise _error(f"hydra.sweeper.sampler._target_={target} is not an Optuna sampler (optuna.samplers.BaseSampler)")
    return cls


def sampler_config(node: Any) -> dict[str, Any]:
    """`hydra.sweeper.sampler` as a plain dict, with what 1.3 wrote for MOTPESampler (removed in Optuna 4.0)
    in Optuna 5's words: `_target_: optuna.samplers.MOTPESampler` is TPESampler, and its
    `n_ehvi_candidates` TPESampler's `n_ei_candidates` (MOTPESampler passed it on so), so that a 1.3
    config runs unchanged."""
    from omegaconf import OmegaConf

    sampler = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    if not isinstance(sampler, Mapping):
        return sampler  # sampler_class says what is wrong with it
    sampler = dict(sampler)
    if sampler.get("_target_") == "optuna.samplers.MOTPESampler":
        sampler["_target_"] = "optuna.samplers.TPESampler"
    if "n_ehvi_candidates" in sampler:
        given = sampler.pop("n_ehvi_candidates")
        if given is not None:
            sampler["n_ei_candidates"] = given
    return sampler


def check_sampler(sampler: Mapping[str, Any], n_objectives: int) -> None:
    """The sampler's settings, against its class's signature and the limits Optuna checks late; then
    the sampler built once, so that whatever Optuna itself refuses is refused now, in one line. A
    grid is built later, from the search space (space.grid_choices); here only its settings count."""
    import inspect

    import optuna

    sampler = sampler_config(sampler)  # 1.3's MOTPESampler keys, as the sweep will build them
    cls = sampler_class(sampler)
    name = cls.__name__
    if issubclass(cls, optuna.samplers.CmaEsSampler):
        if n_objectives > 1:
            raise _error(f"hydra/sweeper/sampler=cmaes optimises one objective, not {n_objectives}: "
                         "use tpe, nsgaii or random")
        import importlib.util

        if importlib.util.find_spec("cmaes") is None:
            raise _error("hydra/sweeper/sampler=cmaes needs the cmaes package (pip install cmaes)")
    parameters = inspect.signature(cls).parameters
    kwargs = {k: v for k, v in sampler.items() if not (k.startswith("_") and k.endswith("_"))}
    for key, value in kwargs.items():
        where = f"hydra.sweeper.sampler.{key}"
        if key not in parameters or (key == "search_space" and issubclass(cls, optuna.samplers.GridSampler)):
            allowed = ", ".join(p for p in parameters if p != "self")
            # a key the user never set: the schema of the sampler group's option, another class than _target_'s
            group = _GROUP_OF.get(key, "")
            switch = (f"; it comes with hydra/sweeper/sampler={group}: select the sampler as "
                      f"hydra/sweeper/sampler={_OPTION.get(name, 'NAME')}, not by its _target_") if group else ""
            raise _error(f"{where} is not a setting of {name} (allowed: {allowed}){switch}")
        kinds = _plain_kinds(parameters[key].annotation)
        if kinds is None:  # a callable or an object: only a config with its own _target_ can give one
            if value is not None and not (isinstance(value, Mapping) and "_target_" in value):
                raise _error(f"{where}={value!r}: {name} takes a {parameters[key].annotation} here, which a config "
                             "gives as a mapping with _target_ (or null)")
            continue
        if not any(_is(value, k) for k in kinds):
            raise _error(f"{where}={value!r} must be {' or '.join('null' if k == 'None' else k for k in kinds)}")
        if value is None:
            continue
        if key == "seed" and not 0 <= value <= SEED_MAX:
            raise _error(f"{where}={value} must be in 0..{SEED_MAX} (or null)")
        if key in _AT_LEAST and value < _AT_LEAST[key]:
            raise _error(f"{where}={value} must be >= {_AT_LEAST[key]}")
        if key in _POSITIVE and value <= 0:
            raise _error(f"{where}={value} must be > 0")
        if key in _PROBABILITY and not 0 <= value <= 1:
            raise _error(f"{where}={value} must be in [0, 1]")
    _build_once(sampler, cls, n_objectives)


def _build_once(sampler: Mapping[str, Any], cls: type, n_objectives: int) -> None:
    """The sampler built, so that whatever Optuna refuses is one line now; then asked for values on a scratch
    study, so that a package it imports only once it samples (QMCSampler's scipy) is one line too, not a
    traceback at a later trial (which a stored study would keep as a failed trial)."""
    import warnings

    import optuna
    from hydra.utils import instantiate

    name = cls.__name__
    with warnings.catch_warnings():  # experimental samplers say so when built; that is no error
        warnings.simplefilter("ignore")
        try:
            built = instantiate(dict(sampler))
            if issubclass(cls, optuna.samplers.GridSampler):  # a partial (1.3's `_partial_: true`): try it on a grid
                built = built({"x": [0.0, 0.5, 1.0]})
        except Exception as err:  # noqa: BLE001  (whatever Optuna refuses, as one line)
            raise _error(f"hydra.sweeper.sampler ({name}): {_first(err.__cause__ or err)}") from None
        try:
            _sample_twice(built, n_objectives)
        except ImportError as err:
            package = (err.name or "").split(".")[0]
            raise _error(f"hydra.sweeper.sampler ({name}) needs the {package} package (pip install {package})" if package
                         else f"hydra.sweeper.sampler ({name}): {_first(err)}") from None
        except Exception:  # noqa: BLE001  (e.g. a constraints_func that reads the app's own parameters: not here)
            pass


def _sample_twice(sampler: Any, n_objectives: int) -> None:
    """Two trials of a scratch study in memory, the first told: a sampler may start sampling on its own
    (and import what it needs) only once a trial has completed (QMCSampler does)."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line about a study the user never made
    try:
        study = optuna.create_study(sampler=sampler, directions=["minimize"] * n_objectives)
        for _ in range(2):
            trial = study.ask()
            trial.suggest_float("x", 0.0, 1.0)
            study.tell(trial, [0.0] * n_objectives)
    finally:
        optuna.logging.set_verbosity(verbosity)


def _first(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def seed_moved_on(sampler: Mapping[str, Any], asked: int) -> Mapping[str, Any]:
    """The sampler's config with its seed moved on by `asked`, the trials asked of it before (a resumed
    study's): the same seed again would draw the same values again. Unseeded: as it is. A grid or QMC
    sampler keeps its seed: it fixes an order (the grid's shuffle, the scrambled sequence) that the
    study's trials are counted along, so the same seed is what lets them go on from where they were."""
    import optuna

    keeps = (optuna.samplers.GridSampler, optuna.samplers.QMCSampler)
    if sampler.get("seed") is None or issubclass(sampler_class(sampler), keeps):
        return sampler
    return dict(sampler, seed=(int(sampler["seed"]) + asked) % (SEED_MAX + 1))  # within numpy's seed range


def custom_hook(path: Any) -> Any:
    """`hydra.sweeper.custom_search_space`: the function `f(cfg, trial)` it names, imported now, so that a
    path that does not import is one line, not Hydra's 45-line traceback once the first trial is asked."""
    import importlib
    import inspect

    key = f"hydra.sweeper.custom_search_space={path}"
    parts = str(path).split(".")
    hook: Any = None
    for cut in range(len(parts) - 1, 0, -1):  # the longest importable module, then attributes (pkg.mod.Class.fn)
        module = ".".join(parts[:cut])
        try:
            hook = importlib.import_module(module)
        except ImportError as err:
            if err.name and not (module + ".").startswith(err.name + "."):  # the module is there; an import in it failed
                raise _error(f"{key}: importing {module} failed: {err}") from None
            continue
        for name in parts[cut:]:
            hook = getattr(hook, name, None)
        break
    if not callable(hook):
        raise _error(f"{key}: no such function (a dotted path module.function, importable from here)")
    try:
        inspect.signature(hook).bind(None, None)
    except TypeError:
        raise _error(f"{key} must take (cfg, trial), not {inspect.signature(hook)}") from None
    except ValueError:  # a builtin without a signature: left to the call
        pass
    return hook


def _plain_kinds(annotation: Any) -> list[str] | None:
    """'int | None' -> ['int', 'None']; None for anything that is not plain values."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    if text.startswith("dict[") and text.endswith("| None"):  # CmaEsSampler's x0: a mapping of values
        return ["dict", "None"]
    kinds = [part.strip() for part in text.replace("typing.", "").replace("Optional[", "").rstrip("]").split("|")]
    return kinds if all(k in _PLAIN for k in kinds) else None


def _is(value: Any, kind: str) -> bool:
    if isinstance(value, bool) and kind in ("int", "float"):  # True is an int to Python, not to a config
        return False
    return isinstance(value, _PLAIN[kind])


def worker_index(given: Any) -> int | None:
    """`hydra.sweeper.worker_index`: the given index; null: SLURM's array task id (an sbatch --array
    job's workers are numbered by it), else None (not known). A bad value is one line naming the key."""
    import os

    key = "hydra.sweeper.worker_index"
    if given is None:
        if "SLURM_ARRAY_TASK_ID" not in os.environ:
            return None
        given, key = os.environ["SLURM_ARRAY_TASK_ID"], "SLURM_ARRAY_TASK_ID"
    if isinstance(given, bool) or not str(given).isdigit():
        raise _error(f"{key}={given!r} is not a worker index (an integer >= 0)")
    return int(given)
