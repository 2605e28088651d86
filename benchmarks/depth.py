"""Cost against unfreeze depth: partial fine-tuning pays only for what trains.

    python benchmarks/depth.py [--epochs 1] [--out bench-out/depth] [train overrides ...]

Layer-wise fine-tuning of the default model and data with `strategy.unfreeze_depth=k` for every k
from 0 (head only) to the model's backbone group count, plus the frozen strategy with its
feature cache for comparison. Backward stops at the lowest trainable group (its inputs need no
gradient), so counted FLOPs and measured time per epoch must rise with k. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import timm
from hydra import compose, initialize_config_dir

from src.training.run import run
from src.strategies import layer_groups
from src.gate import install, to_run_config

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "bench-out" / "depth")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    def compose_run(extra: list[str]):
        install()  # the schemas and resolvers Hydra composes with
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            return compose("config", overrides=["logger=none", "trainer.progress=false", f"trainer.epochs={args.epochs}",
                                                "optim.warmup_epochs=0", "trainer.feature_cache=off", *args.overrides, *extra])

    base = compose_run(["strategy=layerwise"])
    groups = len(layer_groups(timm.create_model(base.model.name, pretrained=False, num_classes=2), base.strategy.granularity)) - 1
    print("| unfreeze_depth | trainable params | train FLOPs / image | train time / epoch (s) | images/s | test acc |")
    print("|---|---|---|---|---|---|")
    for k in range(groups + 1):
        r = run(to_run_config(compose_run(["strategy=layerwise", f"strategy.unfreeze_depth={k}"])), args.out / f"depth_{k}")
        n = r["train_samples"] * args.epochs
        print(f"| {k}{' (all)' if k == groups else ''} | {r['trainable_params']:,} | {r['train_flops'] / n / 1e9:.3f} G | "
              f"{r['train_time_s'] / args.epochs:.1f} | {r['images_per_s']:.0f} | {r['test_acc']:.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
