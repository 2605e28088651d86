"""Images that are in a dataset twice, pixel for pixel: a val or test image that is also a training
image, and a training image that is also one of another class.

Real sources hold them: PneumoniaMNIST's train split (the copy in ../shared/data) has 5 images
twice, and 3 of its 270 val images are training images, byte for byte. A held-out image the model
trained on counts its memory, not its generalisation, in the accuracy that selects and reports
runs; one image under two labels caps training accuracy and teaches noise. Neither stops a run (the
data is the user's), but neither may pass unsaid: one warning per load counts them.

Compared on the decoded pixels before the run's resize (an image folder's are decoded at the run's
size already), so the same file saved twice, or one file linked into two classes, is found; a copy
re-encoded (another JPEG quality, a crop) is a different image here."""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from src.data.splits import DataBundle, Split

_CHUNK_BYTES = 16 * 2**20  # pixels read at a time: a mapped split reads only those rows, and holds no more


def _digests(split: Split) -> list[bytes]:
    # Chunked by bytes, not images: 1,024 images of 224 x 224 are 154 MB, which a split bigger than
    # memory (read from the mapped cache) must not need on top of a batch.
    per_image = math.prod(split.images.shape[1:])
    rows = max(1, _CHUNK_BYTES // max(1, per_image))
    out: list[bytes] = []
    for start in range(0, len(split), rows):
        block = split.images[start:start + rows].numpy()
        out += [hashlib.blake2b(image.tobytes(), digest_size=16).digest() for image in block]
    return out


def duplicates_warning(bundle: DataBundle) -> str | None:
    """One line counting the held-out images that are training images and the training images
    that are also another class's; None when there are none."""
    first_label: dict[bytes, int] = {}
    relabelled = 0
    for digest, label in zip(_digests(bundle.train), bundle.train.labels.tolist()):
        if first_label.setdefault(digest, label) != label:
            relabelled += 1
    parts = []
    for name in ("val", "test"):
        split = getattr(bundle, name)
        if n := sum(digest in first_label for digest in _digests(split)):
            parts.append(f"{n} of the {len(split)} {name} images {'is a training image' if n == 1 else 'are training images'}"
                         ", pixel for pixel (their accuracy counts what the model saw in training)")
    if relabelled:
        parts.append(f"{relabelled} training {'image is' if relabelled == 1 else 'images are'} also "
                     f"{'a training image' if relabelled == 1 else 'training images'} of another class (one image, two labels)")
    return f"dataset {bundle.name}: " + "; ".join(parts) if parts else None
