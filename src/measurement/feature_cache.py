"""Frozen layers, computed once: cache what they output and train the rest on it.

When the inputs are not augmented and a part of the network never trains, never updates a
BatchNorm statistic and draws no random numbers, that part is a fixed function of each image:
running it every epoch only repeats the same arithmetic. Two cases:

- **backbone**: nothing below the classifier trains. The pooled features are cached, and every epoch
  trains the classifier alone, with the model's own head dropout applied to the cached features
  exactly where the model applies it (between pooling and the classifier).
- **prefix**: the bottom groups never train (layer-wise fine-tuning of the top k groups, surgical
  fine-tuning of one group, gradual unfreezing's never-reached groups). What runs before the first
  module that trains is found by running the model once and watching which modules run when
  (`frozen_prefix`); their output is cached, and every epoch runs the model with those modules
  swapped for `nn.Identity`, on the cached tensor (`SkipPrefix`). That the model's forward is a
  chain at the cut is checked, not assumed: the model on the cached tensor must give bit for bit
  what it gives on the images, in the run's own train/eval modes and random draws; where it does not
  (a skip connection across the cut, an op outside any module), nothing is cached.

Either way the cache runs once per image (train, val and test). Cost is reported honestly: that pass
over the training images counts in the train FLOPs and the train time; the val/test passes count in
neither, as evaluation never does.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from src.data.batches import batch_indices, batches_per_pass
from src.models import eval_mode, head_param_names
from src.strategies import LayerGroup, Schedule

# Modules whose train-mode behaviour is random; any of them below the head, if active, makes the
# backbone a random function in training, which a cache cannot reproduce.
STOCHASTIC = ("Dropout", "DropPath", "DropBlock")


def cache_blocker(model: nn.Module, groups: list[LayerGroup], schedule: Schedule, augment: str | bool) -> str | None:
    """Why the features of this run cannot be cached, or None when they can. `augment` is
    dataset.augment's preset (the old booleans too): any but "none" blocks the cache."""
    if augment not in ("none", False):
        return f"augmentation ({augment}) changes the inputs every epoch"
    head = head_param_names(model)
    for i, g in enumerate(groups):
        if schedule.groups[i].epochs and not set(g.param_names) <= head:
            return f"group {g.name} trains"
    if schedule.frozen_bn == "train" and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return "frozen_bn=train updates BatchNorm statistics every epoch"
    classifier = model.get_classifier()
    inside = {id(m) for m in classifier.modules()}
    for name, m in model.named_modules():
        if id(m) in inside or not any(s in type(m).__name__ for s in STOCHASTIC):
            continue
        p = getattr(m, "p", None) or getattr(m, "drop_prob", None) or 0.0
        if p > 0:
            return f"{name} ({type(m).__name__} p={p}) is random in training"
    if not hasattr(model, "forward_head") or not hasattr(model, "forward_features"):
        return f"{type(model).__name__} has no forward_features/forward_head (timm API)"
    return None


class PreLogits(nn.Module):
    """The model up to its classifier (what the cache stores), for counting the backbone's FLOPs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


class CachedHead(nn.Module):
    """The model's classifier on cached pre-logits features, with the model's head dropout."""

    def __init__(self, classifier: nn.Module, drop_rate: float) -> None:
        super().__init__()
        self.classifier = classifier  # shared with the model: training it trains the model's head
        self.drop_rate = drop_rate

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(F.dropout(features, p=self.drop_rate, training=self.training))


@torch.no_grad()  # not inference_mode: the cached tensors are inputs of steps that autograd records
def extract(model: nn.Module, batches, device: torch.device, amp_dtype: torch.dtype | None,
            cut: Cut | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen part's output and the labels for every batch, the model in eval mode: the
    backbone's pre-logits features (float32; `cut` None), or the prefix `cut`'s output (the same
    function as in training mode: `frozen_prefix` checked that)."""
    feats, labels = [], []
    with eval_mode(model):
        for x, y in batches:
            with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                feats.append(model.forward_head(model.forward_features(x), pre_logits=True).float() if cut is None
                             else _prefix_output(model, cut.last, x))
            labels.append(y)
    return torch.cat(feats), torch.cat(labels)


@dataclass
class FeatureBatches:
    """Mini-batches of cached features, shuffled exactly as `data.Batches` shuffles images (same
    seeded generator, same permutation), so the head sees the same sequence of samples."""

    features: torch.Tensor
    labels: torch.Tensor
    batch_size: int
    shuffle: bool = False
    generator: torch.Generator | None = None
    passes: int = 1
    channels_last: bool = False  # a prefix's 4-D activations, in the layout the rest of the net runs in

    def __len__(self) -> int:
        return self.passes * batches_per_pass(len(self.labels), self.batch_size, self.shuffle)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # data.Batches' indices: the same samples in the same order, pass by pass
        for idx in batch_indices(len(self.labels), self.batch_size, self.shuffle, self.generator, self.passes,
                                 self.labels.device):
            x = self.features[idx]
            if self.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[idx]


