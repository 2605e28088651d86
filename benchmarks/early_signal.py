"""How well does an early epoch rank trials by their final accuracy? Read from unpruned studies' runs.

    python benchmarks/early_signal.py STUDY_DIR [STUDY_DIR ...] [--rung 2]

Successive halving stops a trial on what it shows at a rung; that is only as good as the rung's
signal is at ranking trials by where they end. For each unpruned study folder (one run folder per
trial, each with metrics.jsonl), this prints Spearman's rank correlation between the final
validation accuracy and each epoch's val_acc, val_loss, train_loss and train_acc; then it replays
the plugin's own halving rule (`halving_keeps`, trials in their order, each judged against every
earlier trial at the rung) on these curves, ranking at the rungs by val_acc and by val_loss, and
prints what each would have kept: the best final val accuracy (points below the study's best) and
the share of the study's training FLOPs. A replay keeps the sampler's choices fixed, so it measures
the rule alone, without the different trials a pruned study's sampler goes on to propose.

`--bound` asks whether any rule of halving's family could meet issue 26's single-objective target
(within 0.5 points of the best at <= 0.5 x the FLOPs) on all the given studies at once: every rule of
one or two rungs (epoch k, keep the top fraction f; ranked by val_acc or val_loss) is tried twice,
synchronously (each rung sees every trial of the study, as a pause-and-promote scheduler with all of
them started would) and asynchronously (trials in order, each judged against the ones before it, as
the sweeper does). The rules are picked with hindsight on the very studies they are scored on, so a
rule that passes here is the best case, not a finding; one that fails here fails for every rule.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from pathlib import Path

from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hydra_plugins.ft_optuna_sweeper.halving import halving_keeps, halving_rungs  # noqa: E402
from src.record.schema import EpochRecord  # noqa: E402
from src.reporting.runs import load_runs, trial_number  # noqa: E402

SIGNALS = {"val_acc": 1.0, "val_loss": -1.0, "train_loss": -1.0, "train_acc": 1.0}  # sign: higher is better


def trials(study: Path) -> list[tuple[list[EpochRecord], float]]:
    """Each completed trial's epochs and its training FLOPs, in trial order."""
    runs = sorted((r for r in load_runs([study]) if r.completed), key=lambda r: trial_number(r.dir) or 0)
    return [(r.metrics, r.result.train_flops) for r in runs]


def replay(curves: list[tuple[list[EpochRecord], float]], signal: str, after: int) -> tuple[float, float]:
    """Halving on these curves: (best kept final val_acc - best of all, in points; FLOPs share)."""
    epochs = len(curves[0][0])
    rungs = halving_rungs(after, epochs)
    reached: dict[int, list[tuple[float, float]]] = {r: [] for r in rungs}
    used = best = 0.0
    for metrics, flops in curves:
        stop = None
        for r in rungs:
            point = (SIGNALS[signal] * metrics[r].get(signal), 0.0)
            keeps = halving_keeps(point, reached[r], use_cost=False)
            reached[r].append(point)
            if not keeps:
                stop = r
                break
        if stop is None:
            used += flops
            best = max(best, metrics[-1].get("val_acc"))
        else:
            used += metrics[stop].get("train_flops_cum")  # what the trial had counted when the rule stopped it
    top = max(m[-1].get("val_acc") for m, _ in curves)
    return 100 * (best - top), used / sum(f for _, f in curves)


FRACTIONS = (0.1, 0.15, 0.2, 0.25, 0.3, 1 / 3, 0.4, 0.5)  # the keep fractions --bound tries at a rung
TARGET_POINTS, TARGET_SHARE = 0.5, 0.5  # issue 26: within 0.5 points of the best, at <= 0.5 x the FLOPs


def ranked(metrics: list[EpochRecord], epoch: int, signal: str) -> float:
    """Higher is better at `epoch` (0-based) by `signal`."""
    return SIGNALS[signal] * metrics[epoch].get(signal)


def rule_outcome(curves: list[tuple[list[EpochRecord], float]], rule: list[tuple[int, float]], signal: str,
                 synchronous: bool) -> tuple[float, float]:
    """One rule (rungs of (0-based epoch, keep fraction)) on one study: (best kept final val_acc -
    best of all, in points; FLOPs share). Synchronous: a rung ranks everyone still running;
    asynchronous: a trial is judged against the earlier trials that reached the rung."""
    stopped: dict[int, int] = {}  # trial index -> the rung's epoch it stopped at
    if synchronous:
        alive = list(range(len(curves)))
        for epoch, keep in rule:
            alive.sort(key=lambda i: -ranked(curves[i][0], epoch, signal))
            quota = max(1, math.ceil(keep * len(alive)))
            stopped.update((i, epoch) for i in alive[quota:])
            alive = alive[:quota]
    else:
        reached: dict[int, list[float]] = {epoch: [] for epoch, _ in rule}
        for i, (metrics, _) in enumerate(curves):
            for epoch, keep in rule:
                value = ranked(metrics, epoch, signal)
                quota = max(1, int(keep * (len(reached[epoch]) + 1)))
                ahead = sum(v > value for v in reached[epoch])
                reached[epoch].append(value)
                if ahead >= quota:
                    stopped[i] = epoch
                    break
    used = sum(m[stopped[i]].get("train_flops_cum") if i in stopped else f for i, (m, f) in enumerate(curves))
    kept = max(m[-1].get("val_acc") for i, (m, _) in enumerate(curves) if i not in stopped)
    top = max(m[-1].get("val_acc") for m, _ in curves)
    return 100 * (kept - top), used / sum(f for _, f in curves)


