"""The loops: one training epoch and one evaluation pass, as plain functions."""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score
from torch import nn
from tqdm.auto import tqdm

from src.models import eval_mode


def balanced_accuracy(labels: torch.Tensor, preds: torch.Tensor) -> float:
    """Mean per-class recall over the classes present in `labels` (scikit-learn's definition); a
    class that is predicted but absent from `labels` has no recall and is left out, silently."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return float(balanced_accuracy_score(labels.numpy(), preds.numpy()))


@dataclass(frozen=True)
class EpochStats:
    loss: float
    samples: int
    seconds: float
    # Accuracy of the training forward passes themselves (train-mode model, augmented inputs, weights
    # changing within the epoch): no extra pass, so it is a cheap over-fitting signal beside val_acc,
    # not an evaluation of any one set of weights.
    acc: float | None = None


@dataclass(frozen=True)
class EvalStats:
    loss: float
    acc: float
    balanced_acc: float
    samples: int
    seconds: float
    # counts, rows the true class and columns the predicted one (the logits' width: every class)
    confusion: list[list[int]] = field(default_factory=list)


def confusion_matrix(labels: torch.Tensor, preds: torch.Tensor, num_classes: int) -> list[list[int]]:
    """Counts of (true, predicted) class pairs: row i, column j is how many of class i were called j."""
    counts = torch.bincount(labels.long() * num_classes + preds.long(), minlength=num_classes * num_classes)
    return counts.view(num_classes, num_classes).tolist()


def _autocast(device: torch.device, amp_dtype: torch.dtype | None):
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
    desc: str = "train",
    penalty: Callable[[], torch.Tensor] | None = None,
) -> EpochStats:
    """One pass over `batches`, stepping the scheduler per step. The caller sets train/freeze state.
    `penalty` (L2-SP) is added to the loss that is optimised; the reported loss is the data loss."""
    _sync(device)
    start = time.perf_counter()
    # Summed on the device: reading the loss every step would force a sync per step.
    total = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    samples = 0
    # disable=None: tqdm draws only when its stream (stderr) is a terminal. Redirected to a file
    # (a multirun's log, `make grid > log 2>&1`), every redraw would be one more line in it.
    bar = tqdm(batches, desc=desc, leave=False, disable=None if progress else True, dynamic_ncols=True)
    for x, y in bar:
        with _autocast(device, amp_dtype):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        (loss + penalty() if penalty is not None else loss).backward()
        optimizer.step()
        scheduler.step()
        total += loss.detach().float() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()  # from the pass just taken: no extra forward
        samples += len(y)
    _sync(device)
    return EpochStats(loss=float(total) / max(1, samples), samples=samples, seconds=time.perf_counter() - start,
                      acc=int(correct) / samples if samples else None)


@torch.inference_mode()
def predict(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (float32, on CPU) and labels for every batch, with the model in eval mode."""
    logits, labels = [], []
    with eval_mode(model):  # each module back in its own mode afterwards: frozen BatchNorm stays eval
        for x, y in batches:
            with _autocast(device, amp_dtype):
                logits.append(model(x).float().cpu())
            labels.append(y.cpu())
    return torch.cat(logits), torch.cat(labels)


def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
) -> EvalStats:
    start = time.perf_counter()
    logits, labels = predict(model, batches, device, amp_dtype)
    preds = logits.argmax(1)
    return EvalStats(
        loss=float(F.cross_entropy(logits, labels)),
        # exact ratio of counts: a float32 mean would print 342/360 as 0.94999999
        acc=int((preds == labels).sum()) / len(labels),
        balanced_acc=balanced_accuracy(labels, preds),
        samples=len(labels),
        seconds=time.perf_counter() - start,
        confusion=confusion_matrix(labels, preds, logits.shape[1]),
    )
