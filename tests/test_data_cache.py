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

from src.config import ConfigError, DataConfig
from src.data.decode import decode
from src.data.load import load_dataset
from src.data.mapped import MappedImages

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
    """One of two processes loading the same new folder: both pass their look-up (a miss) and write
    their entry before either publishes it (the barrier, again), so both decode and race to rename."""
    import hashlib

    from src.data import load, parts

    writer = parts._cache_writer

    def writer_then_wait(*args):
        write = writer(*args)

        def both_written(folder):
            meta = write(folder)
            barrier.wait(timeout=60)  # the other process has written its entry too, unpublished
            return meta

        return both_written

    parts._cache_writer = writer_then_wait
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
    img, _ = decode(root / "train" / "a" / "0.jpg", 64)
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
from src.data.batches import Batches
from src.data.load import load_dataset
from src.data.splits import Split
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


# --- issue 23: nothing lost when the disk fills, a damaged entry is rebuilt ----------------------

def _in_child(fn, *args):
    """fn(*args) in a forked child, its return value back: a regression to a SIGBUS (a store into a
    mapped file on a full disk) kills the child, not the test session. The child must not run
    torch's parallel kernels (their thread pool does not survive fork): `_read_and_report` reads
    the split folders, it does not split or resize them."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    ours, theirs = ctx.Pipe()

    def target():
        import faulthandler

        faulthandler.dump_traceback_later(120, exit=True)  # a hang shows where, and ends
        try:
            theirs.send(("ok", fn(*args)))
        except BaseException as err:  # noqa: BLE001
            theirs.send(("raised", f"{type(err).__name__}: {err}"))

    proc = ctx.Process(target=target)
    proc.start()
    got = ours.recv() if ours.poll(200) else None
    proc.join(timeout=60)
    assert proc.exitcode == 0 and got is not None, f"the child ended with exit code {proc.exitcode}"
    assert got[0] == "ok", got[1]
    return got[1]


class _Warnings:
    """The src.data loggers' warnings, kept (a forked child has no caplog)."""

    def __enter__(self):
        import logging

        self.records, self.handler = [], logging.Handler(logging.WARNING)
        self.handler.emit = lambda record: self.records.append(record.getMessage())
        self.logger = logging.getLogger("src.data")
        self.logger.addHandler(self.handler)
        return self.records

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)


def _read(root: Path, cache_dir: Path | None, **kw):
    from src.data.parts import read_parts

    return read_parts(DataConfig(kind="imagefolder", root=str(root), image_size=SIZE, num_workers=0,
                                 cache_dir=str(cache_dir) if cache_dir else None, **kw), root, progress=False)


def _arrays(parts) -> dict[str, np.ndarray]:
    return {f"{part}{kind}": getattr(split, attr)[:].numpy()
            for part, split in parts.splits.items() for kind, attr in (("", "images"), ("_labels", "labels"))}


def _read_and_report(root: Path, cache: Path) -> dict:
    with _Warnings() as warned:
        parts = _read(root, cache)
    return {"cache": parts.cache, "arrays": _arrays(parts), "warnings": warned}


