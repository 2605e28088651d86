"""What the answer tells a user to run when the seeds so far cannot tell configurations apart."""

from __future__ import annotations

from collections.abc import Sequence

from src.reporting.configs import Config
from src.reporting.runs import is_rerun, is_searched

MORE_SEEDS = "seed=0,1,2"  # a multirun's: the same command over seeds
# A sweep's trials get more seeds from its re-runs, never from `seed=0,1,2`: on a sweep's command line that
# makes the seed a searched parameter (each trial draws one), and its study refuses it as another experiment.
RERUN_SEEDS = "hydra.sweeper.rerun_seeds"
RERUNS_WANTED = 3


def more_seeds(configs: Sequence[Config]) -> str:
    """What runs these configurations on more seeds: `seed=0,1,2` for a multirun's; for a sweep's trials,
    its re-run of the Pareto set on seeds the search did not train with (rerun_settings refuses those),
    at least RERUNS_WANTED and one more than the re-runs already made (which are read back, not retrained)."""
    if not configs or not all(c.trials for c in configs):
        return MORE_SEEDS
    runs = [r for c in configs for r in c.runs + c.selected_on]
    searched = {r.result.seed for c in configs for r in c.selected_on} | {r.result.seed for r in runs if is_searched(r.dir)}
    wanted = max(RERUNS_WANTED, len({r.result.seed for r in runs if is_rerun(r.dir)}) + 1)
    seeds = [s for s in range(wanted + len(searched)) if s not in searched][:wanted]
    return f"{RERUN_SEEDS}=[{','.join(map(str, seeds))}]"
