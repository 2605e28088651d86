"""What rides along the epoch loop, one typed object each: training time and images (`Clock`),
FLOPs (`FlopMeter`), model selection (`BestModel`), and how far the run got (`Progress`), together
in `Meters`; and the final evaluation of the selected model (`FinalEval`). The record
(`src.training.record`) is built from these, never from a dict of keys.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from src.measurement.flops import StepFlops
from src.record.schema import Measured
from src.training import reuse
from src.training.engine import EvalStats


@dataclass
class Clock:
    """Wall time of the training steps (evaluation excluded; the feature cache's one backbone pass
    included) and the images they saw, from the start of the first epoch."""

    started: float = field(default_factory=time.perf_counter)
    train_s: float = 0.0
    samples: int = 0

    def add(self, seconds: float, samples: int = 0) -> None:
        self.train_s += seconds
        self.samples += samples

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started

    @property
    def images_per_s(self) -> float | None:
        return self.samples / self.train_s if self.train_s > 0 else None


@dataclass
class FlopMeter:
    """Training FLOPs: counted once per phase (set of training groups) for one step, times the
    images trained in that phase; plus the feature cache's one backbone pass. Off: every count None."""

    enabled: bool
    num_classes: int
    forward: int = 0
    backward: int = 0
    _per_image: dict[tuple[bool, ...], StepFlops] = field(default_factory=dict, repr=False)

    def count_phase(self, phase: tuple[bool, ...], net: torch.nn.Module, step_shape: tuple[int, ...]) -> None:
        """Count a phase's step the first time it comes (before its epoch trains: the count runs on a copy;
        a net of the same structure counted by an earlier run of this process is not counted again)."""
        if self.enabled and phase not in self._per_image:
            self._per_image[phase] = reuse.step_flops(net, step_shape, self.num_classes)

    def add_epoch(self, phase: tuple[bool, ...], samples: int) -> None:
        if self.enabled:
            self.forward += self._per_image[phase].forward * samples
            self.backward += self._per_image[phase].backward * samples

    def add_forward(self, flops: int) -> None:
        if self.enabled:
            self.forward += flops

    @property
    def total(self) -> int:
        """The running total, also when off (0): metrics.jsonl's `train_flops_cum`."""
        return self.forward + self.backward

    @property
    def train_flops(self) -> int | None:
        return self.total if self.enabled else None

    def inference_per_image(self, model: torch.nn.Module, input_shape: tuple[int, ...]) -> int | None:
        return reuse.forward_flops(model, input_shape) if self.enabled else None


@dataclass
class BestModel:
    """Model selection on validation: the epoch whose weights are tested (best validation accuracy,
    or the last with trainer.select=last), and a copy of those weights."""

    select: str
    acc: float = float("-inf")
    epoch: int = -1
    state: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    def update(self, epoch: int, val_acc: float, model: torch.nn.Module) -> None:
        if self.select == "last" or self.state is None or val_acc > self.acc:
            # A copy, not a reference: later steps mutate the live tensors in place.
            self.acc, self.epoch = val_acc, epoch
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}


@dataclass
class Progress:
    """How far a run got: kept in result.json however the run ends."""

    epoch: int = -1  # the epoch under way (a failed run's `failed_epoch`)
    measured: Measured | None = None  # as of the last finished epoch; None before the first
    stopped: str | None = None  # the reason on_epoch gave to stop (pruned)


@dataclass
class Meters:
    """Everything the loop measures, for one run."""

    clock: Clock
    flops: FlopMeter
    best: BestModel
    progress: Progress
    max_trainable: int = 0  # the most parameters trainable in any one epoch
    # the feature cache, as the epochs use it (set once they start): why not ("off": not asked), and
    # the last module whose output is cached
    feature_cache_blocker: str | None = "off"
    feature_cache_cut: str | None = None
    epoch_s: list[float] = field(default_factory=list)  # each finished epoch's wall time (training + validation): the ETA
    planned_s: dict[int, float] = field(default_factory=dict)  # the estimate's time of each epoch: the ETA

    @classmethod
    def start(cls, count_flops: bool, num_classes: int, select: str, progress: Progress) -> Meters:
        return cls(Clock(), FlopMeter(count_flops, num_classes), BestModel(select), progress)

    def state(self) -> dict[str, Any]:
        """The running counters as plain numbers, for a checkpoint (torch.load(weights_only=True)
        reads them back); the best weights travel apart. Each phase's step FLOPs are kept too:
        counting a phase again on resume would draw random numbers the uninterrupted run did not."""
        f = self.flops
        return {
            "elapsed_s": self.clock.elapsed_s, "train_s": self.clock.train_s, "samples": self.clock.samples,
            "flops_forward": f.forward, "flops_backward": f.backward,
            "flops_per_phase": [[list(phase), c.forward, c.backward] for phase, c in f._per_image.items()],
            "max_trainable": self.max_trainable, "best_acc": self.best.acc, "best_epoch": self.best.epoch,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from `state()`: the counters as they stood after the checkpointed epoch."""
        self.clock.started = time.perf_counter() - float(state["elapsed_s"])
        self.clock.train_s, self.clock.samples = float(state["train_s"]), int(state["samples"])
        f = self.flops
        f.forward, f.backward = int(state["flops_forward"]), int(state["flops_backward"])
        f._per_image = {tuple(bool(b) for b in phase): StepFlops(int(fw), int(bw))
                        for phase, fw, bw in state["flops_per_phase"]}
        self.max_trainable = int(state["max_trainable"])
        self.best.acc, self.best.epoch = float(state["best_acc"]), int(state["best_epoch"])


@dataclass(frozen=True)
class FinalEval:
    """The selected model, evaluated once after the last epoch."""

    val: EvalStats
    test: EvalStats
    ood: dict[str, dict[str, Any]]  # each OOD set's acc, balanced_acc, n, skipped_files
    inference_flops_per_image: int | None  # None when FLOPs are not counted
