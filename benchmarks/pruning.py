"""Pruning on vs off: the same sweep (same seed, same trial budget) with and without stopping trials.

    python benchmarks/pruning.py [--trials 20] [--out sweeps-out/pruning-bench] [train overrides ...]
    make bench-pruning      # = python benchmarks/pruning.py trainer.epochs=8 trainer.num_threads=1

Runs four studies of the default sweep (`make sweep`'s preset, sweeps/default.yaml) — multi-objective (val_acc vs
train_flops) and single-objective (val_acc), each with pruning (successive halving, the default
rule) on and off — then prints a markdown table: epochs trained, the drop with pruning,
the best validation accuracy, and the training FLOPs and time all trials used. A study that
already finished is read back, not re-run (and an unfinished one resumes).

Run it on a checkout that does not change while it runs: every trial composes the YAML in conf/
afresh, so editing the config during a bench mixes two versions of the code.
The feature cache is off in all four studies, so the frozen-backbone trials (unfreeze_depth=0)
cost the same whichever code version first ran them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES = (
    # name, objectives, pruner when on
    ("multi", "[val_acc,train_flops]", "halving"),
    ("single", "[val_acc]", "halving"),
)


def run_study(out: Path, name: str, objectives: str, pruner: str, trials: int, extra: list[str]) -> dict:
    study_dir = out / name
    summary = study_dir / "summary.json"
    done = summary.is_file() and sum(json.loads(summary.read_text())["states"].get(s, 0) for s in ("complete", "pruned")) >= trials
    if not done:
        cmd = [sys.executable, "-m", "src.train", "-m", "sweep=default", f"hydra.sweeper.study_name=bench-{name}",
               f"hydra.sweep.dir={study_dir}", f"hydra.sweeper.n_trials={trials}", f"hydra.sweeper.objectives={objectives}",
               f"hydra.sweeper.pruner.name={pruner}", "trainer.feature_cache=off", *extra]
        print("+", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, cwd=REPO, check=True)
    # FLOPs and training time of every trial, pruned ones included, from the run files
    flops = seconds = 0.0
    for result in study_dir.glob("*/result.json"):  # the trials' job folders (re-runs lie deeper)
        r = json.loads(result.read_text())
        partial = r.get("measured_before_stop", {})
        flops += r.get("train_flops") or partial.get("train_flops") or 0
        seconds += r.get("train_time_s") or partial.get("train_time_s") or 0
    return json.loads(summary.read_text()) | {"flops": flops, "train_s": seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--out", type=Path, default=REPO / "sweeps-out" / "pruning-bench")
    parser.add_argument("overrides", nargs="*", help="training overrides, as for make sweep")
    args = parser.parse_args()
    rows = []
    for case, objectives, pruner in CASES:
        off = run_study(args.out, f"{case}-off", objectives, "none", args.trials, args.overrides)
        on = run_study(args.out, f"{case}-on", objectives, pruner, args.trials, args.overrides)
        for label, s in (("off", off), (pruner, on)):
            rows.append((case, label, s, off))
    print("\n| objectives | pruner | trials (complete / pruned) | epochs trained | vs off | best val acc | Δ vs off | train FLOPs | train time |")
    print("|---|---|---|---|---|---|---|---|---|")
    for case, label, s, off in rows:
        st = s["states"]
        print(
            f"| {case} | {label} | {s['trials']} ({st.get('complete', 0)} / {st.get('pruned', 0)}) | "
            f"{s['epochs_trained']} of {s['epochs_unpruned']} | {s['epochs_trained'] / off['epochs_trained'] - 1:+.0%} | "
            f"{s['best_val_acc']:.4f} (trial {s['best_trial']}) | {100 * (s['best_val_acc'] - off['best_val_acc']):+.2f} pt | "
            f"{s['flops'] / 1e12:.2f} T ({s['flops'] / off['flops'] - 1:+.0%}) | {s['train_s'] / 60:.1f} min |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
