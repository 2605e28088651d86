"""What a run will cost, known before it trains: its images, image size, epochs, training FLOPs
(counted exactly as the run counts them: the same `FlopMeter`, phase by phase) and a time from a
short calibration on this machine (a few real training steps of this model and strategy at this
image size and batch size, after warm-up steps that are not timed). A sweep's later trials reuse
the counts and timings of an earlier trial's phases of the same structure (src/training/reuse.py): a
step that cost so much in this process a minute ago costs so much now.

Everything here works on a copy of the model, under a forked random state: estimating a run does
not change what it then trains (tests/test_golden.py).
"""

from __future__ import annotations

import copy
import itertools
import statistics
import time
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Iterable

import torch

from src.config import ConfigError, RunConfig
from src.data.batches import trained_images
from src.measurement.feature_cache import Cut, PreLogits, SkipPrefix, choose, rest_net
from src.measurement.flops import meta_copy
from src.strategies import apply_epoch, strategy_for
from src.training import engine, reuse
from src.training.meters import FlopMeter
from src.training.optim import build_optimizer, param_groups
from src.training.setup import Setup

ESTIMATE_FILE = "estimate.json"  # written by a dry run only: a dry multirun's end sums them
WARMUP_STEPS = 2  # the first steps allocate and pick kernels: not what an epoch's steps cost
# Timed steps (steady_median): steady ones say a step's cost in 3; a step another process slowed shows
# as spread and is out-voted by the median of 5.
MIN_TIMED_STEPS = 3
TIMED_STEPS = 5
STEADY = 1.10


@dataclass(frozen=True)
class Estimate:
    train_images: int
    val_images: int
    test_images: int
    image_size: int
    epochs: int
    batch_size: int
    train_flops: int | None  # None with trainer.count_flops=false
    train_s: float  # the training steps (and the feature cache's pass through the frozen part)
    eval_s: float  # validation every epoch, then validation, test and the OOD sets once, and drift's probe
    feature_cache: bool
    # the last module whose output is cached: "pre-logits" (the backbone), a frozen prefix's last module
    feature_cache_cut: str | None = None
    first_epoch: int = 0  # a resumed run's first epoch to train: the time is for the epochs left
    # each epoch's training steps and validation, from first_epoch on: the ETA prices the epochs left
    epoch_s: tuple[float, ...] = ()
    compiled: bool = False  # trainer.compile: the calibration timed the eager model

    @property
    def epochs_text(self) -> str:
        left = self.epochs - self.first_epoch
        return (f"{self.epochs} epoch{'s' * (self.epochs != 1)}" if not self.first_epoch
                else f"{left} of {self.epochs} epochs left (resumed)")

    @property
    def total_s(self) -> float:
        return self.train_s + self.eval_s

    def line(self) -> str:
        flops = f"{self.train_flops:.3e} training FLOPs" if self.train_flops is not None else "FLOPs not counted"
        if self.first_epoch and self.train_flops is not None:  # beside the epochs left, read as theirs
            flops += f" in all {self.epochs} epochs (as result.json counts them)"
        cut = self.feature_cache_cut
        cache = "" if not self.feature_cache else " (feature cache: backbone once)" \
            if cut in (None, "pre-logits") else f" (feature cache: up to {cut} once)"
        return (f"estimate: {self.train_images}/{self.val_images}/{self.test_images} images (train/val/test) at "
                f"{self.image_size} px, {self.epochs_text} of batch {self.batch_size}{self._left_out}{cache}: {flops}, "
                f"~{duration(as_shown(self.train_s) + as_shown(self.eval_s))} ({duration(self.train_s)} training + "
                f"{duration(self.eval_s)} "
                f"evaluation; after loading, timed on this machine now{self._untimed})")

    @property
    def _left_out(self) -> str:
        # the FLOPs and times count the images trained (src.data.batches): the one left out is said too
        per_pass = trained_images(self.train_images, self.batch_size, 1)
        if per_pass == self.train_images:
            return ""
        return (f" ({per_pass} of the {self.train_images} training images a pass: a last batch of one would stop "
                "BatchNorm, so a different image is left out each pass)")

    @property
    def _untimed(self) -> str:
        # the run compiles its model, the calibration does not: compiling twice would double its cost
        return "; eager: torch.compile's compilation and speed-up not timed" if self.compiled else ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"total_s": self.total_s}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Estimate:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


