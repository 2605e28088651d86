"""Does halving keep the front? Pruned vs unpruned studies on the same sampler seeds, by hypervolume.

    python benchmarks/pruning_hypervolume.py [--seeds 0 1 2] [--trials 10] [--cases multi single]
        [--out sweeps-out/pruning-hv] [--ref-flops F] [train overrides ...]

For each sampler seed, runs the default sweep (sweeps/default.yaml) with `pruner.name=halving` and
with `none`, and compares them:
- multi (val_acc vs train_flops): the hypervolume of the completed trials' (val accuracy, training
  FLOPs) points, against one reference point for every study in the table: accuracy 0 and
  `--ref-flops` (default: 1.1 x the dearest completed trial of all the studies in the table, printed
  with it); and the training FLOPs every trial used, pruned ones included. Target (issue 26):
  pruned HV >= 0.95 x unpruned HV at <= 0.5 x its FLOPs.
- single (val_acc): the best validation accuracy and the FLOPs. Target: within 0.5 points at
  <= 0.5 x the FLOPs.

The default overrides make each study small (a reduced setting, not `make sweep`): 32 px digits,
20 training images per class, 4 epochs (`--epochs`; at 4 halving judges once, after epoch 2, so a
pruned trial saves at most half its FLOPs), no drift probe, no
feature cache (every epoch costs what it says), one thread, no logger. A study already finished is
read back, not run again, so the command resumes; the table (OUT/table.md) is rewritten after every study.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OBJECTIVES = {"multi": "[val_acc,train_flops]", "single": "[val_acc]"}
SMALL = ["dataset.image_size=32", "dataset.train_per_class=20", "trainer.drift_probe=0", "trainer.feature_cache=off",
         "trainer.num_threads=1", "logger=none"]


def hypervolume_2d(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    """The area dominated by (accuracy up, cost down) points and bounded by `ref` = (lowest accuracy,
    highest cost): the union of the rectangles [cost, ref cost] x [ref accuracy, accuracy]."""
    inside = sorted((c, a) for a, c in points if a > ref[0] and c < ref[1])
    area, best = 0.0, ref[0]
    # A point covers every cost from its own up to the reference: walk by rising cost, and the strip
    # up to the next point's cost is covered to the best accuracy seen so far.
    for (cost, acc), nxt in zip(inside, [c for c, _ in inside[1:]] + [ref[1]]):
        best = max(best, acc)
        area += (nxt - cost) * (best - ref[0])
    return area


def run_study(out: Path, case: str, pruner: str, seed: int, trials: int, epochs: int, extra: list[str]) -> Path:
    name = f"{case}-{pruner}-s{seed}"
    study_dir = out / name
    summary = study_dir / "summary.json"
    if summary.is_file() and sum(json.loads(summary.read_text())["states"].get(s, 0) for s in ("complete", "pruned")) >= trials:
        return study_dir
    cmd = [sys.executable, "-m", "src.train", "-m", "sweep=default", f"hydra.sweeper.study_name=hv-{name}",
           f"hydra.sweep.dir={study_dir}", f"hydra.sweeper.n_trials={trials}",
           f"hydra.sweeper.objectives={OBJECTIVES[case]}", f"hydra.sweeper.pruner.name={pruner}",
           f"hydra.sweeper.sampler.seed={seed}", f"trainer.epochs={epochs}", *SMALL, *extra]
    print("+", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)
    return study_dir


def read_study(study_dir: Path) -> dict:
    """The study's summary and its completed trials' (val_acc, train_flops) points."""
    points = []
    for result in sorted(study_dir.glob("*/result.json")):
        r = json.loads(result.read_text())
        if r.get("status") == "completed" and r.get("train_flops"):
            points.append((float(r["val_acc"]), float(r["train_flops"])))
    summary = json.loads((study_dir / "summary.json").read_text())
    # The selected trial's test accuracy: the best validation accuracy of many trials is biased upward
    # (the winner's curse, more so the more trials completed), the test set was selected on by no one.
    chosen = sorted(study_dir.glob(f"{summary['best_trial']}_*/result.json"))
    test = json.loads(chosen[0].read_text()).get("test_acc") if chosen else None
    return summary | {"points": points, "best_test_acc": test}


def table(out: Path, seeds: list[int], cases: list[str], ref_flops: float | None) -> str:
    done = {}
    for case in cases:
        for seed in seeds:
            for pruner in ("none", "halving"):
                if (out / f"{case}-{pruner}-s{seed}" / "summary.json").is_file():
                    done[case, pruner, seed] = read_study(out / f"{case}-{pruner}-s{seed}")
    dearest = max((c for s in done.values() for _, c in s["points"]), default=0.0)
    ref = (0.0, ref_flops or 1.1 * dearest)
    lines = [f"Reference point: val acc 0, train FLOPs {ref[1]:.4g}.", "",
             "| objectives | seed | pruner | trials (complete / pruned) | epochs | best val acc | Δ best | its test acc | Δ test | HV (acc × GFLOPs) | HV ratio | train FLOPs | FLOPs ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (case, pruner, seed), s in done.items():
        off = done.get((case, "none", seed))
        hv = hypervolume_2d(s["points"], ref)
        st = s["states"]
        row = [case, str(seed), pruner, f"{s['trials']} ({st.get('complete', 0)} / {st.get('pruned', 0)})",
               f"{s['epochs_trained']} of {s['epochs_unpruned']}", f"{s['best_val_acc']:.4f}",
               f"{100 * (s['best_val_acc'] - off['best_val_acc']):+.2f} pt" if off else "",
               f"{s['best_test_acc']:.4f}" if s["best_test_acc"] is not None else "",
               f"{100 * (s['best_test_acc'] - off['best_test_acc']):+.2f} pt"
               if off and None not in (s["best_test_acc"], off["best_test_acc"]) else "",
               f"{hv / 1e9:.2f}" if case == "multi" else "",
               f"{hv / hypervolume_2d(off['points'], ref):.3f}" if off and case == "multi" else "",
               f"{s['total_train_flops'] / 1e12:.3f} T",
               f"{s['total_train_flops'] / off['total_train_flops']:.3f}" if off else ""]
        lines.append("| " + " | ".join(row) + " |")
    for case in cases:  # the targets, per seed: every seed must meet them, not only their mean
        pairs = [(done[case, "halving", s], done[case, "none", s]) for s in seeds
                 if (case, "halving", s) in done and (case, "none", s) in done]
        if not pairs:
            continue
        flops = [on["total_train_flops"] / off["total_train_flops"] for on, off in pairs]
        if case == "multi":
            hv = [hypervolume_2d(on["points"], ref) / hypervolume_2d(off["points"], ref) for on, off in pairs]
            met = sum(h >= 0.95 and f <= 0.5 for h, f in zip(hv, flops))
            lines.append(f"\n{case}: HV ratio {min(hv):.3f}–{max(hv):.3f}, FLOPs ratio {min(flops):.3f}–{max(flops):.3f} "
                         f"over {len(pairs)} seeds; target (HV >= 0.95 at FLOPs <= 0.5) met on {met} of {len(pairs)}.")
        else:
            gap = [100 * (on["best_val_acc"] - off["best_val_acc"]) for on, off in pairs]
            met = sum(g >= -0.5 and f <= 0.5 for g, f in zip(gap, flops))
            tests = [100 * (on["best_test_acc"] - off["best_test_acc"]) for on, off in pairs
                     if None not in (on["best_test_acc"], off["best_test_acc"])]
            if tests:
                lines.append(f"\n{case}: the selected trial's test accuracy, pruned minus unpruned: "
                             f"{min(tests):+.2f} to {max(tests):+.2f} pt over {len(tests)} seeds.")
            lines.append(f"\n{case}: best Δ {min(gap):+.2f} to {max(gap):+.2f} pt, FLOPs ratio {min(flops):.3f}–{max(flops):.3f} "
                         f"over {len(pairs)} seeds; target (within 0.5 pt at FLOPs <= 0.5) met on {met} of {len(pairs)}.")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=4, help="per trial; halving judges after 2, 6, 18, ...")
    parser.add_argument("--cases", nargs="+", choices=sorted(OBJECTIVES), default=["multi", "single"])
    parser.add_argument("--out", type=Path, default=REPO / "sweeps-out" / "pruning-hv")
    parser.add_argument("--ref-flops", type=float, default=None)
    parser.add_argument("--table-only", action="store_true", help="read finished studies back, run nothing")
    parser.add_argument("overrides", nargs="*", help="more training overrides, after the small defaults")
    args = parser.parse_args()
    for case in args.cases:
        for seed in args.seeds:
            for pruner in ("none", "halving"):
                if not args.table_only:
                    run_study(args.out, case, pruner, seed, args.trials, args.epochs, args.overrides)
                text = table(args.out, args.seeds, args.cases, args.ref_flops)
                args.out.mkdir(parents=True, exist_ok=True)
                (args.out / "table.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
