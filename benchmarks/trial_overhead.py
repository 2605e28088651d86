"""Where a sweep's time goes outside training: `python -m src.train` with a timer around each phase of a
run, in this process (the basic launcher runs every trial here), and a table at the end.

    python benchmarks/trial_overhead.py --out FILE.json -- -m sweep=default hydra.sweep.dir=/tmp/s
    python benchmarks/trial_overhead.py --compare /tmp/before /tmp/after   # the same trials, the same numbers?

Everything after `--` is src.train's command line. The phases are wrapped from outside (nothing in src/
knows of this timer); a phase called inside another (the estimate's calibration steps call the training
step) counts to the outer one only. "training" is the epoch loop: the training steps, each epoch's
validation and the final validation and test of the selected model (`fit` minus its FLOP counts and the
feature cache's backbone pass, which is training too and is left in). The rest of the sweep's wall
time is overhead: a trial's setup (data, model, schedule, optimizer), estimate, FLOP counts, tracker,
drift probe and record, and the sweep's own work between trials (the sampler, the study storage, Hydra
composing each job) and after them (the report).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

STACK: list[str] = []
SECONDS: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)

# (module, attribute, phase): what is timed. Names are patched where they are looked up; a name that a
# version of the code does not have is skipped (this file times the code before and after issue 26).
PHASES = [
    ("src.training.setup", "load_dataset", "data"),  # before src/training/reuse.py
    ("src.training.reuse", "dataset", "data"),  # after it
    ("src.training.reuse", "counted_step_flops", "FLOP counts"),
    ("src.training.reuse", "counted_forward_flops", "FLOP counts"),
    ("src.training.setup", "_build_model", "model"),
    ("src.training.setup", "_dataset_id", "data"),
    ("src.training.run", "setup", "setup (schedule, optimizer, batches)"),
    ("src.training.run", "estimate", "estimate"),
    ("src.training.run", "_start_tracker", "tracker"),
    ("src.training.run", "measure_drift", "drift probe"),
    ("src.training.run", "fit", "training"),
    ("src.training.meters", "counted_step_flops", "FLOP counts"),
    ("src.training.meters", "counted_forward_flops", "FLOP counts"),
    ("src.training.fit", "counted_forward_flops", "FLOP counts"),
    ("src.train", "run", "run (whole)"),  # while src.train imported run() at its top
    ("src.training.run", "run", "run (whole)"),  # since: the job's `from src.training.run import run` finds this
    ("src.train", "to_run_config", "job: config gate, trial reporter"),
    ("src.train", "_trial_reporter", "job: config gate, trial reporter"),
    ("src.search.job", "trial_reporter", "job: config gate, trial reporter"),
]
WHOLE = {"run (whole)"}


def timed(phase: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        outer = [p for p in STACK if p not in WHOLE]
        STACK.append(phase)
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent = time.perf_counter() - start
            STACK.pop()
            CALLS[phase] += 1
            if phase in WHOLE or not outer:
                SECONDS[phase] += spent
            elif outer[-1] != phase:  # a phase inside another: taken out of the outer one
                SECONDS[phase] += spent
                SECONDS[f"-{outer[-1]}"] += spent
    return wrapper


def install() -> None:
    import importlib

    for module, name, phase in PHASES:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError:
            continue
        fn = getattr(mod, name, None)
        if fn is None:
            continue
        setattr(mod, name, timed(phase, fn))


def table(wall: float) -> dict:
    own = {p: SECONDS[p] - SECONDS.get(f"-{p}", 0.0) for p in SECONDS if not p.startswith("-")}
    parts = {p: s for p, s in own.items() if p not in WHOLE}
    inside = own.get("run (whole)", 0.0) - sum(parts.values())
    parts["run, other (record, config, checkpoints, tracker end)"] = inside
    gate = parts.pop("job: config gate, trial reporter", 0.0)
    parts["sweep, outside runs (imports, sampler, storage, composing, config gate, report)"] = (
        wall - own.get("run (whole)", 0.0))
    parts["  of which the config gate and trial reporter"] = gate
    training = parts.get("training", 0.0)
    return {"wall_s": wall, "training_s": training, "overhead_s": wall - training,
            "overhead_fraction": (wall - training) / wall, "calls": dict(CALLS),
            "phases_s": dict(sorted(parts.items(), key=lambda kv: -kv[1]))}


# What must not change when only the time outside training does: compared with ==, per trial.
SAME = ("status", "val_acc", "test_acc", "train_flops", "inference_flops_per_image", "pruned_epoch",
        "weight_change", "cka", "cka_features", "imagenet_agreement")


def compare(before: Path, after: Path, fields: tuple[str, ...] = SAME) -> bool:
    """Each trial's result.json `fields`, in two sweep folders: printed, and whether all match."""
    def trials(folder: Path) -> dict[str, dict]:
        return {p.parent.name: json.loads(p.read_text()) for p in folder.glob("*/result.json")}

    old, new = trials(before), trials(after)
    ok = sorted(old) == sorted(new) and bool(old)
    for name in sorted(old, key=lambda n: (len(n), n)):
        differ = [k for k in fields if old[name].get(k) != new.get(name, {}).get(k)]
        ok &= not differ
        print(f"{name:>14} {old[name].get('status'):>9} val_acc {old[name].get('val_acc')!r:<20} "
              f"train_flops {old[name].get('train_flops')!r:<14} {'differ: ' + ', '.join(differ) if differ else 'same'}")
    print(f"{len(old)} and {len(new)} trials; every field of {', '.join(fields)} the same: {ok}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="the table as JSON")
    parser.add_argument("--compare", type=Path, nargs=2, metavar=("BEFORE", "AFTER"), help="two sweep folders")
    parser.add_argument("--fields", default=",".join(SAME),
                        help="result.json fields --compare checks (drop the drift ones where one side has no probe)")
    parser.add_argument("train_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.compare:
        sys.exit(0 if compare(*args.compare, fields=tuple(args.fields.split(","))) else 1)
    if args.out is None:
        parser.error("--out FILE.json is needed to time a sweep")
    argv = [a for a in args.train_args if a != "--"]
    sys.argv = ["src.train", *argv]
    start = time.perf_counter()
    import src.train as train

    install()
    try:
        train.cli(argv)
    except SystemExit:
        pass
    finally:
        result = table(time.perf_counter() - start)
        args.out.write_text(json.dumps(result, indent=1))
        print(f"\nwall {result['wall_s']:.1f}s, training {result['training_s']:.1f}s, overhead "
              f"{result['overhead_s']:.1f}s ({100 * result['overhead_fraction']:.1f} %)")
        for phase, s in result["phases_s"].items():
            print(f"  {s:8.1f}s  {phase}")


if __name__ == "__main__":
    main()
