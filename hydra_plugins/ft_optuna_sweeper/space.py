"""The search space, as hydra-optuna-sweeper 1.3 reads it: sweep overrides (from the command line and
`hydra.sweeper.params`) and 1.3's deprecated `hydra.sweeper.search_space` mappings become param specs,
{type: float|int, low, high, log, step} or {type: categorical, choices}; each becomes an Optuna 5
distribution, a suggested value, or a grid's list of values.

`interval(a,b)` is a float in [a, b] (Hydra makes both ends floats; `int(interval(a,b))` an int), `tag(log,
interval(a,b))` the same on a log scale, `choice(...)` categorical, `range(a,b[,step])` an int from a to b *inclusive*
(1.3's IntDistribution(a, b, step); a float one with a float bound or step), `shuffle(range(...))`
categorical over the range's values (which end before b, as Hydra's iterator does), `glob(...)` categorical
over the config group options it matches (as Hydra's basic sweeper lists them). A plain value is
fixed for every trial, and where a key is both fixed and swept, the fixed value wins, as in 1.3.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any, Mapping

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob, IntervalSweep, Override, RangeSweep, Transformer

from hydra_plugins.ft_optuna_sweeper.errors import SettingError

log = logging.getLogger(__name__)
KINDS = {"float": {"type", "low", "high", "log", "step"}, "int": {"type", "low", "high", "log", "step"},
         "categorical": {"type", "choices"}}


def param_spec(override: Override, text: str) -> dict[str, Any] | None:
    """A sweep override as a param spec; None for a plain (fixed) value."""
    if not override.is_sweep_override():
        return None
    value = override.value()
    _check_tags(value, text)
    if isinstance(value, Glob) and override.config_loader is None:  # a caller with no config groups to list
        raise SettingError(f"{text}: glob() lists a config group's options, which this sweep cannot see")
    if override.is_choice_sweep() or isinstance(value, Glob) or (isinstance(value, RangeSweep) and value.shuffle):
        return {"type": "categorical", "choices": list(override.sweep_iterator(transformer=Transformer.encode))}
    if isinstance(value, RangeSweep):  # 1.3: IntDistribution(start, stop, step), both ends included
        kind = "float" if any(isinstance(v, float) for v in (value.start, value.stop, value.step)) else "int"
        number = float if kind == "float" else int
        return {"type": kind, "low": number(value.start), "high": number(value.stop), "step": number(value.step)}
    if isinstance(value, IntervalSweep):
        kind = "int" if isinstance(value.start, int) and isinstance(value.end, int) else "float"
        return {"type": kind, "low": value.start, "high": value.end, "log": "log" in value.tags}
    raise SettingError(f"{text}: not a sweep Optuna can sample (interval, tag(log, interval), range, choice)")


def _check_tags(value: Any, text: str) -> None:
    """Hydra's tag() takes any word, and 1.3 read one, `log`, on an interval only: `tag(lg, interval(...))`
    or `tag(log, range(1,100))` ran on a linear scale, unsaid. Each is refused, in one line."""
    tags = set(getattr(value, "tags", None) or ())
    unknown = sorted(tags - {"log"})
    if unknown:
        raise SettingError(f"{text}: tag {unknown[0]!r} means nothing to this sweeper (its one tag is log, as in "
                           "tag(log, interval(a,b)))")
    if tags and not isinstance(value, IntervalSweep):
        raise SettingError(f"{text}: only an interval is sampled on a log scale: tag(log, interval(a,b)), or "
                           "tag(log, int(interval(a,b))) for integers (1.3 sampled this one linearly)")


def split_space(arguments: list[str], *, final: bool = True,
                config_loader: Any = None) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Overrides (hydra.sweeper.params' first, then the command line's) as the search space and the
    fixed overrides every job gets. A key given twice as the same kind: the later one wins, as in
    Hydra. A key both swept and fixed: the fixed value wins, wherever each was given (1.3), with a
    warning. Each range is checked (`check_spec`). `final=False`: a first look at overrides the caller
    will split again once it knows all their values (src.train's `groups`), neither checked nor
    warned about here. `config_loader` (Hydra's): what `glob(...)` lists a config group's options with."""
    from hydra.errors import OverrideParseException

    params: dict[str, dict[str, Any]] = {}
    fixed: dict[str, str] = {}
    for text in arguments:
        try:
            (override,) = OverridesParser.create(config_loader=config_loader).parse_overrides([text])
        except OverrideParseException as err:  # e.g. choice() in hydra.sweeper.params: Hydra's own words, one line
            raise SettingError(f"{text}: {' '.join(str(err).splitlines()[1:2]) or err}") from None
        key = override.get_key_element()
        spec = param_spec(override, text)
        if spec is None:
            fixed.pop(key, None)
            fixed[key] = text
        else:
            params[key] = check_spec(key, spec, text) if final else spec
    for key in params.keys() & fixed.keys():
        if final:
            log.warning("%s is both swept and fixed: the fixed %s wins (as in hydra-optuna-sweeper 1.3)", key,
                        fixed[key])
        del params[key]
    return params, list(fixed.values())


