"""Replay pruning rules on the curves of a finished, unpruned study: what would each have saved?

    python benchmarks/replay_pruning.py sweeps-out/pruning-bench/multi-off bench-multi-off

Every trial's curve (best val accuracy so far and cumulative cost, per epoch) is stored in the
study. The replay walks the trials in order, as a sweep would, and stops a trial where a rule says
so, judging it only against the trials the replay let finish. It cannot know what the sampler
would have proposed instead of a stopped trial, so it is an estimate. It reproduced the measured
pruned studies of README exactly (TPE proposed the same trials).
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import optuna

Curve = list[tuple[float, float]]


def replay(curves: list[Curve], rule: Callable[[int, tuple[float, float], list[Curve]], bool], after: int,
           startup: int = 5) -> tuple[int, float]:
    finished: list[Curve] = []
    epochs, best = 0, 0.0
    for cv in curves:
        stop = next((k for k in range(len(cv)) if k + 1 >= after and len(finished) >= startup and rule(k, cv[k], finished)), None)
        if stop is None:
            finished.append(cv)
            epochs += len(cv)
            best = max(best, cv[-1][0])
        else:
            epochs += stop + 1
    return epochs, best


def dominated(k: int, point: tuple[float, float], finished: list[Curve]) -> bool:
    return any(f[k][0] >= point[0] and f[k][1] <= point[1] for f in finished)


def median(k: int, point: tuple[float, float], finished: list[Curve]) -> bool:
    return point[0] < statistics.median(f[k][0] for f in finished)


def main() -> int:
    out, name = Path(sys.argv[1]), sys.argv[2]
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'optuna.db'}")
    raw = [t.user_attrs["curve"] for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    # The objective is the run's best epoch (trainer.select=best_val): judge the running best, also
    # for studies recorded before the curves stored it.
    curves = [[(max(a for a, _ in cv[: i + 1]), cv[i][1]) for i in range(len(cv))] for cv in raw]
    has_cost = all(not math.isnan(c) for cv in curves for _, c in cv)
    total = sum(len(c) for c in curves)
    full_best = max(c[-1][0] for c in curves)
    print(f"{name}: {len(curves)} trials, {total} epochs, best val acc {full_best:.4f}")
    print("| rule | after | epochs | vs off | best val acc | Δ |")
    print("|---|---|---|---|---|---|")
    rules = (("dominated", dominated), ("median", median)) if has_cost else (("median", median),)
    for label, rule in rules:
        for after in (1, 2, 3):
            e, b = replay(curves, rule, after)
            print(f"| {label} | {after} | {e} | {e / total - 1:+.0%} | {b:.4f} | {100 * (b - full_best):+.2f} pt |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