def duration(seconds: float) -> str:
    """Seconds as printed: two decimals under 1 s, one under 10 s (a 0.4 s training said '0s'),
    whole seconds under 90 s, then minutes and hours with one decimal."""
    seconds = as_shown(seconds)
    if seconds < 90:
        return "0s" if not seconds else f"{seconds:.2f}s" if seconds < 1 else f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def as_shown(seconds: float) -> float:
    """`seconds` rounded as `duration` prints it: a total printed beside its parts is the sum of
    the parts as shown ('~9s (1s training + 7s evaluation)' did not add up)."""
    for limit, unit in ((1, 0.01), (10, 0.1), (90, 1.0), (5400, 6.0)):
        if seconds < limit - unit / 2:
            return round(seconds / unit) * unit
    return round(seconds / 360.0) * 360.0


def cache_choice(cfg: RunConfig, s: Setup, model: torch.nn.Module) -> Cut | str | None:
    """What the run caches (`feature_cache.choose`: None = the backbone, a Cut = a frozen prefix, a
    string = nothing, and why), or "off"; `model` must be set up for epoch 0 (`apply_epoch`).
    ConfigError where trainer.feature_cache=on and nothing can be cached: raised here, before the
    estimate, whose dry run otherwise priced a run that cannot start."""
    t = cfg.trainer
    if t.feature_cache == "off":
        return "off"
    images = len(s.data.train) + len(s.data.val) + len(s.data.test)
    # What trains in any epoch decides the prefix as much as the structure at epoch 0 does
    trains = tuple((plan.param_names, bool(plan.epochs)) for plan in s.schedule.groups)
    key = (trains, s.schedule.frozen_bn, tuple(g.param_names for g in s.groups), cfg.dataset.augment, s.input_shape,
           s.runtime.channels_last, images, t.feature_cache_max_mb)
    choice = reuse.planned_once(key, model, lambda: choose(model, s.groups, s.schedule, cfg.dataset.augment,
                                                           s.input_shape, s.runtime.channels_last, images,
                                                           t.feature_cache_max_mb))
    if t.feature_cache == "on" and isinstance(choice, str):
        raise ConfigError(f"trainer.feature_cache=on, but this run's features cannot be cached: {choice}")
    return choice


def cache_pass_flops(model: torch.nn.Module, cut: Cut | None, input_shape: tuple[int, ...]) -> int:
    """Forward FLOPs per image of the cached part: the backbone to its pooled features (`cut` None),
    or a frozen prefix, counted as the whole model's forward less the forward of what follows it."""
    if cut is None:
        return reuse.forward_flops(PreLogits(model), input_shape)
    return reuse.forward_flops(model, input_shape) - reuse.forward_flops(SkipPrefix(model, cut.skipped), cut.shape)


