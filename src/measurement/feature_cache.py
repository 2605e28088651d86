"""Frozen backbone, computed once: cache the pooled features and train the head on them.

When nothing below the classifier trains, no BatchNorm statistic moves (frozen_bn="eval") and
the inputs are not augmented, the backbone is a fixed function of each image: running it every
epoch only repeats the same arithmetic. The cache runs it once per image (train, val and test)
and every epoch then trains the classifier alone, with the model's own head dropout applied to the
cached features exactly where the model applies it (between pooling and the classifier).

Cost is reported honestly: the one backbone pass over the training images counts in the train
FLOPs and the train time; the val/test passes count in neither, as evaluation never does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from src.data.batches import batch_indices, batches_per_pass
from src.models import head_param_names
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


@torch.inference_mode()
def extract(model: nn.Module, batches, device: torch.device, amp_dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pre-logits features (float32) and labels for every batch, the model in eval mode."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    feats, labels = [], []
    for x, y in batches:
        with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            feats.append(model.forward_head(model.forward_features(x), pre_logits=True).float())
        labels.append(y)
    for m, mode in modes:
        m.training = mode
    # inference tensors cannot be saved for backward; a plain copy can (the head's input needs no grad)
    return torch.cat(feats).clone(), torch.cat(labels).clone()


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

    def __len__(self) -> int:
        return self.passes * batches_per_pass(len(self.labels), self.batch_size, self.shuffle)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # data.Batches' indices: the same samples in the same order, pass by pass
        for idx in batch_indices(len(self.labels), self.batch_size, self.shuffle, self.generator, self.passes,
                                 self.labels.device):
            yield self.features[idx], self.labels[idx]


@dataclass
class Cache:
    head: CachedHead
    train: FeatureBatches
    val: FeatureBatches
    test: FeatureBatches
    feature_dim: int
    train_extract_s: float  # the backbone pass over the training images: part of the train time


def build_cache(model: nn.Module, train, val, test, device: torch.device, amp_dtype: torch.dtype | None,
                eval_batch_size: int) -> Cache:
    """Run the frozen backbone once over every split. `train` is a `data.Batches` (its generator
    is reused so the cached epochs shuffle as the uncached ones would)."""
    unshuffled = train.unshuffled()
    start = time.perf_counter()
    tr = extract(model, unshuffled, device, amp_dtype)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    extract_s = time.perf_counter() - start
    va, te = extract(model, val, device, amp_dtype), extract(model, test, device, amp_dtype)
    head = CachedHead(model.get_classifier(), float(getattr(model, "drop_rate", 0.0) or 0.0))
    return Cache(
        head=head,
        train=FeatureBatches(*tr, train.batch_size, shuffle=True, generator=train.generator, passes=train.passes),
        val=FeatureBatches(*va, eval_batch_size),
        test=FeatureBatches(*te, eval_batch_size),
        feature_dim=tr[0].shape[1],
        train_extract_s=extract_s,
    )
