"""Pixels: every source's image data as uint8 at its real value range, and the square resize.

`to_uint8` is the one value conversion every reader uses (image files, .npz arrays, torchvision
arrays), so no reader can clip, wrap or round a value range it does not know; `image_to_uint8` feeds
decoded PIL images through it; `resize_uint8` brings array sources to `dataset.image_size`
(src/data/load.py). Image files are resized while decoding, by `src.data.decode.read_image`.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms.v2.functional import resize

from src.config import ConfigError
from src.data.mapped import MappedImages


def resize_uint8(images: torch.Tensor | MappedImages, size: int, chunk: int = 512) -> torch.Tensor | MappedImages:
    """Square-resize a uint8 N x C x H x W tensor (antialiased bilinear), in chunks to bound memory.
    Images of the right size are returned as they are (mapped ones stay mapped, unread).

    torchvision's resize on float pixels (the same `interpolate` call: bilinear, antialiased, corners
    not aligned), then rounded and clamped here. Not torchvision's uint8 input: on a CPU with AVX2 or
    AVX-512 it takes a native uint8 kernel that rounds differently (about 10% of pixels off by one on
    the digits' 8 -> 96 px, measured: docs/data.md), and the default study's numbers must stay
    bit-identical (tests/test_data_readers.py compares the two paths on each source)."""
    if images.shape[-2:] == (size, size):
        return images.contiguous()
    if isinstance(images, MappedImages):  # not made by any reader today: read them whole, as a tensor
        images = images[:]
    out = []
    for start in range(0, len(images), chunk):
        x = resize(images[start : start + chunk].float(), [size, size], antialias=True)
        out.append(x.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def to_uint8(array: np.ndarray, where: str, full_scale: int | None = None) -> np.ndarray:
    """Pixel data of any supported type at its real value range, as uint8 0..255.

    The one conversion every loader uses (image files, .npz arrays, torchvision arrays), so no
    loader can clip, wrap or round a value range it does not know. uint8 is taken as is, bool as
    0/255, floats must be finite and in [0, 1]. Integers are scaled from `full_scale` when the
    source declares its bit depth (a TIFF's BitsPerSample, a 16-bit PNG/PGM), from 65535 for
    uint16, and otherwise from the smallest of 8, 16 or 32 bits that holds the maximum: the
    container alone does not say the depth (numpy makes int64 arrays of 8-bit data, Pillow reads
    every integer image as 32-bit mode I). Anything else is a ConfigError naming `where`.
    """
    kind = array.dtype.kind
    if array.dtype == np.uint8:
        return array
    if kind == "b":
        return array.astype(np.uint8) * np.uint8(255)
    if kind == "f":
        if array.size and not np.isfinite(array).all():
            raise ConfigError(f"{where}: non-finite pixel values (NaN or inf)")
        lo, hi = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
        if lo < 0 or hi > 1:
            raise ConfigError(f"{where}: float pixel values outside [0, 1] (min {lo:g}, max {hi:g}); "
                              "store images as 8- or 16-bit integers or as floats in [0, 1]")
        scaled = (array.astype(np.float32) if array.dtype.itemsize < 4 else array) * 255  # float16 lacks the precision
        return np.rint(scaled, out=scaled).astype(np.uint8)
    if kind in "iu":
        if array.size == 0:
            return array.astype(np.uint8)
        lo, hi = int(array.min()), int(array.max())
        if lo < 0:
            raise ConfigError(f"{where}: negative pixel values (min {lo}); expected unsigned image data")
        if full_scale is None:
            if kind == "u" and array.dtype.itemsize == 2:  # uint16 in either byte order
                full_scale = 65535
            else:
                full_scale = next((2**bits - 1 for bits in (8, 16, 32) if hi < 2**bits), None)
                if full_scale is None:
                    raise ConfigError(f"{where}: integer pixel values up to {hi} do not fit 32 bits")
        if hi > full_scale:
            raise ConfigError(f"{where}: pixel values up to {hi} exceed the declared full scale {full_scale}")
        if full_scale == 255:
            return array.astype(np.uint8)
        # Rounded to nearest in integer arithmetic: 16-bit 32768 -> 128, 65535 -> 255.
        return ((array.astype(np.int64) * 255 + full_scale // 2) // full_scale).astype(np.uint8)
    raise ConfigError(f"{where}: unsupported pixel type {array.dtype} (expected integer, bool or float images)")


def to_nchw(array: np.ndarray, where: str) -> torch.Tensor:
    """N x H x W or N x H x W x C image data (any supported pixel type) to uint8 N x C x H x W."""
    if not (array.ndim == 3 or (array.ndim == 4 and array.shape[-1] in (1, 3))):
        raise ConfigError(f"{where}: images of shape {tuple(array.shape)} are neither N x H x W "
                          "nor N x H x W x C with 1 or 3 channels")
    t = torch.from_numpy(np.ascontiguousarray(to_uint8(array, where)))
    return t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2).contiguous()


def image_to_uint8(img, where: str, full_scale: int | None = None) -> np.ndarray:
    """A decoded PIL image as uint8 H x W (grey) or H x W x 3 (colour) at its real value range.

    `convert("RGB")` would clip 16-bit and float data (a 16-bit X-ray comes out white), so those
    modes go through `to_uint8`. Transparency is composited onto white rather than dropped: the
    colour stored under transparent pixels is arbitrary (often black, sometimes leftover content),
    and white is how the image looks on a page.
    """
    mode = img.mode
    if mode in ("L", "RGB"):
        return np.asarray(img)
    if mode == "1":
        return np.asarray(img.convert("L"))
    if mode in ("I", "F") or mode.startswith("I;16"):
        array = np.asarray(img)
        return to_uint8(array.astype(array.dtype.newbyteorder("=")), where, full_scale)
    if "A" in mode or "a" in mode or "transparency" in img.info:
        rgba = np.asarray(img.convert("RGBA")).astype(np.int32)
        rgb, alpha = rgba[..., :3], rgba[..., 3:]
        return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
    return np.asarray(img.convert("RGB"))  # P, CMYK, YCbCr, LAB, HSV, RGBX


