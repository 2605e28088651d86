"""Replay pruning rules on the curves of a finished, unpruned study: what would each have saved?

    python benchmarks/replay_pruning.py sweeps-out/pruning-bench/multi-off bench-multi-off

Every trial's curve (best val accuracy so far and cumulative cost, per epoch) is stored in the
study. The replay walks the trials in order, as a sweep would, and stops a trial where a rule says
so, judging it only against the trials the replay let finish (successive halving: against every
earlier trial that reached the rung). It cannot know what the sampler would have proposed instead
of a stopped trial, so it is an estimate; the measured studies in README are the real thing.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from src.search.pruning import halving_keeps, halving_rungs  # noqa: E402

Point = tuple[float, float]  # (best val accuracy so far, cumulative cost) after an epoch
Curve = list[Point]
# rule(k, point, finished curves, every earlier curve as far as it ran, this trial's curve so far) -> stop?
Rule = Callable[[int, Point, list[Curve], list[Curve], Curve], bool]


def replay(curves: list[Curve], rule: Rule, after: int, startup: int = 5) -> tuple[int, float]:
    finished: list[Curve] = []
    seen: list[Curve] = []
    epochs, best = 0, 0.0
    for cv in curves:
        stop = next(
            (k for k in range(len(cv)) if k + 1 >= after and len(finished) >= startup and rule(k, cv[k], finished, seen, cv[: k + 1])),
            None,
        )
        if stop is None:
            finished.append(cv)
            seen.append(cv)
            epochs += len(cv)
            best = max(best, cv[-1][0])
        else:
            seen.append(cv[: stop + 1])
            epochs += stop + 1
    return epochs, best


def dominated(min_delta: float = 0.0, cost: bool = True) -> Rule:
    """Our rule (src/pruning.py): a finished trial was at least as accurate (plus min_delta) at no
    higher cost at k; with one objective (cost=False), at least as accurate."""

    def rule(k: int, p: Point, finished: list[Curve], seen: list[Curve], mine: Curve) -> bool:
        return any(f[k][0] >= p[0] + min_delta and (not cost or f[k][1] <= p[1]) for f in finished)

    return rule


def median(k: int, p: Point, finished: list[Curve], seen: list[Curve], mine: Curve) -> bool:
    return p[0] < statistics.median(f[k][0] for f in finished)


def halving(after: int, epochs: int, use_cost: bool) -> Rule:
    """Our successive halving (src/pruning.py, the same functions): at its rungs, stop a trial
    that is not in the top third of every earlier trial that reached the rung, itself included."""
    rungs = halving_rungs(after, epochs)

    def rule(k: int, p: Point, finished: list[Curve], seen: list[Curve], mine: Curve) -> bool:
        return k in rungs and not halving_keeps(p, [c[k] for c in seen if len(c) > k], use_cost)

    return rule


def halving_rising(after: int, epochs: int, use_cost: bool) -> Rule:
    """Halving that also keeps a rising trial: at a rung, a trial goes on if it is in the top third
    by halving's ranking, or in the top third by its gain over the previous epoch (a slow starter
    that is still climbing)."""
    rungs = halving_rungs(after, epochs)

    def rule(k: int, p: Point, finished: list[Curve], seen: list[Curve], mine: Curve) -> bool:
        if k not in rungs:
            return False
        reached = [c for c in seen if len(c) > k]
        if halving_keeps(p, [c[k] for c in reached], use_cost):
            return False
        gains = [c[k][0] - (c[k - 1][0] if k else 0.0) for c in reached]
        me = mine[k][0] - (mine[k - 1][0] if k else 0.0)
        return not halving_keeps((me, 0.0), [(g, 0.0) for g in gains], use_cost=False)

    return rule


def load_curves_study(parser: argparse.ArgumentParser, out: Path, name: str) -> optuna.Study:
    """The study NAME in OUT/optuna.db, or one line naming what is missing (exit 2). Checked first:
    sqlite creates a database that is not there, so a mistyped folder got an empty optuna.db left in it
    and a KeyError traceback ('Record does not exist')."""
    db = out / "optuna.db"
    if not db.is_file():
        parser.error(f"{db}: no such file (DIR is a sweep's folder, e.g. sweeps-out/STUDY, holding its optuna.db)")
    storage = f"sqlite:///{db}"
    names = optuna.get_all_study_names(storage)
    if name not in names:
        parser.error(f"{db} holds no study named {name!r} (it holds: {', '.join(names) or 'none'})")
    return optuna.load_study(study_name=name, storage=storage)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=Path, help="the study's folder, holding its optuna.db")
    parser.add_argument("study", help="the study's name (hydra.sweeper.study_name)")
    args = parser.parse_args(argv)
    out, name = args.dir, args.study
    study = load_curves_study(parser, out, name)
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
    rules: list[tuple[str, Callable[[int], Rule]]] = [
        ("dominated, accuracy only", lambda a: dominated(cost=False)),
        ("dominated, accuracy only, min_delta 0.01", lambda a: dominated(0.01, cost=False)),
        ("median", lambda a: median),
        ("halving", lambda a: halving(a, len(curves[0]), has_cost)),
        ("halving, keeping rising trials", lambda a: halving_rising(a, len(curves[0]), has_cost)),
    ]
    if has_cost:
        rules[:0] = [("dominated", lambda a: dominated()), ("dominated, min_delta 0.01", lambda a: dominated(0.01))]
    for label, make in rules:
        for after in (1, 2, 3):
            e, b = replay(curves, make(after), after, startup=0 if label == "halving" else 5)
            print(f"| {label} | {after} | {e} | {e / total - 1:+.0%} | {b:.4f} | {100 * (b - full_best):+.2f} pt |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
