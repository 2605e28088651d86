"""Loading image folders: decoded-data cache miss vs hit, parallel decode, JPEG draft decoding.

    python benchmarks/data.py [--images 3000] [--large 24] [--size 224] [--workers 1 2]

Builds its folders in a temporary directory: a folder of `--images` photos (the PACS photos,
paintings and cartoons of ../shared/data/pacs when present, 128 px JPEGs; synthetic JPEGs
otherwise) and a folder of `--large` 4000 x 3000 JPEGs (those photos upscaled). Prints:
  - the first load (cache miss: decode and write the cache) and the second (hit: memory-map), and
    their ratio (the target is >= 5x);
  - decode speed without the cache on 1 and 2 worker processes (images/s);
  - decode speed of the large JPEGs with and without draft decoding (1 worker), and the mean
    absolute pixel difference (0-255) between the two, over every image at --size.
Timings depend on the machine and on what else runs: run it alone.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from src.config import DataConfig
from src.data.load import load_dataset

REPO = Path(__file__).resolve().parents[1]
PACS = REPO.parent / "shared" / "data" / "pacs"


def _sources(n: int) -> list[tuple[str, Path | None]]:
    """(class, file) of up to n PACS images, classes interleaved; (class, None) for synthetic ones."""
    if PACS.is_dir():
        files = sorted(PACS.glob("*/*/*.jpg"))
        rng = np.random.default_rng(0)
        picked = [files[i] for i in rng.permutation(len(files))[:n]]
        return [(f.parent.name, f) for f in picked]
    return [(f"c{i % 7}", None) for i in range(n)]


def _synthetic(seed: int, size: tuple[int, int]) -> Image.Image:
    """A smooth picture with edges: a small random image upscaled."""
    small = np.random.default_rng(seed).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.BICUBIC)


def make_folder(root: Path, sources: list[tuple[str, Path | None]], size: tuple[int, int] | None) -> Path:
    """root/train/<class>/*.jpg from `sources`: copied as they are (size None) or resized to `size`."""
    for i, (cls, src) in enumerate(sources):
        out = root / "train" / cls / f"{i:05d}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        if src is not None and size is None:
            shutil.copyfile(src, out)
            continue
        img = Image.open(src).convert("RGB").resize(size, Image.BICUBIC) if src else _synthetic(i, size or (320, 240))
        img.save(out, quality=90)
    return root


def load(root: Path, size: int, **kw):
    start = time.perf_counter()
    bundle = load_dataset(DataConfig(kind="imagefolder", root=str(root), image_size=size, **kw))
    return bundle, time.perf_counter() - start


def pixels(bundle) -> torch.Tensor:
    return torch.cat([getattr(bundle, s).images[:] for s in ("train", "val", "test")]).float()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--large", type=int, default=24)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    import sklearn.model_selection  # noqa: F401  (the split's import, not part of any load timed below)

    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        folder = make_folder(tmp / "photos", _sources(args.images), None)
        # Two classes, so that the stratified val/test split-off works with a few images.
        two = [(f"c{i % 2}", src) for i, (_, src) in enumerate(_sources(max(args.large, 10)))]
        large = make_folder(tmp / "large", two, (4000, 3000))
        print(f"folders: {args.images} images ({'PACS' if PACS.is_dir() else 'synthetic'}), {len(two)} at "
              f"4000x3000, built in {time.perf_counter() - t:.0f} s; image_size {args.size}")

        miss, miss_s = load(folder, args.size, cache_dir=str(tmp / "cache"))
        hit, hit_s = load(folder, args.size, cache_dir=str(tmp / "cache"))
        assert (miss.cache, hit.cache) == ("miss", "hit") and torch.equal(pixels(miss), pixels(hit))
        print(f"cache miss (decode + write): {miss_s:7.2f} s")
        print(f"cache hit  (memory-map):     {hit_s:7.2f} s   {miss_s / hit_s:6.1f}x faster")

        for workers in args.workers:
            _, s = load(folder, args.size, cache="off", num_workers=workers)
            print(f"decode, no cache, {workers} worker(s): {args.images / s:7.0f} images/s ({s:.2f} s)")

        full, full_s = load(large, args.size, cache="off", num_workers=1, jpeg_draft=False)
        draft, draft_s = load(large, args.size, cache="off", num_workers=1, jpeg_draft=True)
        n = len(two)
        print(f"4000x3000 JPEGs, 1 worker: full decode {n / full_s:6.1f} images/s, draft "
              f"{n / draft_s:6.1f} images/s ({full_s / draft_s:.1f}x)")
        diff = (pixels(full) - pixels(draft)).abs()
        per_image = diff.mean(dim=(1, 2, 3))
        print(f"draft vs full decode at {args.size} px: mean |difference| {diff.mean():.2f} of 255 "
              f"(worst image {per_image.max():.2f}, 99th percentile pixel {diff.flatten().kthvalue(int(0.99 * diff.numel())).values:.0f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