def estimate(cfg: RunConfig, s: Setup, first_epoch: int = 0) -> Estimate:
    """The cost of training `s` as `cfg` says, from `first_epoch` (a resumed run's: its time counted
    every epoch, 58 s said with 2 of 3 epochs left); `s` is left as it was. The FLOPs are the whole
    run's, as result.json records them."""
    t, rt = cfg.trainer, s.runtime
    devices = [rt.device] if rt.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # dropout in the timed steps draws numbers the run must still get
        model = copy.deepcopy(s.model)
        apply_epoch(model, s.groups, s.schedule, 0)
        choice = cache_choice(cfg, s, model)
        flops = _train_flops(cfg, s, model, choice)
        n_train, n_val, n_test = len(s.data.train), len(s.data.val), len(s.data.test)
        # Evaluation runs in batches of eval_batch_size, the cache's pass over the training images in
        # training batches; per image they differ (on 2 CPU cores at 96 px, batch 64 took 1.7x batch
        # 16's time), so each is timed at its own size (evaluation's capped at 64 images).
        eval_size = max(2, min(t.eval_batch_size, 64, n_val or 2))
        train_size = train_batch(t.batch_size, n_train)
        forward_s = _forward_s_per_image(model, s, eval_size, s.input_shape)
        # What runs once per image (the frozen part, cached) and what runs every epoch (the rest).
        if isinstance(choice, str):  # nothing cached: the whole model every epoch
            net, shape, once_train_s, once_s, rest_s = model, s.input_shape, 0.0, 0.0, forward_s
        elif choice is None:  # the backbone once over every split; the epochs train and evaluate the head
            net, shape = rest_net(model, None), (_feature_dim(model, s.input_shape),)
            once_train_s, once_s, rest_s = _forward_s_per_image(model, s, train_size, s.input_shape), forward_s, 0.0
        else:  # a frozen prefix: once over every split, what a forward of the rest saves on the whole
            net, shape = rest_net(model, choice), choice.shape
            rest_s = _forward_s_per_image(net, s, eval_size, shape)
            once_s = max(forward_s - rest_s, 0.0)
            once_train_s = max(_forward_s_per_image(model, s, train_size, s.input_shape)
                               - _forward_s_per_image(net, s, train_size, shape), 0.0)
        step_s: dict[tuple[bool, ...], float] = {}  # timed once per phase (set of training groups)
        epochs = range(first_epoch, t.epochs)
        for e in epochs:
            if s.schedule.active(e) not in step_s:
                step_s[s.schedule.active(e)] = _step_s(cfg, s, model, net, shape, e, train_size)
        # a step's time per image it trains, times the epoch's images: a last short batch (40 images
        # in batches of 32) costs its images, not a full step (priced so, 64 images for 40)
        steps = trained_images(n_train, t.batch_size, s.passes) / train_size
        # the cached pass is made again by a resumed process: the cache lives in memory
        epoch_s = tuple(step_s[s.schedule.active(e)] * steps + rest_s * n_val for e in epochs)
        train_s = once_train_s * n_train + sum(step_s[s.schedule.active(e)] * steps for e in epochs)
        # after training, the whole model on images: each OOD set once, and drift's probe through the
        # trained model and the pretrained reference (left out, an OOD set's pass was in no figure)
        after = sum(len(entry.split) for entry in s.ood) + (2 * min(t.drift_probe, n_val) if s.reference else 0)
        eval_s = once_s * (n_val + n_test) + rest_s * (n_val * (len(epochs) + 1) + n_test) + forward_s * after
    cached = not isinstance(choice, str)
    cut = None if not cached else "pre-logits" if choice is None else choice.last  # type: ignore[union-attr]
    return Estimate(n_train, n_val, n_test, cfg.dataset.image_size, t.epochs, t.batch_size, flops, train_s, eval_s,
                    cached, cut, first_epoch, epoch_s, t.compile and not cached)  # (fit compiles no cached net)


def _train_flops(cfg: RunConfig, s: Setup, model: torch.nn.Module, choice: Cut | str | None) -> int | None:
    """result.json's train_flops, counted as src.training.fit counts it: the same meter, the same
    phases, the same images per epoch (a last training batch of one image is left out)."""
    meter = FlopMeter(cfg.trainer.count_flops, s.num_classes)
    if not meter.enabled:
        return None
    net, shape = model, s.input_shape
    n = len(s.data.train)
    samples = trained_images(n, cfg.trainer.batch_size, s.passes)
    if not isinstance(choice, str):  # (the model is set up for epoch 0: estimate() did that)
        meter.add_forward(cache_pass_flops(model, choice, shape) * n)
        net = rest_net(model, choice)
        shape = (_feature_dim(model, s.input_shape),) if choice is None else choice.shape
    for epoch in range(cfg.trainer.epochs):
        apply_epoch(model, s.groups, s.schedule, epoch)
        if choice is None:
            net.train()
        phase = s.schedule.active(epoch)
        meter.count_phase(phase, net, shape)
        meter.add_epoch(phase, samples)
    return meter.train_flops


