"""Memory layout on CPU: run()'s training step and evaluation, channels-first against channels_last.

    python benchmarks/layout.py [--sizes 64 96 224] [--depths 8 4 0] [--rounds 3] [--threads N]

Why it exists: `trainer.channels_last=auto` picks the layout, and the choice must rest on a
measurement with the pinned torch, not on folklore (channels_last was slower on this CPU with an
older torch, and faster with 2.14). For each image size and `strategy.unfreeze_depth` (8: every
group, the default layer-wise study; 0: the head alone, feature cache off) it builds the objects
run() builds (pretrained Lite0, the strategy's param groups, the LR schedule, `data.Batches`) twice
from the same weights, one per layout, and times `engine.train_one_epoch` on the same first steps
of each epoch and `engine.evaluate` on the validation split, in rounds that alternate the order.
Prints images/s (median of the rounds) and the ratio channels_last / channels-first.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import torch

from src.config import RunConfig
from src.data.batches import Batches
from src.data.load import load_dataset
from src.models import build_model, normalization
from src.strategies import apply_epoch, layer_groups, plan_schedule
from src.training import engine
from src.training.optim import build_optimizer, build_scheduler, param_groups

LAYOUTS = ("channels-first", "channels_last")


def setup(size: int, depth: int, batch: int, steps: int):
    """One (model, optimizer, scheduler, train batches, val batches) per layout, from the same weights."""
    cfg = RunConfig.from_dict({
        "dataset": {"kind": "digits", "image_size": size},
        "strategy": {"name": "layerwise", "unfreeze_depth": depth},
        "trainer": {"batch_size": batch, "progress": False, "feature_cache": "off"},
        "logger": {"kind": "none"},
    })
    data = load_dataset(cfg.dataset)
    torch.manual_seed(0)
    base = build_model(cfg.model, data.num_classes)
    cpu = torch.device("cpu")
    built = {}
    for layout in LAYOUTS:
        last = layout == "channels_last"
        model = copy.deepcopy(base)
        if last:
            model.to(memory_format=torch.channels_last)
        groups = layer_groups(model, cfg.strategy.granularity)
        schedule = plan_schedule(cfg.strategy, groups, cfg.optim.lr, cfg.trainer.epochs)
        apply_epoch(model, groups, schedule, 1)  # past the warmup epoch: the schedule's steady state
        opt = build_optimizer(cfg.optim, param_groups(model, groups, schedule, cfg.optim.weight_decay))
        norm = normalization(model)
        train = Batches(data.train, batch, norm=norm, device=cpu, shuffle=True, seed=0, channels_last=last)
        val = Batches(data.val, cfg.trainer.eval_batch_size, norm=norm, device=cpu, channels_last=last)
        sched = build_scheduler(opt, cfg.optim, schedule, len(train))
        built[layout] = (model, opt, sched, _first(train, steps), val)
    return built


def _first(batches: Batches, steps: int):
    class First:  # the first `steps` batches of each shuffled epoch: the same work every round
        def __iter__(self):
            for i, b in enumerate(batches):
                if i == steps:
                    return
                yield b
    return First()


def measure(built, rounds: int) -> dict[str, dict[str, float]]:
    cpu = torch.device("cpu")

    def train_rate(layout: str) -> float:
        model, opt, sched, train, _ = built[layout]
        stats = engine.train_one_epoch(model, train, opt, sched, cpu)
        return stats.samples / stats.seconds

    def eval_rate(layout: str) -> float:
        stats = engine.evaluate(built[layout][0], built[layout][4], cpu)
        return stats.samples / stats.seconds

    for layout in LAYOUTS:  # warm-up: allocator, oneDNN primitives, first-call overheads
        train_rate(layout), eval_rate(layout)
    rates = {layout: {"train": [], "eval": []} for layout in LAYOUTS}
    for r in range(rounds):
        for layout in (LAYOUTS if r % 2 == 0 else LAYOUTS[::-1]):
            rates[layout]["train"].append(train_rate(layout))
            rates[layout]["eval"].append(eval_rate(layout))
    return {layout: {k: statistics.median(v) for k, v in kinds.items()} for layout, kinds in rates.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 224])
    parser.add_argument("--depths", type=int, nargs="+", default=[8, 4, 0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"median of {args.rounds} alternating rounds")
    print("| px | unfreeze_depth | train img/s first / last | ratio | eval img/s first / last | ratio |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        steps = max(4, round(20 * (64 / size) ** 2))  # about the same seconds per round at every size
        for depth in args.depths:
            got = measure(setup(size, depth, args.batch, steps), args.rounds)
            f, c = got["channels-first"], got["channels_last"]
            print(f"| {size} | {depth} | {f['train']:.0f} / {c['train']:.0f} | {c['train'] / f['train']:.2f} "
                  f"| {f['eval']:.0f} / {c['eval']:.0f} | {c['eval'] / f['eval']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
