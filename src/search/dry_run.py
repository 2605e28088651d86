"""`trainer.dry_run=true` on a sweep: what its trials will cost, before any trains.

A sweep's trials are not known before the sampler proposes them, so no sum of jobs can be given, as a
dry multirun gives one. What is known is the search space. A trial's cost moves with some settings
(the unfreeze depth, gradual unfreezing, the image size, the epochs) and not with others (the
learning rate, its decay): so the trial's estimate (src/training/estimate.py: counted FLOPs, a
calibrated time) is taken at the search space's corners, each range's two ends and each choice.

Corners grow as 2^k with k searched settings, so the settings are screened first: each end is tried
with the others at their first ends, and again at their last ends, and only a setting whose end
changed the estimate there is crossed with the others. A timing is taken once per structure in a
process (src/training/reuse.py), so two configurations that train the same structure get the same
seconds, and the screen does not read timing noise as a cost. The bracket holds for a cost that is
monotone between a range's ends, as the settings above are; it is training and evaluation only (not
the sweep's start-up, nor its report). Every setting of the sweep is checked first, as for a real
sweep (src/sweep_driver.py); nothing is trained or written and no study is opened.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from src.config import ConfigError
from src.gate import check_overrides, to_run_config
from src.search.space import ends, with_value
from src.training.estimate import Estimate, duration, estimate
from src.training.run import preflight
from src.training.setup import setup

# Corners crossed after the screen: beyond this, a dry run would take minutes of calibration.
MAX_CORNERS = 64
# What a dry run's setups would log for each corner (the schedule table, the weights loaded).
QUIET = ("src.training", "src.data", "timm")


@dataclass(frozen=True)
class Corner:
    values: dict[str, Any]  # the searched settings at this corner
    estimate: Estimate

    @property
    def cost(self) -> tuple[int | None, float]:
        return self.estimate.train_flops, self.estimate.total_s


def corners(params: dict[str, dict[str, Any]], fixed: list[str], groups: int) -> tuple[list[Corner], list[str]]:
    """The estimate at each corner of the settings that change it, the rest at their first end; and
    those settings, in the space's order."""
    base = check_overrides(fixed)
    options = {key: ends(spec, groups) for key, spec in params.items()}
    first = {key: values[0] for key, values in options.items()}
    last = {key: values[-1] for key, values in options.items()}
    made: dict[str, Corner] = {}

    def at(values: dict[str, Any]) -> Corner:
        key = repr(sorted(values.items()))
        if key not in made:
            made[key] = Corner(values, _estimate(base, fixed, values))
        return made[key]

    with _quiet():
        # From both far corners: a setting can move the cost only while another is at its other end
        # (gradual unfreezing does nothing at unfreeze depth 0).
        costly = [k for k, vs in options.items()
                  if any(at(side | {k: v}).cost != at(side).cost for side in (first, last) for v in vs)]
        count = 1
        for k in costly:
            count *= len(options[k])
        if count > MAX_CORNERS:
            raise ConfigError(f"trainer.dry_run=true on this sweep would estimate {count} corners of "
                              f"{', '.join(costly)} (at most {MAX_CORNERS}): fix some of them for the dry run")
        found = [at(first | dict(zip(costly, combo))) for combo in itertools.product(*(options[k] for k in costly))]
    return found, costly


def _estimate(base: Any, fixed: list[str], values: dict[str, Any]) -> Estimate:
    """The estimate of a trial at `values`; `base` is `fixed` composed (a DictConfig, from src.gate)."""
    cfg = base
    for key, value in values.items():  # numbers set on the composed base, as the space's check does
        cfg = with_value(cfg, key, value) if cfg is not None else None
    if cfg is None:  # a config group or a text choice: composed
        cfg = check_overrides(fixed + [f"{k}={v}" for k, v in values.items()])
    run_cfg = to_run_config(cfg)
    preflight(run_cfg)
    with tempfile.TemporaryDirectory() as scratch:  # setup writes param_groups.json
        s = setup(run_cfg, Path(scratch))
    return estimate(run_cfg, s)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in QUIET]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def report(found: list[Corner], costly: list[str], searched: list[str], n_trials: int) -> str:
    """The dry run's lines: each corner's estimate, which settings move the cost, and the bracket of a
    trial and of `n_trials` trials."""
    lines = ["sweep dry run: a trial's estimate at each corner of the search space (each range's ends, each "
             "choice), on this machine now; nothing trained, no study opened"]
    for c in found:
        where = " ".join(f"{k}={v}" for k, v in c.values.items() if k in costly) or "every corner"
        lines.append(f"  {where}: {c.estimate.line().removeprefix('estimate: ')}")
    flat = [k for k in searched if k not in costly]
    if costly:
        lines.append(f"the cost moves with {', '.join(costly)}" + (f"; not with {', '.join(flat)} (at their ends)"
                                                                  if flat else ""))
    else:
        lines.append(f"no searched setting moves the cost ({', '.join(flat)}, at their ends)")
    low, high = min(found, key=lambda c: c.estimate.total_s), max(found, key=lambda c: c.estimate.total_s)
    flops = [c.estimate.train_flops for c in found]
    counted = ""
    if all(f is not None for f in flops):
        span = sorted({f"{f:.3e}" for f in flops}, key=float)
        counted = f" ({span[0]}{f' to {span[-1]}' if len(span) > 1 else ''} training FLOPs)"
    trial = (f"~{duration(low.estimate.total_s)}" if low is high else
             f"~{duration(low.estimate.total_s)} to ~{duration(high.estimate.total_s)}")
    total = (f"~{duration(n_trials * low.estimate.total_s)}" if low is high else
             f"~{duration(n_trials * low.estimate.total_s)} to ~{duration(n_trials * high.estimate.total_s)}")
    lines.append(f"a trial: {trial}{counted}; {n_trials} trial{'s' if n_trials != 1 else ''}: {total} of training and "
                 "evaluation if none is pruned (a pruner stops some early), plus the sweep's start-up and report")
    return "\n".join(lines)
