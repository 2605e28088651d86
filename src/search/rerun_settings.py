"""src.train's `hydra.sweeper.rerun_seeds` and `rerun_overrides` checked before the search starts: the
Pareto set re-run on more seeds (src/search/rerun.py) must give independent runs, each once."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from hydra_plugins.ft_optuna_sweeper.settings import SEED_MAX
from src.config import ConfigError


def check_rerun(seeds: Any, overrides: Any, search_seeds: Iterable[int] | range, searched: Iterable[str]) -> list[int]:
    """`rerun_seeds`: integers in the seed range, each once, none the search trained with; and
    `rerun_overrides` that change neither the seed nor a searched key (each Pareto trial's own value
    is what is re-run). Returns the seeds."""
    if not isinstance(seeds, (list, tuple)):
        raise ConfigError(f"hydra.sweeper.rerun_seeds={seeds!r} must be a list of seeds, e.g. [1,2,3]")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= SEED_MAX:
            raise ConfigError(f"hydra.sweeper.rerun_seeds={list(seeds)}: {s!r} is not a seed (an integer in 0..{SEED_MAX})")
    twice = sorted({s for s in seeds if list(seeds).count(s) > 1})
    if twice:  # the second run of a seed reads the first back: one measurement counted twice in the CI
        raise ConfigError(f"hydra.sweeper.rerun_seeds={list(seeds)}: seed {twice[0]} is given twice")
    used = [s for s in seeds if s in search_seeds]
    if used:  # the front was selected on these runs: re-running them counts the selection's luck again
        raise ConfigError(f"hydra.sweeper.rerun_seeds={list(seeds)}: seed {used[0]} is the seed the search trained with "
                     "(the Pareto set was selected on it); re-run on other seeds")
    if not isinstance(overrides, (list, tuple)) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"hydra.sweeper.rerun_overrides={overrides!r} must be a list of key=value overrides")
    searched = set(searched)
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if key == "seed":
            raise ConfigError(f"hydra.sweeper.rerun_overrides: {o}: the re-runs' seeds are hydra.sweeper.rerun_seeds")
        if key in searched:
            raise ConfigError(f"hydra.sweeper.rerun_overrides: {o}: {key} is searched; each Pareto trial is re-run with "
                         "its own value")
    return list(seeds)


def search_seeds(base_seed: int, params: Mapping[str, Mapping[str, Any]]) -> Iterable[int] | range:
    """The training seeds the search's trials can have used: the config's, or, where `seed` itself
    is searched, every value it can take."""
    spec = params.get("seed")
    if spec is None:
        return {base_seed}
    if spec.get("type") == "categorical":
        return set(spec.get("choices") or [])
    if spec.get("type") == "int":
        return range(int(spec["low"]), int(spec["high"]) + 1, int(spec.get("step") or 1))
    return set()
