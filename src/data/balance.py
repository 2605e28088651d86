"""Held-out splits whose classes are far apart in size: there accuracy is mostly the large class's.

On PneumoniaMNIST-like data (val 135 pneumonia, 14 normal) a model that answers "pneumonia" for every
image scores val_acc 0.906, and validation accuracy is what picks the epoch (trainer.select) and ranks
configurations; its balanced accuracy is 0.5, chance. Nothing is changed (the data and the selection
rule are the user's), but the run says so once, with the number that would look like skill and where
the honest one is recorded."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from src.data.splits import DataBundle

# Largest over smallest class of a held-out split at which accuracy stops describing every class: a
# common threshold for "imbalanced"; PneumoniaMNIST's official test split (390 / 234, 1.7) is below it.
RATIO = 4.0


def imbalance_warning(bundle: DataBundle) -> str | None:
    """One line naming the val and test splits whose largest class has at least RATIO times the
    images of their smallest, with the accuracy of always answering the largest class; None if none."""
    parts = []
    for name in ("val", "test"):
        labels = getattr(bundle, name).labels
        counts = torch.bincount(labels.long(), minlength=len(bundle.classes))
        present = counts[counts > 0]
        if len(present) < 2 or int(present.max()) < RATIO * int(present.min()):
            continue
        big, small = int(counts.argmax()), int(torch.where(counts > 0, counts, counts.max() + 1).argmin())
        parts.append(f"{name} holds {int(counts[big])} {bundle.classes[big]!r} and {int(counts[small])} "
                     f"{bundle.classes[small]!r} images: always answering {bundle.classes[big]!r} scores "
                     f"{name}_acc {int(counts[big]) / len(labels):.3f}")
    if not parts:
        return None
    return (f"dataset {bundle.name}: classes far apart in size ({'; '.join(parts)}); validation accuracy picks the "
            f"epoch and ranks runs, so read val_balanced_acc and test_balanced_acc (result.json, per-class recall "
            f"in per_class; python -m src.report --metric test_balanced_acc)")
