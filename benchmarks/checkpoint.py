"""What an epoch checkpoint costs on the default study: its size and the time of writing it.

    python benchmarks/checkpoint.py [--out bench-out/checkpoint] [--repeat 5]

For layerwise and full (the whole model, its AdamW moments) and frozen with the feature cache (the
head only), on the default config (EfficientNet-Lite0, digits, 96 px): the run's setup, one
optimizer step (so the optimizer holds its moments, as after any epoch), then `checkpoint.snapshot`
+ `checkpoint.save` (write, fsync, rename, fsync of the folder) `--repeat` times. Prints the size and
the median time; compare with an epoch's `epoch_train_s + epoch_val_s` in a run's metrics.jsonl
(docs/resume.md).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch.nn.functional as F

import src.strategies  # noqa: F401  (registers the strategies' configs)
from src.config import RunConfig
from src.strategies import apply_epoch
from src.training import checkpoint
from src.training.meters import Meters, Progress
from src.training.setup import setup


def measure(strategy: str, head_only: bool, out: Path, repeat: int) -> str:
    cfg = RunConfig.from_dict({"strategy": {"name": strategy}, "logger": {"kind": "none"}, "trainer": {"progress": False}})
    s = setup(cfg, out)
    apply_epoch(s.model, s.groups, s.schedule, 0)
    x, y = next(iter(s.train))
    F.cross_entropy(s.model(x), y).backward()
    s.optimizer.step()
    s.scheduler.step()
    meters = Meters.start(True, s.num_classes, "best_val", Progress())
    meters.best.update(0, 0.5, s.model)
    times = []
    for _ in range(repeat):  # epoch 0 each time: the selected weights are the model's own, not stored twice
        start = time.perf_counter()
        path = checkpoint.save(out, checkpoint.snapshot(cfg, s, meters, 0, None, head_only=head_only), 1)
        times.append(time.perf_counter() - start)
    return (f"{strategy}{' (head only)' if head_only else ''}: {path.stat().st_size / 2**20:.1f} MiB, "
            f"{statistics.median(times):.3f} s median (min {min(times):.3f}, max {max(times):.3f}) over {repeat}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-out/checkpoint"))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    for strategy, head_only in (("layerwise", False), ("full", False), ("frozen", True)):
        print(measure(strategy, head_only, args.out / strategy, args.repeat), flush=True)


if __name__ == "__main__":
    main()
