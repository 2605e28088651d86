"""What `hydra.sweeper.pruner` holds: one definition for the sweeper's config schema (Hydra types it
while it composes) and the typed value the pruning rules take (hydra_plugins/ft_optuna_sweeper/
pruners.py and src/search/pruning.py say what each pruner does).

Imports nothing heavy: Hydra imports the sweeper's config module, and so this one, in every Hydra
application of this environment when it scans for plugins. No `from __future__ import annotations`:
OmegaConf reads the field types of a structured config at run time. Not frozen: a frozen dataclass
is a read-only config node, which the command line could not override.
"""

from dataclasses import dataclass
from typing import Any, Dict

from hydra_plugins.ft_optuna_sweeper.errors import SettingError

PRUNERS = ("auto", "none", "halving", "dominated", "median", "hyperband")


@dataclass
class PruneSpec:
    """auto (halving where it applies) | none | halving | dominated | median | hyperband."""

    name: str = "auto"
    after: int = 2  # steps (epochs) every trial trains before it can be stopped (sweeps/default.yaml says why)
    startup: int = 5  # finished trials needed before any trial is stopped
    min_delta: float = 0.0  # dominated: the finished trial must be better by at least this

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "PruneSpec":
        """The spec from `hydra.sweeper.pruner` as plain values, each checked (SettingError naming the key)."""
        unknown = set(d) - {"name", "after", "startup", "min_delta"}
        if unknown:
            raise SettingError(f"hydra.sweeper.pruner.{sorted(unknown)[0]} is not a key (name, after, startup, min_delta)")
        # Strict types: int() would quietly turn after=1.5 into 1 and True into 1.
        for key in ("after", "startup"):
            if key in d and (isinstance(d[key], bool) or not isinstance(d[key], int)):
                raise SettingError(f"hydra.sweeper.pruner.{key}={d[key]!r} must be an integer")
        if "min_delta" in d and (isinstance(d["min_delta"], bool) or not isinstance(d["min_delta"], (int, float))):
            raise SettingError(f"hydra.sweeper.pruner.min_delta={d['min_delta']!r} must be a number")
        default = cls()
        spec = cls(str(d.get("name", default.name)), int(d.get("after", default.after)),
                   int(d.get("startup", default.startup)), float(d.get("min_delta", default.min_delta)))
        if spec.name not in PRUNERS:
            raise SettingError(f"hydra.sweeper.pruner.name={spec.name!r} is not allowed ({' | '.join(PRUNERS)})")
        if spec.after < 1 or spec.startup < 0 or spec.min_delta < 0:
            raise SettingError(
                f"hydra.sweeper.pruner: after={spec.after} must be >= 1, startup={spec.startup} and "
                f"min_delta={spec.min_delta} >= 0"
            )
        return spec
