"""What one process keeps from a run for its next runs: the loaded data, the pretrained model, FLOP
counts and the estimate's step timings. A sweep's trials run one after another in one process (Hydra's
basic launcher), and most of what each trial set up was the same as the trial before: reusing it
took `make sweep`'s time outside training from about a third to a few percent
(docs/sweeps-measured.md, "Cheap trials").

Every entry is keyed by everything that decides its value, so a run with other settings builds its
own, and each store keeps its few most recent entries only (`Lru`): a process that goes through many
datasets or models holds no more than that. What a run gets is what it would have built itself, bit
for bit (tests/test_reuse.py): a copy of the data bundle and of the model, never the kept object, and
the random generators as building the model would have left them.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import os
import pickle
import random
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable, Generic, Hashable, Iterable, TypeVar

import numpy as np
import torch
from torch import nn

from src.config import DataConfig, ModelConfig
from src.data.identity import dataset_identity_or_none
from src.data.load import load_dataset
from src.data.mapped import MappedImages
from src.measurement.feature_cache import Cut, Extracted
from src.measurement.flops import StepFlops, counted_forward_flops, counted_step_flops
from src.models import head_param_names, load_pretrained

if TYPE_CHECKING:
    from src.data.splits import DataBundle

log = logging.getLogger(__name__)
T = TypeVar("T")


class Lru(Generic[T]):
    """At most `size` values, the least recently used dropped first; `made` counts the values built
    (a test's way to see that a second run reused the first one's). With `weigh`, also at most
    `budget` of their summed weight (MB), the newest value always kept."""

    def __init__(self, size: int, weigh: Callable[[T], float] | None = None) -> None:
        self.size = size
        self.weigh = weigh
        self.budget = float("inf")
        self.items: OrderedDict[Hashable, T] = OrderedDict()
        self.made = 0

    def get(self, key: Hashable, make: Callable[[], T]) -> T:
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        value = make()
        self.made += 1
        self.items[key] = value
        while len(self.items) > self.size or (len(self.items) > 1 and self._weight() > self.budget):
            self.items.popitem(last=False)
        return value

    def _weight(self) -> float:
        return sum(self.weigh(v) for v in self.items.values()) if self.weigh else 0.0

    def clear(self) -> None:
        self.items.clear()
        self.made = 0


# One dataset: the kept bundle is the running run's own (its tensors shared), so keeping it costs
# nothing while a run uses it, and a large dataset is never held twice. Two models (tens of MB): a
# process that alternates two architectures or drop rates still reuses both.
DATA: Lru[DataBundle] = Lru(1)
MODELS: Lru[tuple[nn.Module, tuple[Any, ...]]] = Lru(2)
# Small values (counts, seconds): one per phase of each architecture and size a process met.
FLOPS: Lru[Any] = Lru(64)
STEP_S: Lru[float] = Lru(64)
# What a run's structure decides before it trains (the feature cache's cut, the features' width): the
# checks behind them run the model (a hooked forward and three more: 30 ms a trial, twice).
PLANS: Lru[Any] = Lru(64)
# The pretrained model's outputs on a drift probe batch (tens of MB): one model on one dataset's probe.
REFERENCE_OUT: Lru[Any] = Lru(1)
# The feature cache's frozen outputs (src.measurement.feature_cache): a sweep's trials that freeze the
# same bottom groups of the same weights compute the same ones. Within trainer.feature_cache_max_mb.
EXTRACTED: Lru[Extracted] = Lru(8, weigh=lambda e: e.mb)


def dataset(cfg: DataConfig, progress: bool = False, identity: str | None = None) -> tuple[DataBundle, str | None]:
    """`load_dataset(cfg)`, loaded once per process for each dataset and every setting that shapes its
    splits (image size, subsampling, split fractions and seed, decoding); augmentation and the OOD sets
    are the batches' and `load_ood`'s, not the bundle's, and are left out of the key. The dataset's
    identity (`dataset_identity`: an image folder's file listing, an .npz file's bytes) is part of the
    key too, so data that changed on disk is loaded again. Returns a copy of the kept bundle (its
    tensors shared: nothing writes into them) with `load_s` this call's time, and the identity (None
    where the data could not be listed before loading: then it is loaded every time). `identity`: the
    one the caller computed already (run() checks the run folder against it), not computed again."""
    start = time.perf_counter()
    identity = identity or dataset_identity_or_none(cfg)
    if identity is None:  # not listable: the loader says what is wrong, in its words
        return load_dataset(cfg, progress=progress), None
    shape = dataclasses.replace(cfg, augment="none", hflip=False, ood=(), ood_per_class=None)
    made = DATA.made
    bundle = DATA.get((shape, identity), lambda: load_dataset(cfg, progress=progress))
    if DATA.made == made:
        log.info("data: %s as loaded by an earlier run in this process", bundle.name)
    return dataclasses.replace(bundle, load_s=time.perf_counter() - start), identity


def _rng_state() -> tuple[Any, ...]:
    return torch.get_rng_state(), np.random.get_state(), random.getstate()


def _set_rng_state(state: tuple[Any, ...]) -> None:
    torch.set_rng_state(state[0])
    np.random.set_state(state[1])
    random.setstate(state[2])


def _digest(state: tuple[Any, ...]) -> str:
    return hashlib.sha256(pickle.dumps((state[0].numpy().tobytes(), state[1], state[2]))).hexdigest()


def _file_stamp(cfg: ModelConfig) -> tuple[int, int] | None:
    """A weights file's size and modification time: a file replaced between two runs is loaded again."""
    try:
        stat = os.stat(cfg.checkpoint_path) if cfg.checkpoint_path else None
    except OSError:  # load_pretrained says what is wrong with it
        return None
    return (stat.st_size, stat.st_mtime_ns) if stat else None


