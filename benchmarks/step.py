"""Our training step against a minimal hand-written PyTorch loop: same model, batch, data, process.

    python benchmarks/step.py [--model tf_efficientnet_lite0] [--image-size 96] [--batch 16]
                              [--steps 30] [--rounds 5] [--strategy full] [--threads N]
                              [--layout channels_last|channels-first] [--device cuda --amp]

"Ours" is the code path `run()` uses: `data.Batches` (uint8 images normalised per batch), the
strategy's layer groups with one optimizer param group per group and decay/no-decay split, the
warmup-cosine LambdaLR stepped every step, and `engine.train_one_epoch`. "Plain" is what a careful
engineer writes by hand: images normalised once up front, `AdamW(model.parameters())`, and
forward / zero_grad / backward / step. Both start from the same weights; rounds alternate between
them so that machine drift hits both alike. Prints images/s (median over rounds) and the ratio.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from src.training import engine
from src.config import RunConfig
from src.data.batches import Batches
from src.data.load import load_dataset
from src.measurement.flops import analytic_step_flops, counted_step_flops
from src.models import build_model, normalization
from src.training.optim import build_optimizer, build_scheduler, param_groups
from src.strategies import apply_epoch, layer_groups, plan_schedule


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tf_efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=30, help="steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--strategy", default="full", choices=("full", "layerwise"),
                        help="strategies that train every layer (the plain loop trains all parameters)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast in both loops (CUDA)")
    parser.add_argument("--layout", default="channels_last", choices=("channels_last", "channels-first"),
                        help="both loops' memory layout (run()'s default, trainer.channels_last=auto: channels_last)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = RunConfig.from_dict({
        "model": {"name": args.model, "pretrained": args.model == "tf_efficientnet_lite0"},
        "dataset": {"kind": "digits", "image_size": args.image_size},
        "strategy": {"name": args.strategy},
        "trainer": {"batch_size": args.batch, "epochs": 6, "progress": False, "feature_cache": "off"},
        "logger": {"kind": "none"},
    })
    device = torch.device(args.device)
    amp_dtype = torch.bfloat16 if args.amp else None
    last = args.layout == "channels_last"
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    data = load_dataset(cfg.dataset)
    n = args.steps * args.batch
    base = build_model(cfg.model, data.num_classes)

    # --- ours: the objects run() builds, stepped by engine.train_one_epoch
    base.to(device)
    if last:
        base.to(memory_format=torch.channels_last)
    ours = copy.deepcopy(base)
    groups = layer_groups(ours, cfg.strategy.granularity)
    schedule = plan_schedule(cfg.strategy, groups, cfg.optim.lr, cfg.trainer.epochs)
    apply_epoch(ours, groups, schedule, 0)
    opt = build_optimizer(cfg.optim, param_groups(ours, groups, schedule, cfg.optim.weight_decay))
    train = Batches(data.train, args.batch, norm=normalization(ours), device=device, shuffle=True, seed=0,
                    channels_last=last)
    sched = build_scheduler(opt, cfg.optim, schedule, len(train))

    class FirstSteps:  # the first `n` images of each shuffled epoch: equal work per round
        def __iter__(self):
            seen = 0
            for x, y in train:
                if seen >= n:
                    return
                seen += len(y)
                yield x, y

    # --- plain: pre-normalised float tensors, one param group
    plain = copy.deepcopy(base).train()
    norm = normalization(plain)
    mean = torch.tensor(norm.mean).view(1, 3, 1, 1)
    std = torch.tensor(norm.std).view(1, 3, 1, 1)
    images = data.train.images.float().div(255)
    images = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
    images = ((images - mean) / std).contiguous().to(device)
    if last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = data.train.labels.to(device)
    plain_opt = torch.optim.AdamW(plain.parameters(), lr=cfg.optim.lr,
                                  weight_decay=cfg.optim.weight_decay)

    def plain_round() -> float:
        sync()
        start = time.perf_counter()
        order = torch.randperm(len(labels), device=device)
        for i in range(0, n, args.batch):
            idx = order[i : i + args.batch]
            with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = F.cross_entropy(plain(images[idx]), labels[idx])
            plain_opt.zero_grad(set_to_none=True)
            loss.backward()
            plain_opt.step()
        sync()
        return n / (time.perf_counter() - start)

    def ours_round() -> float:
        stats = engine.train_one_epoch(ours, FirstSteps(), opt, sched, device, amp_dtype)
        return stats.samples / stats.seconds

    ours_round(), plain_round()  # warm-up: allocator, thread pool, first-call overheads
    speeds: dict[str, list[float]] = {"ours": [], "plain": []}
    for r in range(args.rounds):
        pair = (("ours", ours_round), ("plain", plain_round)) if r % 2 == 0 else (("plain", plain_round), ("ours", ours_round))
        for name, fn in pair:
            speeds[name].append(fn())
    o, p = statistics.median(speeds["ours"]), statistics.median(speeds["plain"])
    counted = counted_step_flops(ours, (3, args.image_size, args.image_size), data.num_classes)
    analytic = analytic_step_flops(ours, (3, args.image_size, args.image_size))
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{args.model} {args.strategy} fine-tuning, {args.image_size} px, batch {args.batch}, {where}"
          f"{', bf16' if args.amp else ''}, {args.layout}, {args.rounds} rounds x {args.steps} steps")
    print("| loop | images/s (median) | rounds |")
    print("|---|---|---|")
    print(f"| ours (run()'s step) | {o:.1f} | {', '.join(f'{v:.1f}' for v in speeds['ours'])} |")
    print(f"| plain PyTorch | {p:.1f} | {', '.join(f'{v:.1f}' for v in speeds['plain'])} |")
    print(f"throughput ratio ours / plain: {o / p:.3f}")
    print(f"train FLOPs per image: counted {counted.total / 1e9:.3f} G (forward {counted.forward / 1e9:.3f} G, "
          f"backward/forward {counted.backward / counted.forward:.2f}); analytic {analytic.total / 1e9:.3f} G; "
          f"counted/analytic {counted.total / analytic.total:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
