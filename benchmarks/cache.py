"""Frozen backbone with and without the feature cache: per-epoch time, cost and accuracy.

    python benchmarks/cache.py [--out bench-out/cache] [train overrides ...]

Runs the frozen strategy twice through `run()` with the default config (EfficientNet-Lite0 on
digits, 96 px, 6 epochs): `trainer.feature_cache=off`, then `on`. Prints, from their metrics.jsonl
and result.json: the first epoch's time (the cached run's includes nothing of the backbone pass,
which is reported apart), the median time of the later epochs, the speed-up, train FLOPs and
test accuracy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

from src.record.io import read_jsonl
from src.training.run import run
from src.gate import install, to_run_config

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench-out" / "cache")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    rows = {}
    for mode in ("off", "on"):
        install()  # the schemas and resolvers Hydra composes with
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=["strategy=frozen", "logger=none", "trainer.progress=false",
                                               f"trainer.feature_cache={mode}", *args.overrides])
        result = run(to_run_config(cfg), args.out / mode)
        metrics = read_jsonl(args.out / mode / "metrics.jsonl")
        rows[mode] = (result, [m["epoch_train_s"] for m in metrics])
    off_later = statistics.median(rows["off"][1][1:])
    print("\n| frozen backbone | backbone pass (s) | epoch 1 (s) | later epochs, median (s) | later epochs vs no cache | train FLOPs | train s | test acc |")
    print("|---|---|---|---|---|---|---|---|")
    for mode, (r, epochs) in rows.items():
        later = statistics.median(epochs[1:])
        backbone = r["train_time_s"] - sum(epochs) if mode == "on" else 0.0
        print(f"| feature_cache={mode} | {backbone:.2f} | {epochs[0]:.3f} | {later:.4f} | {off_later / later:.0f}x faster | "
              f"{r['train_flops'] / 1e9:.1f} G | {r['train_time_s']:.1f} | {r['test_acc']:.4f} |")
    diff = 100 * (rows["on"][0]["test_acc"] - rows["off"][0]["test_acc"])
    print(f"test accuracy, cache - no cache: {diff:+.2f} pt")
    json.dump({m: r for m, (r, _) in rows.items()}, open(args.out / "results.json", "w"), indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
