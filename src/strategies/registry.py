"""Strategies by name: `strategy.name` -> its `Strategy` class (and so its config class).

Finding one does not depend on import order: every lookup first imports the package src.strategies,
whose `__init__` imports each strategy module (each registers itself with `@register`). So
`RunConfig()` and `RunConfig.from_dict` work in a process that never imported src.strategies, and a
strategy registered from elsewhere (a test's own) is found too.

This module imports nothing of the project but src.config at import time: src/config/, the bottom
layer, looks strategies up from inside its functions (tests/test_layout.py allows that one import).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING

from src.config import ConfigError

if TYPE_CHECKING:
    from src.config import StrategyConfig
    from src.strategies.base import Strategy

PACKAGE = "src.strategies"
# Every registered strategy by name (filled by @register as the strategy modules are imported).
STRATEGIES: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make a strategy known by its name (its config class with it)."""
    default_name = next(f.default for f in dataclasses.fields(cls.Config) if f.name == "name")
    if default_name != cls.name:
        raise TypeError(f"{cls.__name__}.Config.name defaults to {default_name!r}, not {cls.name!r}")
    STRATEGIES[cls.name] = cls
    return cls


def strategy_names() -> list[str]:
    """Every strategy name there is, sorted (the package's modules imported first)."""
    importlib.import_module(PACKAGE)
    return sorted(STRATEGIES)


def strategy_class(name: object) -> type[Strategy]:
    """The strategy class named `name`; ConfigError (one line, listing the names) if there is none."""
    names = strategy_names()
    if name not in STRATEGIES:
        raise ConfigError(f"strategy.name={name!r} is not allowed (expected {' | '.join(map(repr, names))})")
    return STRATEGIES[name]  # type: ignore[index]


def config_class(name: object) -> type[StrategyConfig]:
    """The config class of strategy `name` (its own knobs on top of StrategyConfig's)."""
    return strategy_class(name).Config