@dataclass
class Cache:
    kind: str  # "backbone" (pooled features, the head trains on them) | "prefix" (a frozen prefix's output)
    net: nn.Module  # what the epochs run on the cached tensors: CachedHead or SkipPrefix
    train: FeatureBatches
    val: FeatureBatches
    test: FeatureBatches
    shape: tuple[int, ...]  # one image's cached tensor
    cut: str  # the last module whose output is cached ("pre-logits" for the backbone)
    train_extract_s: float  # the one pass over the training images: part of the train time


@dataclass(frozen=True)
class Extracted:
    """The frozen part's output and the labels of every split, and the seconds the training split's
    pass took (training cost)."""

    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    train_s: float

    @property
    def mb(self) -> float:
        return sum(t.numel() * t.element_size() for split in (self.train, self.val, self.test) for t in split) / 2**20


def extract_splits(model: nn.Module, cut: Cut | None, train, val, test, device: torch.device,
                   amp_dtype: torch.dtype | None) -> Extracted:
    """Run the frozen part once over every split: the backbone (`cut` None) or the prefix `cut`.
    `train` is a `data.Batches`, taken in order and unaugmented."""
    start = time.perf_counter()
    tr = extract(model, train.unshuffled(), device, amp_dtype, cut)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_s = time.perf_counter() - start
    va, te = (extract(model, split, device, amp_dtype, cut) for split in (val, test))
    return Extracted(tr, va, te, train_s)


def rest_net(model: nn.Module, cut: Cut | None) -> nn.Module:
    """What the epochs run on the cached outputs: the head on backbone features (`cut` None), or
    the model past the frozen prefix `cut`. It shares the model's modules: training it trains them."""
    if cut is None:
        return CachedHead(model.get_classifier(), float(getattr(model, "drop_rate", 0.0) or 0.0))
    return SkipPrefix(model, cut.skipped)


def build_cache(model: nn.Module, cut: Cut | None, extracted: Extracted, train, eval_batch_size: int,
                channels_last: bool = False) -> Cache:
    """The cached epochs' net and batches. `train` is the run's `data.Batches`: its generator is
    reused so the cached epochs shuffle as the uncached ones would."""
    net = rest_net(model, cut)
    layout = cut is not None and channels_last
    return Cache(
        kind="backbone" if cut is None else "prefix",
        net=net,
        train=FeatureBatches(*extracted.train, train.batch_size, shuffle=True, generator=train.generator,
                             passes=train.passes, channels_last=layout),
        val=FeatureBatches(*extracted.val, eval_batch_size, channels_last=layout),
        test=FeatureBatches(*extracted.test, eval_batch_size, channels_last=layout),
        shape=tuple(extracted.train[0].shape[1:]),
        cut="pre-logits" if cut is None else cut.last,
        train_extract_s=extracted.train_s,
    )


# --- the frozen prefix ------------------------------------------------------------------------


@dataclass(frozen=True)
class Cut:
    """A frozen prefix: the outermost modules that all run, once each, before the first module that
    trains, in the order they run. The last one's output is what is cached."""

    skipped: tuple[str, ...]
    shape: tuple[int, ...]  # one image's output of the last skipped module

    @property
    def last(self) -> str:
        return self.skipped[-1]

    def cache_mb(self, images: int, element_bytes: int) -> float:
        return images * math.prod(self.shape) * element_bytes / 2**20


@contextlib.contextmanager
def skipping(model: nn.Module, names: Sequence[str]) -> Iterator[None]:
    """`names`' modules replaced by `nn.Identity` in their parents for the duration. Swapped in the
    parents' module table, not by patching `forward`: hooks on a skipped module (a FLOP counter's)
    must not fire; state dicts and parameters are untouched outside the block."""
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    try:
        for name in names:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            swapped.append((parent, child, parent._modules[child]))  # type: ignore[arg-type]
            parent._modules[child] = nn.Identity()
        yield
    finally:
        for parent, child, module in reversed(swapped):
            parent._modules[child] = module