@pytest.fixture
def small_disk(tmp_path):
    """A real tmpfs of 512 kB (root only; skipped otherwise), unmounted afterwards."""
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "small-disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if made.returncode:
        pytest.skip(f"cannot mount a tmpfs: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)


def _fill(disk: Path, leave_pages: int) -> None:
    """Fill `disk` with one file so that exactly `leave_pages` pages stay free."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    with open(disk / "filler", "wb") as f:
        f.write(b"\0" * (free - leave_pages * st.f_frsize))
    assert os.statvfs(disk).f_bavail == leave_pages


def test_a_full_disk_at_any_point_of_the_write_falls_back_to_memory(tmp_path, small_disk):
    """The cache folder is a real, nearly full tmpfs, with 0, 1, ... pages free: the disk fills
    while the pixels, the labels or meta.json are written. Each load warns (naming the setting),
    decodes in memory the pixels a load without the cache gets, and leaves no temporary folder;
    with room enough, the entry is built."""
    root = _folder(tmp_path / "data")
    expected = _arrays(_read(root, None, cache="off"))
    probe = _read(root, tmp_path / "probe")  # the entry's size, in pages, on a disk with room
    [entry] = list((tmp_path / "probe").iterdir())
    page = os.statvfs(small_disk).f_frsize
    needed = sum(-(-f.stat().st_size // page) for f in entry.iterdir())
    assert probe.cache == "miss" and needed >= 3
    for free in [*range(needed), needed]:
        _fill(small_disk, free)
        got = _in_child(_read_and_report, root, small_disk / "cache")
        left = sorted(p.name for p in (small_disk / "cache").iterdir())
        if free < needed:
            assert got["cache"] == "off", free
            assert any("dataset.cache_dir=" in w and "No space left on device" in w and "dataset.cache=off" in w
                       for w in got["warnings"]), got["warnings"]
            assert left == [], (free, left)  # no temporary folder, nothing half-written
        else:
            assert got["cache"] == "miss" and len(left) == 1 and not got["warnings"]
        assert got["arrays"].keys() == expected.keys()
        for key, value in expected.items():
            assert np.array_equal(got["arrays"][key], value), (free, key)
        (small_disk / "filler").unlink()
        for folder in (small_disk / "cache").iterdir():
            import shutil

            shutil.rmtree(folder)


def _with_file_size_limit(root: Path, cache: Path, limit: int) -> dict:
    import resource

    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # this child only
    return _read_and_report(root, cache)


def test_a_file_size_limit_while_writing_the_cache_falls_back_to_memory(tmp_path):
    """EFBIG (ulimit -f), which needs no root: the same fallback as a full disk."""
    root = _folder(tmp_path / "data")
    got = _in_child(_with_file_size_limit, root, tmp_path / "cache", 4096)
    assert got["cache"] == "off" and any("File too large" in w for w in got["warnings"]), got["warnings"]
    assert list((tmp_path / "cache").iterdir()) == []
    for key, value in _arrays(_read(root, None, cache="off")).items():
        assert np.array_equal(got["arrays"][key], value), key


def _flip_pixel_byte(entry: Path) -> None:
    with open(entry / "train.npy", "r+b") as f:
        f.seek(-5, os.SEEK_END)
        byte = f.read(1)
        f.seek(-5, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0x10]))


def _swap_a_label(entry: Path) -> None:
    labels = np.load(entry / "train.labels.npy")
    labels[0] = 1 - labels[0]  # still a valid class: only the checksum can tell
    np.save(entry / "train.labels.npy", labels)


def _edit_meta(change):
    def edit(entry: Path) -> None:
        meta = json.loads((entry / "meta.json").read_text())
        change(meta)
        (entry / "meta.json").write_text(json.dumps(meta))
    return edit


DAMAGE = {
    "a pixel byte": _flip_pixel_byte,
    "a label": _swap_a_label,
    "labels outside the classes": lambda e: np.save(e / "train.labels.npy",
                                                    np.load(e / "train.labels.npy") + 5),
    "a truncated array": lambda e: os.truncate(e / "train.npy", (e / "train.npy").stat().st_size - 100),
    "a missing labels file": lambda e: (e / "train.labels.npy").unlink(),
    "meta.json missing": lambda e: (e / "meta.json").unlink(),
    "meta.json not JSON": lambda e: (e / "meta.json").write_text('{"format": 2, "key'),
    "meta.json without notes": _edit_meta(lambda m: m.pop("notes")),
    "meta.json without skipped": _edit_meta(lambda m: m.pop("skipped")),
    "meta.json without a count": _edit_meta(lambda m: m["parts"]["train"].pop("count")),
    "meta.json without checksums": _edit_meta(lambda m: m["parts"]["train"].pop("crc32")),
    "meta.json with other classes": _edit_meta(lambda m: m.update(classes=["a", "c"])),
    "meta.json a list": lambda e: (e / "meta.json").write_text("[]"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_entry_is_a_miss_rebuilt_with_a_warning_naming_it(tmp_path, caplog, damage):
    root, cache = _folder(tmp_path / "data"), tmp_path / "cache"
    assert _load(root, cache, num_workers=0).cache == "miss"
    [entry] = list(cache.iterdir())
    DAMAGE[damage](entry)
    with caplog.at_level("WARNING"):
        again = _load(root, cache, num_workers=0)
    assert again.cache == "miss", damage
    warned = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
    assert len(warned) == 1 and str(entry) in warned[0] and "\n" not in warned[0], warned
    _same(_load(root, None, cache="off"), again)
    assert [p.name for p in cache.iterdir()] == [entry.name]  # replaced in place, nothing left beside it
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert _load(root, cache, num_workers=0).cache == "hit"
    assert not [r for r in caplog.records if "is damaged" in r.getMessage()]


def test_an_entry_of_the_previous_format_is_replaced_without_a_warning(tmp_path, caplog):
    root, cache = _folder(tmp_path / "data"), tmp_path / "cache"
    _load(root, cache)
    [entry] = list(cache.iterdir())
    _edit_meta(lambda m: m.update(format=1))(entry)
    with caplog.at_level("WARNING"):
        assert _load(root, cache).cache == "miss"
    assert not caplog.records and _load(root, cache).cache == "hit"


def test_a_label_error_names_the_cache_entry_it_was_read_from(tmp_path):
    """An entry whose labels are wrong but consistent with its checksums (rewritten whole): the
    label check's error says which entry the labels came from."""
    from src.data.cache_write import labels_crc

    root, cache = _folder(tmp_path / "data"), tmp_path / "cache"
    _load(root, cache)
    [entry] = list(cache.iterdir())
    zeros = np.zeros_like(np.load(entry / "train.labels.npy"))
    np.save(entry / "train.labels.npy", zeros)
    _edit_meta(lambda m: m["parts"]["train"].update(labels_crc32=labels_crc(zeros)))(entry)
    with pytest.raises(ConfigError) as err:
        _load(root, cache)
    assert "\n" not in str(err.value)
    assert str(err.value).endswith(f"(labels read from the decoded-data cache entry {entry})"), err.value
    assert _load(root, cache, cache="refresh").cache == "refresh"  # what the user does about it


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_the_cache_entry_follows_the_umask(tmp_path, umask):
    root = _folder(tmp_path / "data")
    before = os.umask(umask)
    try:
        _load(root, tmp_path / "cache")
        beside = tmp_path / "beside.txt"
        beside.write_text("a file written as the tool writes any other")
    finally:
        os.umask(before)
    [entry] = list((tmp_path / "cache").iterdir())
    assert entry.stat().st_mode & 0o777 == 0o777 & ~umask
    for f in entry.iterdir():
        assert f.stat().st_mode & 0o777 == beside.stat().st_mode & 0o777, f.name


def test_a_dead_builds_temporary_folder_is_removed_a_live_ones_kept(tmp_path):
    import fcntl

    root, cache = _folder(tmp_path / "data"), tmp_path / "cache"
    cache.mkdir()
    dead, live, young = (cache / f".{'0' * 32}.host-1.{tag}.tmp" for tag in ("dead", "live", "young"))
    for folder in (dead, live, young):
        folder.mkdir()
        (folder / "train.npy").write_bytes(b"half written")
    hour_ago = time.time() - 3600
    for folder in (dead, live):
        os.utime(folder, (hour_ago, hour_ago))
    holder = os.open(live, os.O_RDONLY)  # a build in progress holds its folder locked
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        assert _load(root, cache).cache == "miss"
        assert not dead.exists() and live.exists() and young.exists()  # young: maybe just made, not yet locked
    finally:
        os.close(holder)


def _links(root: Path) -> None:
    """A dangling link and a link to itself (looping) in a class folder."""
    (root / "train" / "a" / "dangling.png").symlink_to(root / "nowhere.png")
    (root / "train" / "b" / "loop.png").symlink_to("loop.png")


@pytest.mark.parametrize("bad_images", ["skip", "fail"])
def test_dangling_and_looping_links_behave_the_same_with_and_without_the_cache(tmp_path, bad_images):
    root = _folder(tmp_path / "data")
    _links(root)
    outcomes = []
    for cache in ("off", "auto", "auto"):  # without, a miss, a hit
        try:
            d = _load(root, tmp_path / "cache", cache=cache, bad_images=bad_images)
            outcomes.append((d.skipped_files, _pixels(d)))
        except ConfigError as err:
            assert "\n" not in str(err)
            outcomes.append((str(err), None))
    if bad_images == "skip":
        assert sorted(outcomes[0][0]) == sorted(str(root / "train" / p) for p in ("a/dangling.png", "b/loop.png"))
    else:
        assert "dangling.png: unreadable image" in outcomes[0][0]
    for skipped, pixels in outcomes[1:]:
        assert skipped == outcomes[0][0]
        if pixels is not None:
            assert all(torch.equal(pixels[k], outcomes[0][1][k]) for k in pixels)


def test_hidden_folders_and_files_are_not_classes_or_images(tmp_path):
    """`.git` beside the class folders, a notebook's `.ipynb_checkpoints/` and a macOS `._x.png`
    inside one: left out, with and without the cache, so the data is that of the clean folder."""
    clean = _load(_folder(tmp_path / "clean"), None, cache="off")
    root = _folder(tmp_path / "data")
    (root / "train" / ".git" / "objects").mkdir(parents=True)
    (root / "train" / ".git" / "objects" / "x.png").write_bytes(b"not an image")
    (root / "train" / "a" / ".ipynb_checkpoints").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "train" / "a" / ".ipynb_checkpoints" / "0-checkpoint.png")
    (root / "train" / "b" / "._0.png").write_bytes(b"\0\5\26\7 AppleDouble")
    for cache in ("off", "auto", "auto"):
        d = _load(root, tmp_path / "cache", cache=cache)
        assert d.classes == ["a", "b"] and d.skipped_files == []
        _same(clean, d)