def _feature_dim(model: torch.nn.Module, input_shape: tuple[int, ...]) -> int:
    def on_meta() -> int:  # a copy without data: the shapes alone
        meta = meta_copy(model)
        with torch.no_grad():
            return int(PreLogits(meta)(torch.zeros((1, *input_shape), device="meta")).shape[1])

    return reuse.planned_once(("feature dim", input_shape), model, on_meta)


def _calibration(s: Setup, *what: Any) -> tuple[Any, ...]:
    """What a timing depends on besides the net's structure: the machine's side of it."""
    rt = s.runtime
    return (*what, s.input_shape, str(rt.device), rt.amp_dtype, rt.channels_last, torch.get_num_threads())


def train_batch(batch_size: int, n_train: int) -> int:
    """The largest training batch the run will really make: never more than its training images
    (src.data.batches cuts every pass from them; a last batch of one is dropped, never padded), and
    at least 2, as BatchNorm needs. trainer.batch_size=100000 on 15 images trains on batches of 15,
    so it is timed on 15: timing 100000 random images took all memory and the OOM killer ended the
    run with no message."""
    return max(2, min(batch_size, n_train or 2))


def _step_s(cfg: RunConfig, s: Setup, model: torch.nn.Module, net: torch.nn.Module, shape: tuple[int, ...],
            epoch: int, size: int) -> float:
    """Seconds per optimizer step in `epoch`'s phase, of `net` (the model, or the model past a cached
    prefix) on random inputs of `shape` in batches of `size` (`train_batch`): timed once per process
    for each phase's structure, batch size and optimizer (src.training.reuse)."""
    apply_epoch(model, s.groups, s.schedule, epoch)
    on_images = shape == s.input_shape  # (a cached part's outputs are neither augmented nor normalised)
    data = (s.train.augment, s.train.hflip) if on_images else ()
    key = _calibration(s, "step", size, repr(cfg.optim.optimizer), shape, s.penalty is not None, *data)
    return reuse.timed_once(key, net, lambda: _time_steps(cfg, s, model, net, shape, size))


def _time_steps(cfg: RunConfig, s: Setup, model: torch.nn.Module, net: torch.nn.Module,
                shape: tuple[int, ...], size: int) -> float:
    optimizer = build_optimizer(cfg.optim, param_groups(model, s.groups, s.schedule, 0.0))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    one, rt = _step_batches(s, size, shape), s.runtime
    # the strategy's term in every step's loss (L2-SP: 23-47 ms a Lite0 step here), on this copy's weights
    penalty = strategy_for(cfg.strategy).penalty(model, s.groups) if s.penalty is not None else None
    engine.train_one_epoch(net, [b for _ in range(WARMUP_STEPS) for b in one()], optimizer, scheduler, rt.device,
                           rt.amp_dtype, penalty=penalty)
    # one step at a time, and the median: a moment when another process takes the cores (a shared
    # machine) must not scale the whole estimate (one 3-step timing once read 14x the steady time)
    return steady_median(lambda: engine.train_one_epoch(net, one(), optimizer, scheduler, rt.device,
                                                        rt.amp_dtype, penalty=penalty).seconds)


def _step_batches(s: Setup, size: int, shape: tuple[int, ...]) -> Callable[[], Iterable[Any]]:
    """What one timed step trains on, made inside the step's timing: on images, the first batch of a
    fresh pass over the run's own training split, cut, augmented and normalised as the epochs do it
    (randaugment at 96 px took 4x a step's time here, and timing ready random tensors left it out),
    drawn from a generator of its own so the run's shuffles and augmentations stay as they would
    be. On a cached part's outputs (never augmented), random inputs of their shape."""
    if shape != s.input_shape or not len(s.data.train):
        batch = _batch(s, size, shape)
        return lambda: [batch]
    own = copy.copy(s.train)
    own.batch_size, own.passes, own.generator = size, 1, torch.Generator().manual_seed(0)
    return lambda: itertools.islice(own, 1)  # a generator: nothing is drawn until the step iterates it


