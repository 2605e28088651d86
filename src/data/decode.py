"""Decoding one image file: upright, at its real value range, resized on the short side and
centre-cropped to a square, with Pillow's warnings as one line. Runs in the decoding processes
(src/data/workers.py), which is why failures come back as values (`decode_chunk`)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from src.config import ConfigError
from src.data.paths import one_line, shown
from src.data.pixels import image_to_uint8


class UnreadableImage(Exception):
    """A file Pillow could not decode (bad_images decides: skip it or stop)."""


def full_scale(img) -> int | None:
    """The full-scale value an integer image's file declares, or None when it declares none."""
    if img.mode == "I;16S":
        return 32767
    if img.mode.startswith("I;16"):
        return 65535
    if img.mode != "I":
        return None
    if img.format in ("PNG", "PPM"):
        return 65535  # Pillow reads 16-bit PNG/PGM data (any maxval) as mode I scaled to 16 bits
    tags = getattr(img, "tag_v2", None)  # TIFF: BitsPerSample, and SampleFormat 2 = signed
    if tags is not None and 258 in tags:
        bits, fmt = tags[258], tags.get(339, 1)
        bits = bits[0] if isinstance(bits, tuple) else bits
        fmt = fmt[0] if isinstance(fmt, tuple) else fmt
        return 2 ** (bits - 1) - 1 if fmt == 2 else 2**bits - 1
    return None


def decode(path: Path, draft: int | None = None):
    """An image file upright (EXIF orientation applied) at its real value range, as a PIL image
    in mode L or RGB (8-bit), and Pillow's warnings about it as one line (or None).

    `draft`: a JPEG is decoded shrunk by 1/2, 1/4 or 1/8 (libjpeg's DCT scaling) while both sides
    stay >= `draft` pixels, which the later resize to `draft` needs anyway: a 12-megapixel photo
    decodes several times faster, with pixels close to a full decode's (docs/data.md)."""
    from PIL import Image, ImageOps

    try:
        # Pillow warns about damaged metadata (and images near the bomb limit) on stderr, several
        # lines each; they become one log line per file instead.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # recorded, whatever the caller's filters (even "error")
            with Image.open(path) as img:
                if draft and img.format == "JPEG":
                    img.draft(img.mode, (draft, draft))
                img.load()
                scale = full_scale(img)  # read before exif_transpose, which may drop the tags
                # Phone photos store pixels as the sensor saw them plus an orientation tag.
                ImageOps.exif_transpose(img, in_place=True)  # in place: no copy of an untagged image
                # 8-bit L and RGB, the common case, skip a round trip through numpy.
                upright = img if img.mode in ("L", "RGB") else Image.fromarray(
                    image_to_uint8(img, shown(path), scale))
        note = "; ".join(" ".join(str(w.message).split()) for w in caught) if caught else None
        return upright, note
    except ConfigError:  # a value range refused by image_to_uint8: not a decoding failure
        raise
    # Pillow's plugins raise a wide range of types on hostile files (OSError, SyntaxError,
    # struct.error, EOFError, IndexError, KeyError, ZeroDivisionError, DecompressionBombError,
    # which is not an OSError) and the set changes between versions; Pillow's own fuzzer catches
    # Exception for that reason. Only Pillow's decoding and mode conversion run in this block
    # besides image_to_uint8 (whose refusals are re-raised above), so what it raises is the file's.
    except Exception as err:
        raise UnreadableImage(one_line(err)) from None


def read_image(path: Path, size: int, draft: bool = False) -> tuple[np.ndarray, str | None]:
    """Decode, resize the short side to `size` and centre-crop to a square: uint8 3 x size x size,
    and the decode's warnings.

    Not torchvision's Resize(size) + CenterCrop(size), which would change the cached pixels of most
    photos: it truncates the long side (a 4032 x 3024 photo at 224 px: 298 wide, here 299, rounded)
    and puts the crop at round((w - size) / 2), half to even (57.5 becomes 58; here floored, 57).
    tests/test_data_readers.py pins this geometry against torchvision's resize at explicit sizes."""
    from PIL import Image

    img, note = decode(path, size if draft else None)
    if img.mode != "RGB":
        img = img.convert("RGB")
    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    # A numpy slice, not img.crop: crop re-runs Pillow's decompression-bomb check on our own
    # already-decoded image, a warning (or error) that belongs to decoding alone.
    square = np.asarray(img, dtype=np.uint8)[top : top + size, left : left + size]
    return square.transpose(2, 0, 1), note


def decode_chunk(paths: list[Path], size: int, draft: bool) -> list[tuple[np.ndarray | None, str, str | None]]:
    """Each file as (pixels, "ok", warnings) or (None, "unreadable" | "refused", why). Runs in a
    worker process: it returns failures instead of raising or logging, so that the parent handles
    them in file order, with the messages of a one-process decode."""
    out = []
    for path in paths:
        try:
            pixels, note = read_image(path, size, draft)
            out.append((np.ascontiguousarray(pixels), "ok", note))
        except UnreadableImage as err:
            out.append((None, "unreadable", str(err)))
        except ConfigError as err:
            out.append((None, "refused", str(err)))
    return out
