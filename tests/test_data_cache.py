"""The decoded-data cache of image folders (src/data/cache.py), parallel decoding and JPEG draft
decoding: real folders of tiny images, real processes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import src.strategies  # noqa: F401  (registers the strategies RunConfig checks against)
from src.config import ConfigError, DataConfig
from src.data.cache import MappedImages
from src.data.load import _decode, load_dataset

SIZE = 16


def _folder(root: Path, per_class: int = 10, bad: bool = False) -> Path:
    """train/<a,b> of `per_class` small random JPEGs and PNGs each (no val/test: both split off)."""
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / "train" / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            suffix = "jpg" if i % 2 else "png"
            pixels = rng.integers(0, 256, (24 + i, 30, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "train" / cls / f"{i}.{suffix}")
    if bad:
        (root / "train" / "a" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return root


def _load(root: Path, cache_dir: Path | str | None, **kw):
    return load_dataset(DataConfig(kind="imagefolder", root=str(root), image_size=SIZE, cache_dir=str(cache_dir)
                                   if cache_dir is not None else None, **kw))


def _pixels(bundle) -> dict[str, torch.Tensor]:
    return {s: getattr(bundle, s).images[:] for s in ("train", "val", "test")} | {
        f"{s}_labels": getattr(bundle, s).labels for s in ("train", "val", "test")}


def _same(a, b) -> None:
    pa, pb = _pixels(a), _pixels(b)
    assert pa.keys() == pb.keys()
    for key in pa:
        assert torch.equal(pa[key], pb[key]), key


def test_second_load_is_a_hit_with_the_same_pixels(tmp_path):
    root, cache = _folder(tmp_path / "data"), tmp_path / "cache"
    off = _load(root, cache, cache="off")
    assert off.cache == "off" and not cache.exists()  # off writes nothing
    first, second = _load(root, cache), _load(root, cache)
    assert (first.cache, second.cache) == ("miss", "hit")
    assert isinstance(second.train.images, MappedImages)  # memory-mapped, split by index
    _same(off, first)
    _same(first, second)
    assert len([p for p in cache.iterdir()]) == 1  # one entry, no temporary folder left behind


def test_a_changed_file_is_a_miss(tmp_path):
    root, cache = _folder(tmp_path / "data"), tmp_path / "cache"
    before = _load(root, cache)
    changed = root / "train" / "b" / "3.jpg"
    Image.fromarray(np.zeros((24 + 3, 30, 3), dtype=np.uint8)).save(changed)
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))  # a new mtime even on a coarse clock
    after = _load(root, cache)
    assert after.cache == "miss"
    assert not torch.equal(before.train.images[:], after.train.images[:]) or \
        not torch.equal(before.test.images[:], after.test.images[:])
    _same(after, _load(root, cache, cache="off"))


def test_refresh_rebuilds_and_settings_are_in_the_key(tmp_path):
    root, cache = _folder(tmp_path / "data"), tmp_path / "cache"
    first = _load(root, cache)
    [entry] = list(cache.iterdir())
    inode = (entry / "train.npy").stat().st_ino
    refreshed = _load(root, cache, cache="refresh")
    assert refreshed.cache == "refresh" and (entry / "train.npy").stat().st_ino != inode
    _same(first, refreshed)
    assert _load(root, cache).cache == "hit"
    assert _load(root, cache, jpeg_draft=False).cache == "miss"  # decode settings change the key
    assert len(list(cache.iterdir())) == 2


def test_an_unwritable_cache_folder_falls_back_to_decoding(tmp_path, caplog):
    root = _folder(tmp_path / "data")
    (tmp_path / "file").write_text("not a folder")
    with caplog.at_level("WARNING"):
        d = _load(root, tmp_path / "file" / "cache")
    assert d.cache == "off" and len(d.train) + len(d.val) + len(d.test) == 20
    assert any("cannot be written" in r.getMessage() and "decoding without the cache" in r.getMessage()
               for r in caplog.records)


def test_parallel_decode_matches_one_process_and_keeps_bad_file_handling(tmp_path, caplog):
    root = _folder(tmp_path / "data", bad=True)
    one = _load(root, None, cache="off", num_workers=0)
    two = _load(root, None, cache="off", num_workers=2)
    _same(one, two)
    assert one.skipped_files == two.skipped_files == [str(root / "train" / "a" / "broken.jpg")]
    hit = _load(root, tmp_path / "c")
    hit = _load(root, tmp_path / "c")
    assert hit.cache == "hit" and hit.skipped_files == one.skipped_files  # the cache keeps the skipped list
    with pytest.raises(ConfigError, match=r"broken\.jpg: unreadable image .*dataset\.bad_images=skip"):
        _load(root, tmp_path / "c", num_workers=2, bad_images="fail")


@pytest.mark.parametrize("dataset, key", [
    ({"num_workers": -1}, "dataset.num_workers"),
    ({"cache_dir": " "}, "dataset.cache_dir"),
    ({"cache": "sometimes"}, "dataset.cache"),
])
def test_config_refuses_bad_cache_settings(tiny_config, dataset, key):
    with pytest.raises(ConfigError) as err:
        tiny_config(dataset=dataset)
    assert key in str(err.value) and "\n" not in str(err.value)


def _writer(root: str, cache: str, barrier, results) -> None:
    """One of two processes loading the same new folder: both pass their look-up (a miss) before
    either publishes its entry, so both decode and race to rename."""
    import hashlib

    from src.data import load

    writer = load._cache_writer

    def slow_writer(*args):
        write = writer(*args)

        def slow(folder):
            meta = write(folder)
            time.sleep(0.5)
            return meta

        return slow

    load._cache_writer = slow_writer
    barrier.wait(timeout=60)
    d = load.load_dataset(DataConfig(kind="imagefolder", root=root, image_size=SIZE, cache_dir=cache, num_workers=0))
    digest = hashlib.sha256()
    for s in ("train", "val", "test"):
        digest.update(getattr(d, s).images[:].numpy().tobytes())
        digest.update(getattr(d, s).labels.numpy().tobytes())
    results.put((d.cache, digest.hexdigest()))


def test_two_processes_building_the_same_entry_at_once(tmp_path):
    import multiprocessing

    root, cache = _folder(tmp_path / "data"), tmp_path / "cache"
    # fork: the children start at once with everything imported (as the decode pool's workers do).
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(root), str(cache), barrier, results)) for _ in range(2)]
    for proc in procs:
        proc.start()
    outs = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    assert [cache for cache, _ in outs] == ["miss", "miss"]  # both decoded; neither read a partial entry
    assert outs[0][1] == outs[1][1]
    after = _load(root, cache)
    assert after.cache == "hit"
    _same(after, _load(root, None, cache="off"))
    assert [p.name for p in cache.iterdir() if p.name.startswith(".")] == []  # no temporary folder left


def _photo_like(path: Path, size: tuple[int, int], seed: int) -> None:
    """A smooth image with edges (a small random picture upscaled), as a JPEG."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    small.resize(size, Image.BICUBIC).save(path, quality=90)