def check_spec(key: str, spec: dict[str, Any], where: str) -> dict[str, Any]:
    """`spec`, or a SettingError naming the key where Optuna would refuse it only when the first trial
    asks for a value (`low <= high` must hold, without the key) or would run something else (a
    step of 0 taken as 1). `where`: the override or config entry that gave it."""
    if spec["type"] == "categorical":
        if not spec["choices"]:
            raise SettingError(f"{where}: {key} needs at least one choice")
        return spec
    low, high, step = spec["low"], spec["high"], spec.get("step")
    for name, v in (("low", low), ("high", high), ("step", step)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise SettingError(f"{where}: {key}'s {name}={v!r} is not a number")
    if low > high:
        raise SettingError(f"{where}: {key}'s low={low} is above its high={high}")
    if spec.get("log") and low <= 0:
        raise SettingError(f"{where}: {key} on a log scale needs low > 0 (low={low})")
    if step is not None and step <= 0:
        raise SettingError(f"{where}: {key}'s step={step} must be > 0")
    if step is not None and spec.get("log") and spec["type"] == "int" and step != 1:
        raise SettingError(f"{where}: {key} on a log scale takes no step (step={step})")
    return spec


def spec_from_config(key: str, given: Any) -> dict[str, Any]:
    """One entry of 1.3's deprecated `hydra.sweeper.search_space` ({type, low, high, step, log, choices})."""
    where = f"hydra.sweeper.search_space.{key}"
    if not isinstance(given, Mapping):
        raise SettingError(f"{where} must be a mapping with type (int | float | categorical)")
    kind = given.get("type")
    if kind not in KINDS:
        raise SettingError(f"{where}.type={kind!r} is not allowed (int | float | categorical)")
    extra = sorted(set(given) - KINDS[kind] - {"choices", "low", "high", "log", "step"})
    if extra:
        raise SettingError(f"{where}.{extra[0]} is not a key of a search space entry")
    if kind == "categorical":
        if not given.get("choices"):
            raise SettingError(f"{where}.choices must be a non-empty list")
        return {"type": "categorical", "choices": list(given["choices"])}
    if given.get("low") is None or given.get("high") is None:
        raise SettingError(f"{where}: a {kind} entry needs low and high")
    spec = {"type": kind, "low": given["low"], "high": given["high"], "log": bool(given.get("log", False))}
    if given.get("step") is not None:
        spec["step"] = given["step"]
    return check_spec(key, spec, where)


def distribution(spec: Mapping[str, Any]) -> Any:
    """The spec as an Optuna 5 distribution (1.3's IntUniform/LogUniform/... are Int/FloatDistribution now)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if spec["type"] == "categorical":
        return CategoricalDistribution(list(spec["choices"]))
    log_scale = bool(spec.get("log", False))
    if spec["type"] == "int":
        return IntDistribution(int(spec["low"]), int(spec["high"]), log=log_scale, step=int(spec.get("step") or 1))
    step = None if spec.get("step") is None or log_scale else float(spec["step"])
    return FloatDistribution(float(spec["low"]), float(spec["high"]), log=log_scale, step=step)


def suggest(trial: Any, key: str, spec: Mapping[str, Any]) -> Any:
    """The trial's value for `key` (Optuna checks it against the key's earlier distributions)."""
    kind = spec["type"]
    if kind == "float":
        step = None if spec.get("step") is None else float(spec["step"])
        return trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False)),
                                   step=step)
    if kind == "int":
        return trial.suggest_int(key, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log", False)),
                                 step=int(spec.get("step") or 1))
    return trial.suggest_categorical(key, list(spec["choices"]))


def override(key: str, value: Any) -> str:
    """`key=value` that Hydra reads back as `value`. A choice's string reaches Optuna unquoted (Hydra's parser
    drops the quotes of `choice("c,d", "true", "1")`), and so does a string a custom_search_space hook
    suggests: written as it is, `c,d` would be a sweep, `true` a bool, `1` an int, `a=b` a parse error.
    Such a string is quoted; one Hydra reads back as the same string stays as it is (a config group's
    option, `abc`), and so does the text of a list or dict choice (`choice([1,2])` reaches Optuna as
    '[1,2]', a string to Optuna only). None is null: Python's `None` would be the string 'None'."""
    return f"{key}={_text(value)}"


