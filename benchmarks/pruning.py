"""Pruning on vs off: the same sweep (same seed, same trial budget) with and without stopping trials.

    python benchmarks/pruning.py [--trials 20] [--out sweeps-out/pruning-bench] [train overrides ...]

Runs four studies of the default sweep (sweeps/default.yaml) — multi-objective (val_acc vs
train_flops, our `dominated` rule) and single-objective (val_acc, Optuna's median pruner), each
with pruning on and off — then prints a markdown table: epochs trained, the drop with pruning,
and the best validation accuracy. A study that already finished is read back, not re-run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES = (
    # name, objectives, pruner when on
    ("multi", "[val_acc,train_flops]", "dominated"),
    ("single", "[val_acc]", "median"),
)


def run_study(out: Path, name: str, objectives: str, pruner: str, trials: int, extra: list[str]) -> dict:
    study_dir = out / name
    summary = study_dir / "summary.json"
    timing = study_dir / "wall_s.json"
    if not (summary.is_file() and json.loads(summary.read_text())["trials"] >= trials and timing.is_file()):
        cmd = [sys.executable, "-m", "src.sweep", f"sweep.study_name=bench-{name}", f"sweep.out_dir={study_dir}",
               f"sweep.n_trials={trials}", f"sweep.objectives={objectives}", f"sweep.pruner.name={pruner}", *extra]
        print("+", " ".join(cmd[1:]), flush=True)
        start = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, check=True)
        timing.write_text(json.dumps({"wall_s": time.perf_counter() - start}))
    return json.loads(summary.read_text()) | json.loads(timing.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--out", type=Path, default=REPO / "sweeps-out" / "pruning-bench")
    parser.add_argument("overrides", nargs="*", help="training overrides, as for src.sweep")
    args = parser.parse_args()
    rows = []
    for case, objectives, pruner in CASES:
        off = run_study(args.out, f"{case}-off", objectives, "none", args.trials, args.overrides)
        on = run_study(args.out, f"{case}-on", objectives, pruner, args.trials, args.overrides)
        for label, s in (("off", off), (pruner, on)):
            rows.append((case, label, s, off))
    print("\n| objectives | pruner | trials (complete / pruned) | epochs trained | vs off | best val acc | Δ vs off | wall |")
    print("|---|---|---|---|---|---|---|---|")
    for case, label, s, off in rows:
        st = s["states"]
        print(
            f"| {case} | {label} | {s['trials']} ({st.get('complete', 0)} / {st.get('pruned', 0)}) | "
            f"{s['epochs_trained']} of {s['epochs_unpruned']} | {s['epochs_trained'] / off['epochs_trained'] - 1:+.0%} | "
            f"{s['best_val_acc']:.4f} (trial {s['best_trial']}) | {100 * (s['best_val_acc'] - off['best_val_acc']):+.2f} pt | "
            f"{s['wall_s'] / 60:.1f} min |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