class SkipPrefix(nn.Module):
    """The model from the cut on: each forward runs the model with its frozen prefix skipped, on the
    prefix's cached output. It holds the model itself (training it trains the model)."""

    def __init__(self, model: nn.Module, skipped: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.skipped = tuple(skipped)  # also part of its structure key (src.training.reuse.structure)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with skipping(self.model, self.skipped):
            return self.model(x)


class _Cut(Exception):
    """Raised by the hook on the prefix's last module: the rest of the forward is not run."""


def _prefix_output(model: nn.Module, cut_name: str, x: torch.Tensor) -> torch.Tensor:
    out: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        out.append(output)
        raise _Cut

    handle = model.get_submodule(cut_name).register_forward_hook(hook)
    try:
        model(x)
    except _Cut:
        pass
    finally:
        handle.remove()
    if not out:
        raise RuntimeError(f"{cut_name} did not run in the model's forward")
    return out[0]


def frozen_prefix(model: nn.Module, schedule: Schedule, input_shape: tuple[int, ...],
                  channels_last: bool = False) -> Cut | str:
    """The modules that run before anything trains in this run, as a `Cut`; or why there is none.

    Call it with the model as the run's first epoch sets it up (`apply_epoch`): the check runs the
    model in its training modes. One forward of two random images, with a hook on every module,
    says when each module starts and ends; the first module holding a parameter that trains in any
    epoch of the schedule is where the prefix ends. The prefix is the outermost modules that start
    and end before it, each called once."""
    trains = {n for plan in schedule.groups if plan.epochs for n in plan.param_names}
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    x = torch.randn((2, *input_shape), generator=torch.Generator().manual_seed(0)).to(device)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    calls: dict[str, list[list[int]]] = {}
    clock = [0]

    def tick() -> int:
        clock[0] += 1
        return clock[0]

    def started(name: str) -> None:
        calls.setdefault(name, []).append([tick(), -1])

    def ended(name: str) -> None:
        calls[name][-1][1] = tick()

    handles = []
    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(lambda *_, n=name: started(n)))
        handles.append(module.register_forward_hook(lambda *_, n=name: ended(n)))
    try:
        with torch.no_grad(), eval_mode(model):
            model(x)
    finally:
        for h in handles:
            h.remove()
    owners = dict(model.named_modules())
    starts = [calls[n][0][0] for n, m in owners.items() if n in calls and any(
        (f"{n}.{p}" if n else p) in trains for p in m._parameters)]
    if not starts:
        return "no module that trains runs in the model's forward"
    first = min(starts)
    inside = {n for n, spans in calls.items() if n and len(spans) == 1 and spans[0][1] < first}
    outer = sorted((n for n in inside if n.rpartition(".")[0] not in inside), key=lambda n: calls[n][0][0])
    if not outer:
        return NOTHING_BEFORE
    for name in outer:
        for sub_name, sub in owners[name].named_modules(prefix=name):
            if isinstance(sub, nn.modules.batchnorm._BatchNorm) and sub.training:
                return f"{sub_name} updates BatchNorm statistics in training (frozen_bn={schedule.frozen_bn})"
            p = getattr(sub, "p", None) or getattr(sub, "drop_prob", None) or 0.0
            if sub.training and any(s in type(sub).__name__ for s in STOCHASTIC) and p > 0:
                return f"{sub_name} ({type(sub).__name__} p={p}) is random in training"
    return _checked(model, outer, x)


def _checked(model: nn.Module, outer: list[str], x: torch.Tensor) -> Cut | str:
    """The cut, if the model on the prefix's eval-mode output gives exactly what it gives on the
    images, in the modes it is in now (training) and with the same random draws (its dropout)."""
    where = f"the prefix up to {outer[-1]}"
    devices = [x.device] if x.device.type == "cuda" else []
    # A BatchNorm layer that trains (frozen_bn="eval") would fold these random images into its
    # running statistics: the run must start from the model as it was.
    buffers = [(b, b.clone()) for b in model.buffers()]
    try:
        with torch.no_grad():
            with eval_mode(model):
                cached = _prefix_output(model, outer[-1], x)
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(0)
                whole = model(x)
                torch.manual_seed(0)
                with skipping(model, outer):
                    rest = model(cached)
    except Exception as e:  # noqa: BLE001 - any failure of the skipped model means: do not cache
        return f"the model does not run on {where}'s output alone ({type(e).__name__}: {e})".splitlines()[0]
    finally:
        with torch.no_grad():
            for b, kept in buffers:
                b.copy_(kept)
    if rest.shape != whole.shape or not torch.equal(rest, whole):
        return f"the model's forward is not a chain of modules at {outer[-1]} (its output differs without the prefix)"
    return Cut(tuple(outer), tuple(cached.shape[1:]))


NOTHING_BEFORE = "nothing runs before the first module that trains"


def choose(model: nn.Module, groups: list[LayerGroup], schedule: Schedule, augment: str | bool,
           input_shape: tuple[int, ...], channels_last: bool, images: int, max_mb: float) -> Cut | str | None:
    """What this run can cache, exactly: None = the backbone's pooled features, a `Cut` = a frozen
    prefix's output (`images` of them must fit in `max_mb`), a string = nothing, and why. The model
    must be set up as the run's first epoch sets it (`apply_epoch`)."""
    backbone = cache_blocker(model, groups, schedule, augment)
    if backbone is None or backbone.startswith("augmentation"):
        return backbone
    cut = frozen_prefix(model, schedule, input_shape, channels_last)
    if isinstance(cut, str):
        return backbone if cut == NOTHING_BEFORE else f"{backbone}, and the frozen prefix cannot be cached: {cut}"
    mb = cut.cache_mb(images, 4)
    if mb > max_mb:
        return (f"{backbone}, and the frozen prefix's outputs (up to {cut.last}) would take {mb:,.0f} MB "
                f"(trainer.feature_cache_max_mb={max_mb:g})")
    return cut
