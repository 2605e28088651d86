"""Augmentation presets (`dataset.augment`): what each name does to a training batch, in one place.

A preset takes a batch of uint8 images (N, C, H, W) on the run's device and returns it augmented,
as float32 in [0, 255] of the same shape (the batch path normalises it next). Every random choice
is drawn from the generator it is given (the training batches' own, seeded from the run seed), so
the same seed gives the same augmented batches. Each image gets its own parameters: a crop box, a
flip and RandAugment's operations per image, as the usual recipes do (torchvision's transforms
applied to a whole batch would draw one crop for all of it). Augmentation runs inside the batch
loop, so its time is part of the measured training time; FLOP counts are the model's only.

A new preset is one entry in PRESETS: its function and the parameters recorded with every run
(`augment_params` in result.json).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align
from torchvision.transforms import InterpolationMode, v2

from src.config import ConfigError, augment_name

# Random-resized crop: the fraction of the image's area a crop keeps, and its aspect-ratio range.
# (0.25, 1) rather than ImageNet's (0.08, 1): the images here are small or upscaled from tiny ones
# (the development digits are 8x8), and a crop of 8% of an 8x8 digit keeps about 2x2 of its pixels,
# too little of the object to tell the class. timm and torchvision use the same ratio range.
CROP_SCALE = (0.25, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
CROP_TRIES = 10  # torchvision's: draws per image before falling back to a centre crop
# RandAugment as in its paper and torchvision's defaults: 2 operations per image at magnitude 9/30.
RANDAUGMENT = {"num_ops": 2, "magnitude": 9, "num_magnitude_bins": 31, "interpolation": "nearest", "fill": 0}

Augment = Callable[[torch.Tensor, torch.Generator, bool], torch.Tensor]


@dataclass(frozen=True)
class Preset:
    """One `dataset.augment` value: what it does and what a run records about it."""

    apply: Augment  # (uint8 batch, generator, hflip) -> float batch in [0, 255]
    params: Callable[[bool], dict[str, Any]]  # hflip -> the settings recorded as `augment_params`


def _none(x: torch.Tensor, generator: torch.Generator, hflip: bool) -> torch.Tensor:
    return x.float()


def _flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image flipped left-right with probability 1/2."""
    flip = (torch.rand(len(x), generator=generator) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def _shift(x: torch.Tensor, generator: torch.Generator, hflip: bool) -> torch.Tensor:
    """Random shifts of up to 1/8 of the side, edges replicated (the project's first augmentation,
    `augment: true`; kept draw for draw so that old runs compute the same); flips if `hflip`."""
    n, _, h, w = x.shape
    pad = max(1, h // 8)
    padded = F.pad(x.float(), (pad, pad, pad, pad), mode="replicate")
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, :, None]
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, :]
    out = padded[torch.arange(n, device=x.device)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
    return _flip(out, generator) if hflip else out


def crop_boxes(n: int, h: int, w: int, generator: torch.Generator) -> torch.Tensor:
    """Per image, a random-resized-crop box (x1, y1, x2, y2) in pixels, drawn as torchvision's
    RandomResizedCrop draws one: up to CROP_TRIES (area, log-ratio) draws, the first that fits,
    else a centre crop. Vectorised: every image makes all its draws, so the count is fixed."""
    area = h * w
    lo, hi = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    target = area * (CROP_SCALE[0] + (CROP_SCALE[1] - CROP_SCALE[0]) * torch.rand(n, CROP_TRIES, generator=generator))
    ratio = torch.exp(lo + (hi - lo) * torch.rand(n, CROP_TRIES, generator=generator))
    cw, ch = torch.round(torch.sqrt(target * ratio)), torch.round(torch.sqrt(target / ratio))
    fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = fits.float().argmax(dim=1, keepdim=True)  # the first draw that fits
    cw, ch = cw.gather(1, first).squeeze(1), ch.gather(1, first).squeeze(1)
    top = torch.floor(torch.rand(n, generator=generator) * (h - ch + 1))
    left = torch.floor(torch.rand(n, generator=generator) * (w - cw + 1))
    # torchvision's fallback: the whole image, cut to the ratio range if it is outside it
    fw, fh = float(w), float(h)
    if w / h < CROP_RATIO[0]:
        fh = float(round(w / CROP_RATIO[0]))
    elif w / h > CROP_RATIO[1]:
        fw = float(round(h * CROP_RATIO[1]))
    none_fit = ~fits.any(dim=1)
    cw, ch = torch.where(none_fit, fw, cw), torch.where(none_fit, fh, ch)
    top = torch.where(none_fit, float((h - fh) // 2), top)
    left = torch.where(none_fit, float((w - fw) // 2), left)
    return torch.stack([left, top, left + cw, top + ch], dim=1)


def _resized_crops(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Each image's box resized back to the batch's size, all in one roi_align call: bilinear where
    the crop is enlarged, the average of several samples per output pixel where it is shrunk
    (sampling_ratio=-1), as an antialiased resize would."""
    n, _, h, w = x.shape
    rois = torch.cat([torch.arange(n, dtype=torch.float32)[:, None], boxes], dim=1).to(x.device)
    return roi_align(x.float(), rois, output_size=(h, w), spatial_scale=1.0, sampling_ratio=-1, aligned=True)


def _standard(x: torch.Tensor, generator: torch.Generator, hflip: bool) -> torch.Tensor:
    """Random-resized crop (CROP_SCALE, CROP_RATIO) and a horizontal flip, each image its own."""
    n, _, h, w = x.shape
    return _flip(_resized_crops(x, crop_boxes(n, h, w, generator)), generator)


# The mode as an enum, not its name: torchvision before 0.29 (e.g. 0.26, a GPU image's) refuses the string.
_RANDAUGMENT = v2.RandAugment(**{**RANDAUGMENT, "interpolation": InterpolationMode(RANDAUGMENT["interpolation"])})  # type: ignore[arg-type]


def randaugment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """RandAugment on a uint8 batch, each image its own operations and signs (torchvision's
    operations and magnitudes, v2.RandAugment's). With one magnitude for all, images that drew the
    same operation and sign get the same transform, so each such group is one batched call."""
    space = _RANDAUGMENT._AUGMENTATION_SPACE
    names = list(space)
    n, _, h, w = x.shape
    ops = torch.randint(0, len(names), (n, _RANDAUGMENT.num_ops), generator=generator)
    negative = torch.rand(n, _RANDAUGMENT.num_ops, generator=generator) <= 0.5
    out = x.clone()
    for step in range(_RANDAUGMENT.num_ops):
        keys = (ops[:, step] * 2 + negative[:, step]).tolist()
        for key in sorted(set(keys)):
            name, neg = names[key // 2], bool(key % 2)
            magnitudes_fn, signed = space[name]
            magnitudes = magnitudes_fn(_RANDAUGMENT.num_magnitude_bins, h, w)
            magnitude = 0.0 if magnitudes is None else float(magnitudes[_RANDAUGMENT.magnitude])
            if signed and neg:
                magnitude = -magnitude
            idx = torch.tensor([i for i, k in enumerate(keys) if k == key], device=x.device)
            out[idx] = _RANDAUGMENT._apply_image_or_video_transform(
                out[idx], name, magnitude, interpolation=_RANDAUGMENT.interpolation, fill=_RANDAUGMENT._fill)
    return out


def _randaugment(x: torch.Tensor, generator: torch.Generator, hflip: bool) -> torch.Tensor:
    """`standard`, then RandAugment on its result (timm's and torchvision's recipe order)."""
    cropped = _standard(x, generator, hflip).round_().clamp_(0, 255).to(torch.uint8)
    return randaugment(cropped, generator).float()


def _standard_params(hflip: bool) -> dict[str, Any]:
    return {"crop_scale": list(CROP_SCALE), "crop_ratio": [round(r, 4) for r in CROP_RATIO],
            "crop_resize": "roi_align bilinear, area-averaged when shrinking", "hflip_p": 0.5}


PRESETS: dict[str, Preset] = {
    "none": Preset(_none, lambda hflip: {}),
    "shift": Preset(_shift, lambda hflip: {"max_shift": "1/8 of the side", "padding": "replicate",
                                           "hflip_p": 0.5 if hflip else 0.0}),
    "standard": Preset(_standard, _standard_params),
    "randaugment": Preset(_randaugment, lambda hflip: _standard_params(hflip) | {"randaugment": dict(RANDAUGMENT)}),
}


def preset(name: Any) -> Preset:
    """The preset called `name` (true/false mapped as in DataConfig); ConfigError naming
    dataset.augment if there is none."""
    key = augment_name(name)
    if key not in PRESETS:
        raise ConfigError(f"dataset.augment={name!r} is not allowed (expected {' | '.join(map(repr, PRESETS))})")
    return PRESETS[key]


def augment_params(name: Any, hflip: bool) -> dict[str, Any]:
    """What preset `name` does, as recorded in result.json (`augment_params`)."""
    return {"preset": augment_name(name)} | preset(name).params(hflip)