def steady_median(step: Callable[[], float]) -> float:
    """The median of `step()`'s seconds over MIN_TIMED_STEPS calls, or over more (up to TIMED_STEPS)
    while they spread by more than STEADY."""
    timed = [step() for _ in range(MIN_TIMED_STEPS)]
    while len(timed) < TIMED_STEPS and max(timed) > STEADY * min(timed):
        timed.append(step())
    return statistics.median(timed)


def _forward_s_per_image(net: torch.nn.Module, s: Setup, size: int, shape: tuple[int, ...]) -> float:
    """Seconds per image of an evaluation pass of `net` on inputs of `shape` in batches of `size`,
    timed after a warm-up; once per process for each architecture and batch, whatever trains
    (src.training.reuse)."""
    return reuse.timed_once(_calibration(s, "forward", size, shape), net, lambda: _time_forward(net, s, size, shape),
                            inference=True)


def _time_forward(net: torch.nn.Module, s: Setup, size: int, shape: tuple[int, ...]) -> float:
    batch, rt = _batch(s, size, shape), s.runtime
    engine.predict(net, [batch], rt.device, rt.amp_dtype)
    _sync(rt.device)

    def once() -> float:
        start = time.perf_counter()
        engine.predict(net, [batch], rt.device, rt.amp_dtype)
        _sync(rt.device)
        return time.perf_counter() - start

    # as the steps are timed: the median of a few, so that a moment another process takes the cores
    # does not scale every pass of the run
    return steady_median(once) / size


def _batch(s: Setup, size: int, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Random inputs of `shape` (the run's images, or a cached prefix's output) and labels: a step
    costs what a real one does."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn((size, *shape), generator=g).to(s.runtime.device)
    if s.runtime.channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, max(1, s.num_classes), (size,), generator=g).to(s.runtime.device)
    return x, y


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def total_line(estimates: list[Estimate], cannot_start: int = 0, kept: int = 0) -> str:
    """A multirun's total over its jobs' estimates; its other jobs: `cannot_start`, and `kept` (their
    folder holds a finished run of their config: nothing to train)."""
    flops = [e.train_flops for e in estimates]
    counted = f"{sum(f for f in flops if f is not None):.3e} training FLOPs" if all(f is not None for f in flops) \
        else "FLOPs not counted in every job"
    others = [f"{cannot_start} cannot start"] * bool(cannot_start) + [f"{kept} kept: nothing to train"] * bool(kept)
    jobs = f"{len(estimates)} of {len(estimates) + cannot_start + kept} jobs ({', '.join(others)})" if others \
        else f"all {len(estimates)} jobs"
    # each job's time as its own line shows it: a one-job total said ~8.2s under a line that said ~8.3s
    return f"estimate, {jobs}: {counted}, ~{duration(sum(as_shown(e.train_s) + as_shown(e.eval_s) for e in estimates))}"


def eta(epoch_s: list[float], remaining: int, planned: tuple[float, float] | None = None) -> str:
    """The time the `remaining` epochs will take. `planned`: the estimate's seconds for the epochs this
    process has run and for those left; an epoch that trains more groups costs more (lpft's probe,
    gradual unfreezing), so the second is scaled by how the first compares with the real times.
    Without it, the epochs left times the mean of this process's epoch times (a resumed run has
    timed only the epochs it ran itself)."""
    if not epoch_s:
        return "?"
    if planned is not None and planned[0] > 0:
        return duration(planned[1] * sum(epoch_s) / planned[0])
    return duration(remaining * sum(epoch_s) / len(epoch_s))