@pytest.mark.slow  # a whole run on a small disk (10 s): the fast tier keeps the unit cases above
def test_a_run_whose_cache_disk_fills_completes_without_the_cache(tmp_path, small_disk):
    """`python -m src.train` with dataset.cache_dir on a real tmpfs that fills in the middle of the
    pixels (two decode workers running): the run completes, result.json says so, the log has the
    warning (Hydra's console log is stdout; its file the run folder's .log), and the disk holds no
    temporary folder."""
    import subprocess
    import sys

    from tests.cli import REPO, TINY_OVERRIDES, env

    root = _folder(tmp_path / "data")
    _fill(small_disk, 5)  # 32 px images: 15 pages of pixels, so the disk fills a third of the way in
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "src.train", *TINY_OVERRIDES, "dataset=imagefolder", f"dataset.root={root}",
         f"dataset.cache_dir={small_disk / 'cache'}", "dataset.num_workers=2", "trainer.num_threads=1",
         f"hydra.run.dir={out}"],
        cwd=REPO, env=env(), capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "completed" and result["data_cache"] == "off" and result["train_samples"] == 6
    [log_file] = out.glob("*.log")
    for text in (proc.stdout, log_file.read_text()):
        [line] = [x for x in text.splitlines() if "No space left on device" in x]
        assert "WARNING" in line and f"dataset.cache_dir={small_disk / 'cache'}" in line and "dataset.cache=off" in line
    assert list((small_disk / "cache").iterdir()) == []
