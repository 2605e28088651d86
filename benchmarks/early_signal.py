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
"""

from __future__ import annotations

import argparse
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("studies", type=Path, nargs="+")
    parser.add_argument("--rung", type=int, default=2, help="halving's first rung (the sweeper's pruner.after)")
    args = parser.parse_args()
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
