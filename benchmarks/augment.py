"""Augmentation presets: their own cost per batch, and what `standard` does to each strategy.

    python benchmarks/augment.py [--out bench-out/augment] [--batch 16] [--threads N] [train overrides ...]
    python benchmarks/augment.py --from DIR      # the table of a multirun already done, e.g. of
        python -m src.train -m strategy=frozen,full,layerwise dataset.augment=none,standard

1. Each preset (src/data/augment.py) alone on a batch of uint8 images on the device (CUDA when
   there is one): milliseconds per batch and images per second, at 96 and 224 px.
2. The default study (EfficientNet-Lite0 on digits, 96 px, 6 epochs) with dataset.augment=none and
   standard for each of frozen, full and layerwise, through `run()`: val and test accuracy, train
   FLOPs (the model's only: augmentation is not counted), train time (augmentation included) and
   whether the frozen-feature cache was used. About 20 min on 2 free CPU cores; `--skip-study`
   leaves it out, and `trainer.epochs=3` (an override) shortens it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from src.data.augment import PRESETS, preset
from src.record.io import find_results
from src.training.run import run

REPO = Path(__file__).resolve().parents[1]
STRATEGIES = ("frozen", "full", "layerwise")


def preset_costs(batch: int, sizes: tuple[int, ...] = (96, 224), repeats: int = 20) -> None:
    """Print each preset's time per batch on the device."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\n| preset ({name}, batch {batch}) | " + " | ".join(f"{s} px: ms/batch, images/s" for s in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    for key in PRESETS:
        cells = []
        for size in sizes:
            x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
            generator = torch.Generator().manual_seed(0)
            preset(key).apply(x, generator, True)  # warm-up: lazy initialisation, kernel selection
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(repeats):
                preset(key).apply(x, generator, True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = (time.perf_counter() - start) / repeats
            cells.append(f"{1000 * seconds:.2f}, {batch / seconds:,.0f}")
        print(f"| {key} | " + " | ".join(cells) + " |")


def study(out: Path, overrides: list[str]) -> None:
    """Run each strategy with augment none and standard."""
    from hydra import compose, initialize_config_dir

    from src.gate import install, to_run_config

    for strategy in STRATEGIES:
        for augment in ("none", "standard"):
            install()  # the schemas and resolvers Hydra composes with
            with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
                cfg = compose("config", overrides=[f"strategy={strategy}", f"dataset.augment={augment}", "logger=none",
                                                   "trainer.progress=false", *overrides])
            run(to_run_config(cfg), out / f"{strategy}_{augment}")


def table(root: Path) -> None:
    """Print the accuracy and cost of every completed run under `root`, strategy by strategy."""
    results = [r for _, r in find_results([root]) if r.completed]
    results.sort(key=lambda r: (STRATEGIES.index(r.strategy) if r.strategy in STRATEGIES else 9, r.augment or "", r.seed))
    print("\n| strategy | augment | epochs | val acc | test acc | train FLOPs | train s | images/s | feature cache |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        flops = f"{r.train_flops / 1e12:.2f} T" if r.train_flops is not None else "-"
        print(f"| {r.strategy} | {r.augment or 'none'} | {r.epochs} | {r.val_acc:.4f} | {r.test_acc:.4f} | {flops} | "
              f"{r.train_time_s:.0f} | {r.images_per_s:.0f} | {'on' if r.feature_cache else 'off'} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench-out" / "augment")
    parser.add_argument("--from", dest="source", type=Path, help="print the table of the runs under this folder")
    parser.add_argument("--batch", type=int, default=16, help="batch size of the preset timings (the default study's)")
    parser.add_argument("--skip-study", action="store_true")
    parser.add_argument("--threads", type=int, help="CPU threads of the preset timings (torch's default otherwise)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.source:
        table(args.source)
        return 0
    preset_costs(args.batch)
    if not args.skip_study:
        study(args.out, args.overrides)
        table(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