def test_jpeg_draft_decodes_shrunk_and_stays_close(tmp_path):
    root = tmp_path / "data"
    for cls in ("a", "b"):
        (root / "train" / cls).mkdir(parents=True)
        for i in range(4):
            _photo_like(root / "train" / cls / f"{i}.jpg", (1600, 1200), seed=i)
    img, _ = _decode(root / "train" / "a" / "0.jpg", 64)
    assert img.size == (200, 150)  # 1/8, the largest DCT scaling: both sides stay >= 64
    kw = {"cache": "off", "image_size": 64, "val_fraction": 0.25, "test_fraction": 0.25}
    full = load_dataset(DataConfig(kind="imagefolder", root=str(root), jpeg_draft=False, **kw))
    draft = load_dataset(DataConfig(kind="imagefolder", root=str(root), jpeg_draft=True, **kw))
    both = [torch.cat([getattr(d, s).images for s in ("train", "val", "test")]).float() for d in (full, draft)]
    diff = (both[0] - both[1]).abs().mean().item()
    assert 0 < diff < 2.0, diff  # measured 0.5 to 1 grey level on photos (docs/data.md)


def test_result_records_the_data_load(tmp_path, tiny_config):
    from src.training.run import run

    root = _folder(tmp_path / "data")
    cfg = tiny_config(dataset={"kind": "imagefolder", "root": str(root), "image_size": 32, "train_per_class": None,
                               "cache_dir": str(tmp_path / "cache")}, trainer={"epochs": 1})
    assert load_dataset(cfg.dataset).cache == "miss"  # an earlier run's decode (one run() keeps the test short)
    run(cfg, tmp_path / "run")
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["data_cache"] == "hit" and result["data_load_s"] > 0 and result["train_samples"] == 12


MEMORY_CHILD = """
import json, sys
import torch
from src.config import DataConfig
from src.data.load import Batches, Split, load_dataset
from src.models import Normalization


def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024


torch.set_num_threads(1)
model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 8, stride=8), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                            torch.nn.Linear(4, 2))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
norm = Normalization(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def passes(train, evaluate):
    seen = 0
    for x, y in Batches(train, 32, norm, torch.device("cpu"), shuffle=True):  # one training pass
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        seen += len(y)
    with torch.no_grad():
        for split in evaluate:  # the evaluation passes
            for x, y in Batches(split, 64, norm, torch.device("cpu")):
                model(x)
                seen += len(y)
    return seen


# What the run needs whatever the data's size (the libraries; a training and an evaluation pass on
# 128 images in memory), before the data is loaded: the peak after it is compared to this.
import sklearn.model_selection  # noqa: F401
small = Split(torch.randint(0, 256, (128, 3, 224, 224), dtype=torch.uint8), torch.arange(128) % 2)
passes(small, [small])
del small
base = status("VmHWM")
data = load_dataset(DataConfig(kind="imagefolder", root=sys.argv[1], image_size=224, cache_dir=sys.argv[2]))
seen = passes(data.train, [data.val, data.test])
total = sum(len(s) for s in (data.train, data.val, data.test))
print(json.dumps({"cache": data.cache, "base": base, "peak": status("VmHWM"), "seen": seen, "images": total,
                  "bytes": total * 3 * 224 * 224}))
"""


@pytest.mark.slow
def test_more_data_than_memory_trains_from_the_mapped_cache(tmp_path):
    """A child process builds the cache of ~380 MB of decoded images, trains one pass and evaluates
    val and test from it: its peak resident size grows by well under the data's size."""
    import subprocess
    import sys

    root = tmp_path / "big"
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / "train" / cls).mkdir(parents=True)
        for i in range(1250):  # tiny files that decode to 224 x 224: 150 kB each in the cache
            Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(root / "train" / cls / f"{i}.png")
    out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(root), str(tmp_path / "cache")],
                         check=False, capture_output=True, text=True, timeout=900, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-3000:]
    m = json.loads(out.stdout.strip().splitlines()[-1])
    assert m["cache"] == "miss" and m["seen"] >= m["images"] - 1 and m["bytes"] > 350e6
    grown = m["peak"] - m["base"]
    assert grown < m["bytes"] / 4, (grown / 1e6, m["bytes"] / 1e6)  # holding the data would grow it by all of it
