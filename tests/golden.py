"""The default study's golden values: how they are measured, and `python -m tests.golden` to store them.

Two kinds, because training the whole network amplifies rounding. A CPU with other vector
instructions (or another thread count, or oneDNN picking other kernels for its caches) rounds a
convolution differently in the last bits; every optimizer step feeds that difference back into
the weights. Measured on one host with the two memory layouts as the "other rounding": full
fine-tuning's step losses differ by 1e-7 at step 1, 1e-6 at step 4, 1e-4 by step 11, and 8-12 % by
the end of epoch 1 (136 steps). So:

- `first_steps`: the loss of each of the first STEPS optimizer steps of every strategy, which
  every host reproduces to well within 1e-4 (a 30x margin at step 4). They pin what a refactor can
  silently change: the head's initialisation, the data order and preprocessing, the loss, which
  parameters train and at which learning rate (full and layer-wise part by 2e-3 at step 2).
- `epochs`: the first two epochs' records, as the run writes them, per host (HOST_KEY): to 1e-4 they
  hold only where they were stored. On a host without its own, that check skips, saying how to store them.

`python -m tests.golden` measures both on this host and writes them into FIXTURE (another host's
epochs are kept); `python -m tests.golden --check` prints how far this host is from what is stored.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from src.config import RunConfig
from src.record.io import read_jsonl, write_text
from src.strategies import apply_epoch
from src.training import engine
from src.training.estimate import estimate
from src.training.run import run
from src.training.setup import setup

FIXTURE = Path(__file__).parent / "fixtures" / "golden_default_study.json"
STRATEGIES = ("frozen", "full", "layerwise")
STEPS = 4
EPOCH_KEYS = ("epoch", "train_loss", "val_loss", "val_acc", "val_balanced_acc", "train_flops_cum", "trainable_params")


def default_config(strategy: str) -> RunConfig:
    """The default study's config for one strategy (`python -m src.train strategy=...`), untracked."""
    return RunConfig.from_dict({"strategy": {"name": strategy}, "logger": {"kind": "none"},
                                "trainer": {"progress": False}})


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _caches() -> str:
    """The data caches' sizes, e.g. "L1d 32K L2 512K L3 32768K" (Linux's sysfs; "" elsewhere)."""
    sizes = []
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            kind, level, size = ((index / f).read_text().strip() for f in ("type", "level", "size"))
        except OSError:
            continue
        if kind != "Instruction":
            sizes.append(f"L{level}{'d' if kind == 'Data' else ''} {size}")
    return " ".join(sizes)


def host_key() -> str:
    """What decides a whole-network run's rounding here: torch, its vector instructions, the
    threads that split each reduction, and the CPU and its caches (oneDNN sizes its kernels'
    blocks to them)."""
    return (f"torch {torch.__version__.split('+')[0]}, {torch.backends.cpu.get_cpu_capability()}, "
            f"{torch.get_num_threads()} threads, {_cpu_model()}, {_caches() or 'caches unknown'}")


def first_two_epochs(strategy: str, run_dir: Path) -> list[dict[str, Any]]:
    """Epochs 0 and 1 of the default run: the full 6-epoch run stopped after epoch 1 by an `on_epoch`
    callback (stopping draws no random numbers, so these are the full run's first two epochs)."""
    result = run(default_config(strategy), run_dir,
                 on_epoch=lambda record: "golden: two epochs" if record.epoch == 1 else None)
    assert result["status"] == "pruned" and result["pruned_epoch"] == 1, result
    return read_jsonl(run_dir / "metrics.jsonl")


def first_steps(strategy: str, steps: int = STEPS) -> list[float]:
    """The training loss of each of the default run's first `steps` optimizer steps, on the whole model
    (a frozen run's feature cache is a different path to the same numbers). Wired as `run` wires it:
    setup, the estimate (which must not change what is then trained), the epoch-0 schedule; each
    step is one batch through the training loop itself."""
    cfg = default_config(strategy)
    with tempfile.TemporaryDirectory() as scratch:
        s = setup(cfg, Path(scratch))
        estimate(cfg, s)
        apply_epoch(s.model, s.groups, s.schedule, 0)
        batches = iter(s.train)
        return [engine.train_one_epoch(s.model, itertools.islice(batches, 1), s.optimizer, s.scheduler,
                                       s.runtime.device, s.runtime.amp_dtype, penalty=s.penalty).loss
                for _ in range(steps)]


def epoch_rows(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What is stored of each epoch: losses, accuracies, counts and the learning rates."""
    return [{k: m[k] for k in EPOCH_KEYS} | {"lrs": {k: v for k, v in m.items() if k.startswith("lr/")}}
            for m in metrics]


def load() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text())


def record(strategies: tuple[str, ...]) -> dict[str, Any]:
    """Measure `strategies` here and store them: their first steps, and this host's epochs."""
    stored = load() if FIXTURE.exists() else {}
    today = datetime.date.today().isoformat()
    steps = stored.setdefault("first_steps", {"steps": STEPS, "strategies": {}})
    if steps.get("steps") != STEPS:
        steps.update(steps=STEPS, strategies={})
    steps["source"] = f"tests/golden.py first_steps on {host_key()}, {today}"
    host = stored.setdefault("epochs", {}).setdefault(host_key(), {"strategies": {}})
    host["source"] = f"tests/golden.py first_two_epochs (the default study, seed 0), {today}"
    for strategy in strategies:
        steps["strategies"][strategy] = first_steps(strategy)
        with tempfile.TemporaryDirectory() as run_dir:
            host["strategies"][strategy] = epoch_rows(first_two_epochs(strategy, Path(run_dir)))
        print(f"{strategy}: stored", file=sys.stderr)
    write_text(FIXTURE, json.dumps(stored, indent=1) + "\n")
    return stored


def _check(strategies: tuple[str, ...]) -> None:
    stored = load()
    host = stored.get("epochs", {}).get(host_key())
    print(f"host: {host_key()} ({'epochs stored' if host else 'no epochs stored'})")
    for strategy in strategies:
        want = stored["first_steps"]["strategies"][strategy]
        got = first_steps(strategy, len(want))  # as many as were stored, as the test takes
        print(strategy, "steps rel. diff", " ".join(f"{abs(g - w) / abs(w):.1e}" for g, w in zip(got, want)))
        if host and strategy in host["strategies"]:
            with tempfile.TemporaryDirectory() as run_dir:
                rows = epoch_rows(first_two_epochs(strategy, Path(run_dir)))
            for g, w in zip(rows, host["strategies"][strategy]):
                print(strategy, "epoch", w["epoch"], " ".join(
                    f"{k} {abs(g[k] - w[k]) / abs(w[k]):.1e}" for k in ("train_loss", "val_loss")))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.golden", description=__doc__.split("\n\n")[0])
    # (no `choices`: Python 3.11's argparse checks an empty nargs="*" list against them and refuses it)
    parser.add_argument("strategies", nargs="*", help=f"of {', '.join(STRATEGIES)} (default: all three)")
    parser.add_argument("--check", action="store_true", help="print this host's distance from the stored values")
    args = parser.parse_args(argv)
    if unknown := sorted(set(args.strategies) - set(STRATEGIES)):
        parser.error(f"unknown strategy {', '.join(unknown)}: the default study has {', '.join(STRATEGIES)}")
    (_check if args.check else record)(tuple(args.strategies or STRATEGIES))


if __name__ == "__main__":
    main()