def keeping_rules(studies: list[list[tuple[list[EpochRecord], float]]], rules: list[list[tuple[int, float]]],
                  synchronous: bool) -> list[tuple[float, str, list[tuple[int, float]], list[tuple[float, float]]]]:
    """The rules that keep a trial within the target's points of the best on every study, cheapest
    first: (worst FLOPs share, signal, rule, each study's outcome)."""
    passing = []
    for signal, rule in itertools.product(("val_acc", "val_loss"), rules):
        outcomes = [rule_outcome(c, rule, signal, synchronous) for c in studies]
        if all(d >= -TARGET_POINTS - 1e-9 for d, _ in outcomes):
            passing.append((max(share for _, share in outcomes), signal, rule, outcomes))
    return sorted(passing, key=lambda p: p[0])


def bound(studies: list[list[tuple[list[EpochRecord], float]]]) -> None:
    """Every rule of one or two rungs on every study: how many meet the target on all, and the best;
    then the rule picked on all studies but one, scored on that one."""
    epochs = min(len(c[0][0]) for c in studies)
    rules = [[(e, f)] for e in range(epochs - 1) for f in FRACTIONS]
    rules += [[(e1, f1), (e2, f2)] for e1, e2 in itertools.combinations(range(epochs - 1), 2)
              for f1 in FRACTIONS for f2 in FRACTIONS]

    def rungs(rule: list[tuple[int, float]]) -> str:
        return ", ".join(f"epoch {e + 1} keep {f:.2f}" for e, f in rule)

    for synchronous in (True, False):
        passing = keeping_rules(studies, rules, synchronous)
        meets = [p for p in passing if p[0] <= TARGET_SHARE]
        name = "synchronous (every trial reaches each rung first)" if synchronous else "asynchronous (as the sweeper runs)"
        print(f"{name}: {len(meets)} of {2 * len(rules)} rules meet the target on all {len(studies)} studies; "
              f"{len(passing)} keep the best within {TARGET_POINTS} pt")
        for worst, signal, rule, outcomes in (meets or passing)[:3]:
            cells = "; ".join(f"{d:+.2f} pt at {s:.3f}" for d, s in outcomes)
            print(f"  by {signal}, {rungs(rule)}: {cells} (worst share {worst:.3f})")
        # Out of sample: the rule a user would have picked on the other studies, scored on this one.
        for held in range(len(studies) if len(studies) > 2 else 0):
            picked = keeping_rules([c for i, c in enumerate(studies) if i != held], rules, synchronous)
            if not picked:
                print(f"  picked on the others, study {held + 1}: no rule keeps their best")
                continue
            _, signal, rule, _ = picked[0]
            d, share = rule_outcome(studies[held], rule, signal, synchronous)
            print(f"  picked on the others (by {signal}, {rungs(rule)}), scored on study {held + 1}: {d:+.2f} pt at {share:.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("studies", type=Path, nargs="+")
    parser.add_argument("--rung", type=int, default=2, help="halving's first rung (the sweeper's pruner.after)")
    parser.add_argument("--bound", action="store_true",
                        help="try every rule of one or two rungs in hindsight against the single-objective target")
    args = parser.parse_args()
    if args.bound:
        bound([trials(s) for s in args.studies])
        return 0
    for study in args.studies:
        curves = trials(study)
        if len(curves) < 3:
            print(f"{study}: {len(curves)} completed trials, too few", file=sys.stderr)
            return 2
        final = [m[-1].get("val_acc") for m, _ in curves]
        print(f"{study} ({len(curves)} trials, {len(curves[0][0])} epochs): Spearman with the final val_acc")
        print("| epoch | " + " | ".join(SIGNALS) + " |")
        print("|---|" + "---|" * len(SIGNALS))
        for e in range(len(curves[0][0]) - 1):
            cells = [f"{spearmanr([s * m[e].get(k) for m, _ in curves], final)[0]:.2f}"
                     if curves[0][0][e].get(k) is not None else "-"
                     for k, s in SIGNALS.items()]
            print(f"| {e + 1} | " + " | ".join(cells) + " |")
        for signal in ("val_acc", "val_loss"):
            delta, share = replay(curves, signal, args.rung)
            print(f"halving replayed, ranked by {signal} at the rungs: best {delta:+.2f} pt, FLOPs {share:.3f} of the study's")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