def param_override(key: str, value: Any) -> str:
    """An entry of `hydra.sweeper.params` as an override: a string is Hydra's override syntax as 1.3 reads
    it (`interval(0, 1)`, `choice(a, b)`, a plain value), kept as written; any other YAML value (null, a
    list, a mapping, a bool) is written so that Hydra reads it back as that value (`z: null` was 'None')."""
    return f"{key}={value}" if isinstance(value, str) else override(key, value)


def _text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_text(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{_text(v)}" for k, v in value.items()) + "}"
    if not isinstance(value, str):
        return str(value)
    from hydra.core.override_parser.types import Quote, QuotedString

    try:
        (parsed,) = OverridesParser.create().parse_overrides([f"key={value}"])
        read = None if parsed.is_sweep_override() else parsed.value()
    except Exception:  # noqa: BLE001  (`a=b`, a quote inside: what Hydra cannot read unquoted)
        read = None
    if read == value and isinstance(read, str) or isinstance(read, (list, dict)):
        return value
    return QuotedString(text=value, quote=Quote.single).with_quotes()


MAX_CORNERS = 64  # composes before the first trial; a longer choice is checked on its first values only


def corners(params: Mapping[str, Mapping[str, Any]]) -> list[list[str]]:
    """Overrides that set every key at each end of its range and, for a choice, at each of its values
    (a shorter key stays at its last): what a job must be able to compose, checked before any trial."""
    ends = {k: list(p["choices"]) if p["type"] == "categorical" else [p["low"], p["high"]] for k, p in params.items()}
    count = min(MAX_CORNERS, max((len(v) for v in ends.values()), default=0))
    return [[override(k, v[min(i, len(v) - 1)]) for k, v in ends.items()] for i in range(count)]


def grid_choices(key: str, spec: Mapping[str, Any]) -> list[Any]:
    """Every value the key's distribution can take, for a GridSampler: a choice's values, a stepped
    range's values with both ends (a range's stop is in its distribution, so it is on the grid too; 1.3
    left it off). A continuous interval has no grid: refused, naming the key."""
    if spec["type"] == "categorical":
        return list(spec["choices"])
    step = spec.get("step")
    if spec["type"] == "int" and not spec.get("log"):
        return list(range(int(spec["low"]), int(spec["high"]) + 1, int(step or 1)))
    if spec["type"] == "float" and step is not None and not spec.get("log"):
        # in decimal, as Optuna's FloatDistribution counts its steps: no value past `high` when the step does not
        # divide the range (round() put 2.1 on range(0.5, 2.0, step=0.4)), none off the step by float error
        # (0.5 + 3 * 0.4 is 1.7000000000000002, a value off Optuna's grid)
        low, high, by = (Decimal(str(spec[k])) for k in ("low", "high", "step"))
        return [float(low + i * by) for i in range(int((high - low) // by) + 1)]
    raise SettingError(f"{key}: hydra/sweeper/sampler=grid needs values it can list (choice, range, or a "
                       f"stepped interval), not a continuous or log-scale one")
