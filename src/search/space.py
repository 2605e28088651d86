"""A study's objectives and search space, checked before any trial trains, and the values a trial samples.

The objectives are validation metrics from each trial's result.json (test is reported once, for the
selected configuration, never selected on); every end of every searched range (each choice) must
compose into a training config that passes the same checks as `python -m src.train`, so that no
trial fails on its config.
"""

from __future__ import annotations

import copy
from typing import Any

import optuna
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from src.config import ConfigError, RunConfig
from src.gate import check_overrides, to_run_config
from src.training.run import preflight

# What a study may optimise, from result.json, and which way. Test metrics are not on offer: test
# is reported once for the selected configuration, never selected on.
OBJECTIVES = {"val_acc": "maximize", "val_balanced_acc": "maximize", "train_flops": "minimize", "train_time_s": "minimize"}
MAXIMISE = {k for k, d in OBJECTIVES.items() if d == "maximize"}
PARAM_KEYS = {"float": {"type", "low", "high", "log", "step"}, "int": {"type", "low", "high", "log", "step"},
              "categorical": {"type", "choices"}}


def check_objectives(objectives: Any, base: RunConfig, params: dict[str, Any]) -> list[str]:
    """Objectives a trial can measure, on validation only, each once."""
    if isinstance(objectives, str) or not isinstance(objectives, list) or not objectives:
        raise ConfigError(f"hydra.sweeper.objectives={objectives!r} must be a non-empty list, e.g. [val_acc, train_flops]")
    allowed = ", ".join(OBJECTIVES)
    for o in objectives:
        if isinstance(o, str) and o.startswith("test"):
            raise ConfigError(
                f"hydra.sweeper.objectives: {o} is measured on the test split, which a sweep never selects on (test is "
                f"reported once for the selected configuration: hydra.sweeper.rerun_seeds); use a validation metric ({allowed})"
            )
        if o not in OBJECTIVES:
            raise ConfigError(f"hydra.sweeper.objectives: {o!r} is not an objective (allowed: {allowed})")
    twice = sorted({o for o in objectives if objectives.count(o) > 1})
    if twice:
        raise ConfigError(f"hydra.sweeper.objectives={objectives}: {twice[0]} is given twice")
    if objectives[0] not in MAXIMISE:
        raise ConfigError(
            f"hydra.sweeper.objectives={objectives}: the first must be a validation accuracy ({' | '.join(sorted(MAXIMISE))}); "
            "it ranks trials for the summary and the pruner, costs come after it"
        )
    if "train_flops" in objectives and (not base.trainer.count_flops or "trainer.count_flops" in params):
        raise ConfigError("hydra.sweeper.objectives: train_flops is not measured with trainer.count_flops=false "
                          "(set it true, or drop train_flops)")
    return list(objectives)


def check_space(params: Any, base_over: list[str], groups: int, base: DictConfig | None = None) -> None:
    """The search space: training keys that exist, types and bounds that make sense, and values at
    both ends (each choice) that make a valid training config, so no trial fails on its config.
    `base`: `base_over` composed, when the caller has it (see `with_value`)."""
    if not isinstance(params, dict) or not params:
        raise ConfigError("hydra.sweeper.params must map training keys to sweep values such as interval(1,10) or choice(0,1)")
    set_elsewhere = {o.split("=", 1)[0].lstrip("+~") for o in base_over if "=" in o}
    for key, p in params.items():
        where = f"hydra.sweeper.params.{key}"
        if not isinstance(p, dict):
            raise ConfigError(f"{where} must be a mapping with type (float | int | categorical)")
        kind = p.get("type")
        if kind not in PARAM_KEYS:
            raise ConfigError(f"{where}.type={kind!r} is not allowed (float | int | categorical)")
        extra = sorted(set(p) - PARAM_KEYS[kind])
        if extra:
            raise ConfigError(f"{where}.{extra[0]} is not a key of a {kind} param ({', '.join(sorted(PARAM_KEYS[kind]))})")
        if key in set_elsewhere:
            raise ConfigError(f"{where}: {key} is searched and also set by an override (the preset or the "
                              "command line); a sampled value would replace it")
        if kind == "categorical":
            values = p.get("choices")
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{where}.choices must be a non-empty list")
        else:
            low, high = p.get("low"), high_of(p, groups)
            number = int if kind == "int" else (int, float)
            for name, v in (("low", low), ("high", high)):
                if isinstance(v, bool) or not isinstance(v, number):
                    raise ConfigError(f"{where}.{name}={p.get(name)!r} must be {'an integer' if kind == 'int' else 'a number'}"
                                      + (" or groups" if kind == "int" and name == "high" else ""))
            if low > high:
                raise ConfigError(f"{where}: low={low} is above high={high}")
            if not isinstance(p.get("log", False), bool):
                raise ConfigError(f"{where}.log={p['log']!r} must be true or false")
            if p.get("log") and low <= 0:
                raise ConfigError(f"{where}: log=true needs low > 0 (low={low})")
            if p.get("step") is not None and (p.get("log") or isinstance(p["step"], bool)
                                              or not isinstance(p["step"], number) or p["step"] <= 0):
                raise ConfigError(f"{where}.step={p['step']!r} must be a positive number, and not with log=true")
            values = [low, high]
        for v in values:
            try:
                # the config check's composition (0.25 s) serves the model-dependent checks too
                preflight(to_run_config(with_value(base, key, v) or check_overrides(base_over + [f"{key}={v}"])))
            except ConfigError as err:
                raise ConfigError(f"{where}: {err}") from None
            except (HydraException, OmegaConfBaseException) as err:
                raise ConfigError(f"{where}={v!r}: {str(err).splitlines()[0]}") from None



def with_value(base: DictConfig | None, key: str, value: Any) -> DictConfig | None:
    """`base` with a number at a key it holds as a value: what composing with `key=value` gives (Hydra
    applies an override after merging the defaults, as a typed assignment, and the schema checks it
    the same), without composing again (0.25-0.45 s each, 8 times for make sweep's space). None for
    anything else (a config group, a new key, a choice that is text): that is composed."""
    if base is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(base, parent, default=None) if parent else base
    if not isinstance(node, DictConfig) or leaf not in node:
        return None
    if OmegaConf.is_config(OmegaConf.select(base, key, throw_on_resolution_failure=False)):
        return None
    cfg = copy.deepcopy(base)
    try:
        OmegaConf.update(cfg, key, value, merge=False)
    except OmegaConfBaseException:  # refused (a float for an int): composing says why, in its words
        return None
    return cfg


def high_of(spec: dict[str, Any], groups: int) -> Any:
    """An int range's upper end, with `groups` read as the model's number of backbone layer groups."""
    return groups if spec.get("type") == "int" and spec.get("high") == "groups" else spec.get("high")


def ends(spec: dict[str, Any], groups: int) -> list[Any]:
    """A checked setting's ends: each choice, or a range's low and high (once when they are equal)."""
    if spec["type"] == "categorical":
        return list(spec["choices"])
    high = high_of(spec, groups)
    return [spec["low"], high] if spec["low"] != high else [spec["low"]]


def suggest(trial: optuna.Trial, key: str, spec: dict[str, Any], groups: int) -> Any:
    kind = spec["type"]
    if kind == "float":
        step = None if spec.get("step") is None else float(spec["step"])
        return trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False)),
                                   step=step)
    if kind == "int":
        high = int(high_of(spec, groups))
        return trial.suggest_int(key, int(spec["low"]), high, log=bool(spec.get("log", False)),
                                 step=int(spec.get("step") or 1))
    return trial.suggest_categorical(key, list(spec["choices"]))