def pretrained(cfg: ModelConfig) -> nn.Module:
    """A copy of `load_pretrained(cfg)` (its original head, pretrained weights), built once per process
    for each model config and random state: building draws random numbers (timm initialises every
    layer before the weights load, and a random start is all drawn), and the head that replaces the
    original one draws next. So the kept model is the one built from this very state of the torch,
    numpy and Python generators, and they are left as that build left them."""
    before = _rng_state()

    def build() -> tuple[nn.Module, tuple[Any, ...]]:
        model = load_pretrained(cfg)
        return model, _rng_state()

    made = MODELS.made
    model, after = MODELS.get((cfg, _file_stamp(cfg), _digest(before)), build)
    if MODELS.made == made:
        _set_rng_state(after)
        log.info("model: %s, pretrained weights as loaded by an earlier run in this process", cfg.name)
    return copy.deepcopy(model)


def structure(net: nn.Module, *, modes: bool = True, grads: bool = True) -> tuple[Any, ...]:
    """What a FLOP count (and a step's time) depends on: the modules, their modes, every parameter's
    shape and whether it trains. Two nets with the same structure run the same operations. A pass
    without autograd does not depend on which parameters train (`grads=False`): the inference count
    that ends each trial is then shared by trials that trained different groups last."""
    # `skipped`: the modules a SkipPrefix net runs without (src.measurement.feature_cache)
    return (type(net).__qualname__, getattr(net, "skipped", None),
            tuple((n, type(m).__qualname__, m.training if modes else None) for n, m in net.named_modules()),
            tuple((n, tuple(p.shape), p.dtype, p.requires_grad if grads else None) for n, p in net.named_parameters()))


def step_flops(net: nn.Module, input_shape: tuple[int, ...], num_classes: int) -> StepFlops:
    """`counted_step_flops`, counted once per structure, input shape and class count."""
    key = ("step", structure(net), tuple(input_shape), num_classes)
    return FLOPS.get(key, lambda: counted_step_flops(net, input_shape, num_classes))


def forward_flops(net: nn.Module, input_shape: tuple[int, ...]) -> int:
    """`counted_forward_flops`, counted once per structure (whatever trains: it counts under no_grad)
    and input shape."""
    key = ("forward", structure(net, grads=False), tuple(input_shape))
    return FLOPS.get(key, lambda: counted_forward_flops(net, input_shape))


def timed_once(key: Hashable, net: nn.Module, time_it: Callable[[], float], inference: bool = False) -> float:
    """A calibration time (the estimate's seconds per step or per image), measured once per process
    for `key` and the net's structure: the same step on the same machine costs the same again. An
    `inference` pass (engine.predict: eval mode, no autograd) is keyed without modes and grads:
    the estimate times it after setting up the run's last phase, which differs from trial to trial."""
    return STEP_S.get((key, structure(net, modes=not inference, grads=not inference)), time_it)


def planned_once(key: Hashable, net: nn.Module, make: Callable[[], T]) -> T:
    """`make()`, once per process for `key` and the net's structure (its modules, modes, parameter
    shapes and which train) and each module's settings as it prints them (a dropout's p, which
    decides whether a prefix can be cached, is in no parameter): a value that follows from these,
    not from the weights' values."""
    return PLANS.get((key, structure(net), tuple(m.extra_repr() for m in net.modules())), make)


def fingerprint(tensors: Iterable[torch.Tensor | MappedImages]) -> str:
    """A hash of the tensors' values, shapes and types: content, not identity (a run's reference
    model is its own copy). Memory-mapped images are named by their file and rows instead: reading
    a large dataset whole to name it would cost what reusing it saves."""
    digest = hashlib.blake2b(digest_size=16)
    for t in tensors:
        if isinstance(t, MappedImages):  # an image folder's decoded-data cache: the file, not its bytes
            digest.update(repr(t.identity()).encode())
            continue
        t = t.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def reference_outputs(reference: nn.Module, where: dict[str, str], images: torch.Tensor,
                      compute: Callable[[], T]) -> T:
    """The drift reference's outputs on the probe batch (`compute`), once per process for each
    reference model (its weights and buffers, by value), probe batch (by value) and set of group
    outputs: every completed trial of a sweep probes the same pretrained model on the same images."""
    key = (fingerprint(reference.state_dict().values()), fingerprint([images]), tuple(sorted(where.items())))
    return REFERENCE_OUT.get(key, compute)


def extracted(model: nn.Module, cut: Cut | None, splits: tuple[Any, ...], settings: tuple[Any, ...],
              budget_mb: float, make: Callable[[], Extracted]) -> tuple[Extracted, bool]:
    """`make()`'s frozen outputs, once per process for each frozen part (`cut`; None: the backbone)
    by the values of its weights and buffers, each split's images and labels (by value), batch size
    and normalisation, and `settings` (device, AMP, layout). Returns them and whether an earlier run
    made them. The kept tensors are shared: nothing writes into them."""
    head = head_param_names(model)
    state = [v for k, v in model.state_dict().items() if k not in head] if cut is None else \
        [v for name in cut.skipped for v in model.get_submodule(name).state_dict().values()]
    key = (cut.skipped if cut else None, fingerprint(state),
           tuple((fingerprint([b.images, b.labels, b.scale, b.shift]), b.batch_size) for b in splits), settings)
    EXTRACTED.budget = budget_mb
    made = EXTRACTED.made
    value = EXTRACTED.get(key, make)
    return value, EXTRACTED.made == made


def clear() -> None:
    """Forget everything kept: the next run builds all of it again, as a fresh process would."""
    for store in (DATA, MODELS, FLOPS, STEP_S, PLANS, REFERENCE_OUT, EXTRACTED):
        store.clear()
