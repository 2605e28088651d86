"""Data loading never turns bad input into a valid-looking result: pixel value ranges, labels,
EXIF orientation, hostile image files, files that are not what they claim (issue 13)."""

from __future__ import annotations

import io
import subprocess
import sys
import warnings
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from src.config import ConfigError, DataConfig
from src.data.load import load_dataset
from tests.cli import REPO, env

SIZE = 16


def _filler(path, value=100, size=(SIZE, SIZE)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8)).save(path)


def _folder(root, subject_name=None, save=None):
    """train/val/test with classes a and b; train/a holds only the file `save` writes (when given),
    so it is train.images[train.labels == 0][0]."""
    for split in ("train", "val", "test"):
        for cls, value in (("a", 60), ("b", 200)):
            if split == "train" and cls == "a" and save is not None:
                continue
            for i in range(2):
                _filler(root / split / cls / f"{i}.png", value)
    if save is not None:
        (root / "train" / "a").mkdir(parents=True, exist_ok=True)
        save(root / "train" / "a" / subject_name)
    return root


def _subject(root, **kw):
    d = load_dataset(DataConfig(kind="imagefolder", root=str(root), image_size=SIZE, **kw))
    return d.train.images[d.train.labels == 0][0]


def _one_line_error(excinfo, *parts):
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for part in parts:
        assert part in msg, msg
    return msg


# --- 1. pixel values at their real range -------------------------------------------------------

GRADIENT16 = np.array([[0, 257, 32768, 65535] * (SIZE // 4)] * SIZE, dtype=np.uint16)  # -> 0, 1, 128, 255


@pytest.mark.parametrize("name, array", [
    ("x16.png", GRADIENT16),                     # PNG I;16
    ("x16.tif", GRADIENT16),                     # TIFF I;16
    ("x16b.tif", GRADIENT16.astype(">u2")),      # TIFF I;16B (big-endian)
])
def test_16bit_images_are_scaled_not_clipped(tmp_path, name, array):
    root = _folder(tmp_path, name, lambda p: Image.fromarray(array).save(p))
    img = _subject(root)
    assert img.shape == (3, SIZE, SIZE)
    assert img[0, 0, :4].tolist() == [0, 1, 128, 255]  # clipped today: [0, 255, 255, 255]
    assert torch.equal(img[0], img[2])


def test_16bit_pgm_and_32bit_tiff_use_their_declared_depth(tmp_path):
    # A PGM with maxval 65535 (Pillow reads it as 32-bit mode I holding 16-bit values).
    def pgm(p):
        p.write_bytes(b"P5\n%d %d\n65535\n" % (SIZE, SIZE) + GRADIENT16.astype(">u2").tobytes())
    assert _subject(_folder(tmp_path / "pgm", "x.pgm", pgm))[0, 0, :4].tolist() == [0, 1, 128, 255]
    # A signed 32-bit TIFF: full scale 2**31 - 1, so 2**30 is mid-grey, not white.
    i32 = np.array([[0, 2**30, 2**31 - 1, 2**23] * (SIZE // 4)] * SIZE, dtype=np.int32)
    img = _subject(_folder(tmp_path / "tif", "x.tif", lambda p: Image.fromarray(i32).save(p)))
    assert img[0, 0, :4].tolist() == [0, 128, 255, 1]


def test_float_tiff_in_unit_range_is_scaled_and_outside_is_refused(tmp_path):
    good = np.array([[0.0, 0.5, 1.0, 0.2] * (SIZE // 4)] * SIZE, dtype=np.float32)
    img = _subject(_folder(tmp_path / "ok", "f.tif", lambda p: Image.fromarray(good).save(p)))
    assert img[0, 0, :4].tolist() == [0, 128, 255, 51]
    for case, value in (("big", 3.5), ("neg", -0.25), ("nan", np.nan), ("inf", np.inf)):
        bad = good.copy()
        bad[3, 5] = value
        root = _folder(tmp_path / case, "f.tif", lambda p: Image.fromarray(bad).save(p))
        for policy in ("skip", "fail"):  # a value range is refused, never skipped as if unreadable
            with pytest.raises(ConfigError) as e:
                load_dataset(DataConfig(kind="imagefolder", root=str(root), image_size=SIZE, bad_images=policy))
            _one_line_error(e, "f.tif", "non-finite" if case in ("nan", "inf") else "outside [0, 1]")


def test_palette_grey_alpha_cmyk_and_bilevel_images_come_out_right(tmp_path):
    red = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    red[..., 0] = 255
    rgba = np.zeros((SIZE, SIZE, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[:, :4, 3] = 255   # opaque red
    rgba[:, 4:8, 3] = 0    # fully transparent: composited onto white
    rgba[:, 8:, 3] = 128   # half: red over white
    la = np.zeros((SIZE, SIZE, 2), dtype=np.uint8)
    la[..., 0] = 40
    la[:, :8, 1] = 255
    bits = np.zeros((SIZE, SIZE), dtype=bool)
    bits[:, 8:] = True
    savers = {
        "p.png": lambda p: Image.fromarray(red).convert("P").save(p),
        "p.gif": lambda p: Image.fromarray(red).save(p),
        "rgba.png": lambda p: Image.fromarray(rgba).save(p),
        "la.png": lambda p: Image.fromarray(la).save(p),
        "cmyk.jpg": lambda p: Image.fromarray(red).convert("CMYK").save(p, quality=100),
        "one.png": lambda p: Image.fromarray(bits).save(p),
    }
    got = {name: _subject(_folder(tmp_path / name.replace(".", "_"), name, save)) for name, save in savers.items()}
    for name in ("p.png", "p.gif"):
        assert got[name][:, 5, 5].tolist() == [255, 0, 0]
    assert got["rgba.png"][:, 5, 1].tolist() == [255, 0, 0]
    assert got["rgba.png"][:, 5, 5].tolist() == [255, 255, 255]
    assert got["rgba.png"][:, 5, 12].tolist() == [255, 127, 127]
    assert got["la.png"][:, 5, 2].tolist() == [40] * 3 and got["la.png"][:, 5, 12].tolist() == [255] * 3
    r, g, b = got["cmyk.jpg"][:, 5, 5].tolist()
    assert r > 240 and g < 15 and b < 15
    assert got["one.png"][:, 5, 2].tolist() == [0] * 3 and got["one.png"][:, 5, 12].tolist() == [255] * 3


def _npz(path, images=None, labels=None, **override):
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.integers(0, 255, (8, 8, 8), dtype=np.uint8) if images is None else images
        arrays[f"{split}_labels"] = (np.arange(8) % 2).reshape(8, 1) if labels is None else labels
    arrays.update(override)
    np.savez(path, **arrays)
    return str(path)


def _med(root, **kw):
    return load_dataset(DataConfig(kind="medmnist", root=root, image_size=SIZE, **kw))


def test_npz_arrays_of_any_pixel_type_are_scaled_once_for_the_whole_array(tmp_path):
    f = np.linspace(0, 1, 8 * 8 * 8).reshape(8, 8, 8)
    as_float = _med(_npz(tmp_path / "f.npz", images=f.astype(np.float32)))
    as_uint8 = _med(_npz(tmp_path / "u8.npz", images=np.rint(f * 255).astype(np.uint8)))
    assert int(as_float.train.images.max()) == 255  # rounds to black (0/1) today
    assert torch.equal(as_float.train.images, as_uint8.train.images)
    u16 = (np.arange(8 * 8 * 8).reshape(8, 8, 8) * 128).astype(np.uint16)  # up to 65408
    expected = ((u16.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8)
    assert torch.equal(_med(_npz(tmp_path / "u16.npz", images=u16)).train.images,
                       _med(_npz(tmp_path / "u16x.npz", images=expected)).train.images)
    big_endian = _med(_npz(tmp_path / "u16b.npz", images=(u16 // 256).astype(">u2")))  # max 255: still 16-bit
    assert int(big_endian.train.images.max()) == 1
    i64 = np.arange(8 * 8 * 8).reshape(8, 8, 8) % 256  # int64 holding 8-bit values: taken as 8-bit
    assert torch.equal(_med(_npz(tmp_path / "i64.npz", images=i64)).train.images,
                       _med(_npz(tmp_path / "i8.npz", images=i64.astype(np.uint8))).train.images)


@pytest.mark.parametrize("case, value, words", [
    ("nan", np.nan, "non-finite"),
    ("inf", np.inf, "non-finite"),
    ("float255", 200.0, "outside [0, 1]"),
    ("negative_float", -0.1, "outside [0, 1]"),
])
def test_npz_float_images_outside_the_unit_range_are_refused(tmp_path, case, value, words):
    images = np.full((8, 8, 8), 0.5, dtype=np.float64)
    images[2, 3, 4] = value
    with pytest.raises(ConfigError) as e:
        _med(_npz(tmp_path / f"{case}.npz", images=images))
    _one_line_error(e, f"{case}.npz", "'train_images'", words)


def test_npz_negative_ints_and_unsupported_types_are_refused(tmp_path):
    with pytest.raises(ConfigError) as e:
        _med(_npz(tmp_path / "neg.npz", images=np.full((8, 8, 8), -3, dtype=np.int16)))
    _one_line_error(e, "neg.npz", "'train_images'", "negative")
    with pytest.raises(ConfigError) as e:
        _med(_npz(tmp_path / "c.npz", images=np.ones((8, 8, 8), dtype=np.complex64)))
    _one_line_error(e, "c.npz", "unsupported pixel type complex64")
    with pytest.raises(ConfigError) as e:
        _med(_npz(tmp_path / "rgba.npz", images=np.ones((8, 8, 8, 4), dtype=np.uint8)))
    _one_line_error(e, "rgba.npz", "(8, 8, 8, 4)")


# --- 2. labels ---------------------------------------------------------------------------------

def test_labels_with_a_gap_are_refused(tmp_path):
    labels = np.array([0, 1, 3, 0, 1, 3, 0, 1])
    with pytest.raises(ConfigError) as e:
        _med(_npz(tmp_path / "gap.npz", labels=labels))
    _one_line_error(e, "dataset gap:", "class 2 has no images in train", "0, 1, 3")


def test_a_label_seen_only_in_test_is_refused(tmp_path):
    test_labels = np.array([0, 1, 2, 0, 1, 0, 1, 0])
    with pytest.raises(ConfigError) as e:
        _med(_npz(tmp_path / "pneu.npz", test_labels=test_labels), name="pneu")
    _one_line_error(e, "dataset pneu: label 2 appears in test but not in train")


def test_negative_labels_are_refused_in_any_split(tmp_path):
    for split in ("train", "val", "test"):
        labels = np.array([0, 1, 0, 1, 0, 1, -1, 1])
        with pytest.raises(ConfigError) as e:
            _med(_npz(tmp_path / f"neg_{split}.npz", **{f"{split}_labels": labels}))
        _one_line_error(e, f"dataset neg_{split}: negative labels in {split} (-1)")


def test_a_single_class_is_refused_not_scored_1_0(tmp_path):
    with pytest.raises(ConfigError) as e:
        _med(_npz(tmp_path / "one.npz", labels=np.zeros(8, dtype=np.int64)))
    _one_line_error(e, "dataset one: train has a single class (0)")
    root = tmp_path / "folder"
    for split in ("train", "val", "test"):
        for i in range(3):
            _filler(root / split / "cat" / f"{i}.png")
    with pytest.raises(ConfigError) as e:
        load_dataset(DataConfig(kind="imagefolder", root=str(root), image_size=SIZE))
    _one_line_error(e, "single class (0 ('cat'))")


@pytest.mark.parametrize("n_labels", [6, 11])
def test_labels_and_images_must_pair_one_to_one(tmp_path, n_labels):
    labels = np.arange(n_labels) % 2
    with pytest.raises(ConfigError) as e:
        _med(_npz(tmp_path / "len.npz", val_labels=labels))
    _one_line_error(e, "len.npz", "val has 8 images", f"{n_labels} labels")


def test_fractional_labels_are_refused_not_truncated(tmp_path):
    with pytest.raises(ConfigError) as e:
        _med(_npz(tmp_path / "half.npz", train_labels=np.array([0, 1, 0.5, 1, 0, 1, 0, 1])))
    _one_line_error(e, "'train_labels'", "whole numbers")


def test_a_class_too_small_to_stratify_is_named_with_its_count(tmp_path):
    root = tmp_path / "pets"
    for cls, n in (("cat", 6), ("dog", 1)):
        for i in range(n):
            _filler(root / "train" / cls / f"{i}.png")
    with pytest.raises(ConfigError) as e:
        load_dataset(DataConfig(kind="imagefolder", root=str(root), image_size=SIZE))
    _one_line_error(e, "dataset pets:", "class 1 ('dog') has 1 image in train", "at least 2")
    # Two images pass the first split (val) but may leave one for the second (test).
    _filler(root / "train" / "dog" / "1.png")
    with pytest.raises(ConfigError) as e:
        load_dataset(DataConfig(kind="imagefolder", root=str(root), image_size=SIZE, val_fraction=0.5,
                                test_fraction=0.3))
    _one_line_error(e, "'dog'", "has 1 image in train", "splitting off test")


def test_too_few_images_for_the_number_of_classes_is_named(tmp_path):
    root = tmp_path / "few"
    for cls in ("a", "b", "c", "d"):
        for i in range(2):
            _filler(root / "train" / cls / f"{i}.png")
    (root / "test").mkdir()
    for cls in ("a", "b", "c", "d"):
        _filler(root / "test" / cls / "0.png")
    with pytest.raises(ConfigError) as e:  # 0.1 of 8 images is 1 val image for 4 classes
        load_dataset(DataConfig(kind="imagefolder", root=str(root), image_size=SIZE, val_fraction=0.1))
    _one_line_error(e, "dataset few:", "4 classes", "dataset.val_fraction=0.1")


def test_train_per_class_keeps_every_class_and_is_checked(tmp_path):
    d = _med(_npz(tmp_path / "sub.npz"), train_per_class=1)
    assert sorted(d.train.labels.tolist()) == [0, 1]


# --- 3. orientation and hostile files ----------------------------------------------------------

def test_exif_orientation_is_applied_before_resizing(tmp_path):
    # 32 wide x 16 high, left half black, right half white, tagged "rotate 90 clockwise to view"
    # (orientation 6): upright it is 16 wide x 32 high with the black half on top.
    pixels = np.zeros((16, 32, 3), dtype=np.uint8)
    pixels[:, 16:] = 255

    def save(p):
        exif = Image.Exif()
        exif[0x0112] = 6
        Image.fromarray(pixels).save(p, exif=exif, quality=100)

    img = _subject(_folder(tmp_path, "phone.jpg", save))
    top, bottom = img[0, 1].float().mean(), img[0, -2].float().mean()
    assert top < 30 and bottom > 225  # unrotated, both rows would be half black, half white
    assert img[0, :, 1].float().std() > 100 and img[0, 1, :].float().std() < 10


def _bomb(p):
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(p)  # 4096 pixels > 2 x 1000


def test_a_decompression_bomb_is_an_unreadable_image(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    root = _folder(tmp_path, "ok.png", lambda p: _filler(p, 60))
    _bomb(root / "train" / "a" / "bomb.png")
    d = load_dataset(DataConfig(kind="imagefolder", root=str(root), image_size=SIZE))
    assert d.skipped_files == [str(root / "train" / "a" / "bomb.png")] and len(d.train) == 3
    with pytest.raises(ConfigError) as e:
        load_dataset(DataConfig(kind="imagefolder", root=str(root), image_size=SIZE, bad_images="fail"))
    _one_line_error(e, "bomb.png: unreadable image (DecompressionBombError")


def test_pillow_warnings_are_logged_not_printed_or_raised(tmp_path, monkeypatch, caplog):
    # Between 1x and 2x MAX_IMAGE_PIXELS Pillow only warns (on stderr, several lines); under
    # filterwarnings("error") that warning is an exception no except-clause expected.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)
    root = _folder(tmp_path, "big.png", lambda p: _filler(p, 60, size=(SIZE, 20)))  # 320 pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = load_dataset(DataConfig(kind="imagefolder", root=str(root), image_size=SIZE, bad_images="fail"))
    assert len(d.train) == 3 and "big.png: Image size (320 pixels) exceeds limit" in caplog.text


def test_other_pillow_failure_classes_are_unreadable_images(tmp_path):
    # A DDS file whose pixel-format flags no decoder knows: Pillow raises NotImplementedError
    # (neither OSError nor ValueError) while opening it, whatever the file's name says.
    root = _folder(tmp_path, "ok.png", lambda p: _filler(p, 60))
    dds = root / "train" / "a" / "scan.png"
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(dds, "DDS")
    data = bytearray(dds.read_bytes())
    data[80] = 130  # DDS_PIXELFORMAT.dwFlags
    dds.write_bytes(bytes(data))
    d = load_dataset(DataConfig(kind="imagefolder", root=str(root), image_size=SIZE))
    assert d.skipped_files == [str(dds)]
    with pytest.raises(ConfigError) as e:
        load_dataset(DataConfig(kind="imagefolder", root=str(root), image_size=SIZE, bad_images="fail"))
    _one_line_error(e, "scan.png: unreadable image (NotImplementedError")


# --- 4. files that are not what they claim -----------------------------------------------------

def _not_npz(tmp_path):
    good = _npz(tmp_path / "good.npz")
    data = open(good, "rb").read()
    cases = {
        "random.npz": np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes(),
        "text.npz": b"train_images,train_labels\n1,2\n",
        "truncated.npz": data[: len(data) // 2],
        "empty.npz": b"",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    np.save(tmp_path / "single.npy", np.zeros((3, 8, 8), dtype=np.uint8))
    (tmp_path / "single.npy").rename(tmp_path / "single.npz")
    with zipfile.ZipFile(tmp_path / "crc.npz", "w") as z:  # a member whose bytes were damaged, the others whole
        z.writestr("train_images.npy", b"\x93NUMPY" + b"\x00" * 40)
        with np.load(good) as whole:
            for member in ("train_labels", "val_images", "val_labels", "test_images", "test_labels"):
                buffer = io.BytesIO()
                np.save(buffer, whole[member])
                z.writestr(f"{member}.npy", buffer.getvalue())
    return [*cases, "single.npz"]


def test_a_file_that_is_not_an_npz_archive_is_one_line(tmp_path):
    for name in _not_npz(tmp_path):
        with pytest.raises(ConfigError) as e:
            _med(str(tmp_path / name))
        _one_line_error(e, name)
    with pytest.raises(ConfigError) as e:
        _med(str(tmp_path / "crc.npz"))
    _one_line_error(e, "crc.npz", "train_images")
    (tmp_path / "adir.npz").mkdir()
    with pytest.raises(ConfigError) as e:
        _med(str(tmp_path / "adir.npz"))
    _one_line_error(e, "adir.npz", "is a directory")
    with pytest.raises(ConfigError) as e:
        _med(str(tmp_path / "missing.npz"))
    _one_line_error(e, "missing.npz", "no such .npz file")


def test_an_object_array_needing_pickle_is_one_line(tmp_path):
    objects = np.array([{"x": 1}] * 8, dtype=object)
    with pytest.raises(ConfigError) as e:
        _med(_npz(tmp_path / "obj.npz", val_labels=objects))
    _one_line_error(e, "obj.npz", "'val_labels' cannot be read", "allow_pickle")


def test_torchvision_missing_offline_or_failed_download_is_one_line(tmp_path, monkeypatch):
    with pytest.raises(ConfigError) as e:
        load_dataset(DataConfig(kind="torchvision", tv_name="MNIST", root=str(tmp_path), download=False))
    _one_line_error(e, "dataset.tv_name=MNIST", "not found offline")
    # A download that fails: every mirror refuses (a proxy on a closed port), so torchvision
    # raises its multi-line "Error downloading" RuntimeError.
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(ConfigError) as e:
        load_dataset(DataConfig(kind="torchvision", tv_name="MNIST", root=str(tmp_path / "dl"), download=True))
    _one_line_error(e, "dataset.tv_name=MNIST", "download failed")
    # A root that cannot be created (a file stands in the way): OSError from torchvision.
    (tmp_path / "blocked").write_text("")
    with pytest.raises(ConfigError) as e:
        load_dataset(DataConfig(kind="torchvision", tv_name="CIFAR10", root=str(tmp_path / "blocked" / "x"),
                                download=True))
    _one_line_error(e, "dataset.tv_name=CIFAR10", "download failed")


def _mnist_root(tmp_path, train_labels):
    raw = tmp_path / "MNIST" / "raw"  # where torchvision looks for the official files
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def idx(path, array):  # the idx format: magic (unsigned byte, ndim), the dims, the data
        dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
        path.write_bytes(bytes([0, 0, 0x08, array.ndim]) + dims + array.tobytes())

    for prefix, labels in (("train", train_labels), ("t10k", np.arange(10))):
        idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 255, (len(labels), 28, 28), dtype=np.uint8))
        idx(raw / f"{prefix}-labels-idx1-ubyte", np.asarray(labels, dtype=np.uint8))
    return str(tmp_path)


def test_torchvision_classes_without_training_images_are_refused(tmp_path):
    def mnist(root, train_labels):
        return DataConfig(kind="torchvision", tv_name="MNIST", root=_mnist_root(root, train_labels), download=False,
                          image_size=SIZE)

    ok = load_dataset(mnist(tmp_path / "ok", np.arange(60) % 10))
    assert ok.num_classes == 10 and len(ok.test) == 10 and len(ok.val) == 12
    # Test has every digit, train only 0 and 1: refused, not trained as a 10-way classifier.
    with pytest.raises(ConfigError) as e:
        load_dataset(mnist(tmp_path / "bad", np.arange(60) % 2))
    _one_line_error(e, "dataset mnist: labels 2 ('2 - two'), 3 ('3 - three')",
                    "9 ('9 - nine') appear in test but not in train")


def _register(monkeypatch, name, make_items=None, data=None):
    """A torchvision-style dataset class in torchvision.datasets, as dataset.tv_name finds one."""
    import torchvision.datasets as tvd

    class Local(tvd.VisionDataset):
        classes = ["a", "b"]

        def __init__(self, root, train=True, download=False):
            super().__init__(root)
            if data is not None:  # MNIST/CIFAR style: every image in one array
                self.data = data
                self.targets = [i % 2 for i in range(len(data))]
            self.items = make_items() if make_items else None

        def __len__(self):
            return len(self.items) if self.items is not None else len(self.data)

        def __getitem__(self, i):
            return self.items[i]

    monkeypatch.setattr(tvd, name, Local, raising=False)


def test_torchvision_arrays_and_items_use_the_same_value_conversion(tmp_path, monkeypatch):
    grey = np.linspace(0, 1, 20 * 8 * 8).reshape(20, 8, 8)
    _register(monkeypatch, "FloatSet", data=grey.astype(np.float32))
    d = load_dataset(DataConfig(kind="torchvision", tv_name="FloatSet", root=str(tmp_path), image_size=8,
                                val_fraction=0.2, test_fraction=0.2))
    assert int(d.train.images.max()) > 200  # black (0/1) if the floats were cast
    bad = grey.copy()
    bad[4, 2, 2] = np.nan
    _register(monkeypatch, "NanSet", data=bad)
    with pytest.raises(ConfigError) as e:
        load_dataset(DataConfig(kind="torchvision", tv_name="NanSet", root=str(tmp_path)))
    _one_line_error(e, "dataset.tv_name=NanSet train data", "non-finite")

    def short_targets(monkeypatch):
        _register(monkeypatch, "ShortSet", data=grey.astype(np.float32))
        import torchvision.datasets as tvd
        original = tvd.ShortSet.__init__

        def init(self, *args, **kw):
            original(self, *args, **kw)
            self.targets = self.targets[:-3]
        monkeypatch.setattr(tvd.ShortSet, "__init__", init)

    short_targets(monkeypatch)
    with pytest.raises(ConfigError) as e:
        load_dataset(DataConfig(kind="torchvision", tv_name="ShortSet", root=str(tmp_path)))
    _one_line_error(e, "dataset.tv_name=ShortSet train", "20 images but 17 targets")

    # Item by item: 16-bit grey images mixed with colour ones (as in Caltech101) come out 3-channel,
    # the 16-bit ones scaled.
    def items():
        out = []
        for i in range(20):
            img = (Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16)) if i % 2 == 0
                   else Image.fromarray(np.full((8, 8, 3), 10, dtype=np.uint8)))
            out.append((img, i % 2))
        return out

    _register(monkeypatch, "MixedSet", make_items=items)
    d = load_dataset(DataConfig(kind="torchvision", tv_name="MixedSet", root=str(tmp_path), image_size=8))
    assert d.train.images.shape[1] == 3
    assert d.train.images[d.train.labels == 0].unique().tolist() == [128]
    assert d.train.images[d.train.labels == 1].unique().tolist() == [10]

    # Items that are not one PIL image and one integer class (a multi-attribute target, an array
    # left by a transform) are refused, not cast.
    colour = Image.fromarray(np.full((8, 8, 3), 10, dtype=np.uint8))
    for name, item, words in (("PairSet", (colour, (0, 1)), "target (0, 1) is not one integer class"),
                              ("FloatTargetSet", (colour, 0.7), "target 0.7 is not one integer class"),
                              ("ArraySet", (np.zeros((8, 8), dtype=np.uint8), 0), "a ndarray, expected a PIL image")):
        _register(monkeypatch, name, make_items=lambda item=item: [item] * 20)
        with pytest.raises(ConfigError) as e:
            load_dataset(DataConfig(kind="torchvision", tv_name=name, root=str(tmp_path), image_size=8))
        _one_line_error(e, f"dataset.tv_name={name} train item 0", words)


# --- the CLI, as a user runs it ----------------------------------------------------------------

def test_cli_refuses_a_single_class_folder_with_one_line_and_exit_2(tmp_path):
    root = tmp_path / "xray"
    for split in ("train", "val", "test"):
        for i in range(3):
            _filler(root / split / "normal" / f"{i}.png")
    proc = subprocess.run(
        [sys.executable, "-m", "src.train", "dataset=imagefolder", f"dataset.root={root}",
         "model.name=test_efficientnet", "model.pretrained=false", "dataset.image_size=32", "trainer.epochs=1",
         "trainer.num_threads=1", "logger=none", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=REPO, env=env(), capture_output=True, text=True, timeout=300,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert lines == ["error: dataset xray: train has a single class (0 ('normal')); a classifier needs at least 2"]


# --- issue 23: one line, never a traceback --------------------------------------------------------

@pytest.mark.parametrize("array, name, words", [
    (np.array(5), "train_images", "images of shape ()"),
    (np.array(5), "train_labels", "a single value (a 0-d array)"),
    (np.array([0, 1, 2**63 + 1, 0, 1, 0, 1, 0], dtype=np.uint64), "train_labels",
     f"label {2**63 + 1} does not fit a 64-bit signed integer"),
    (np.array([0, 1, 1e19, 0, 1, 0, 1, 0]), "train_labels", "label 1e+19 does not fit"),
    (np.array([0, 1, -1e19, 0, 1, 0, 1, 0], dtype=np.float32), "train_labels", "does not fit"),
])
def test_npz_scalars_and_labels_past_int64_are_one_line_naming_the_array(tmp_path, array, name, words):
    """A 0-d array (np.array(5)) has no len(); a uint64 or float label past int64 would wrap around."""
    with pytest.raises(ConfigError) as e:
        _med(_npz(tmp_path / "odd.npz", **{name: array}))
    _one_line_error(e, "odd.npz", f"'{name}'", words)


def test_the_largest_int64_label_is_not_refused_as_overflowing(tmp_path):
    labels = np.array([0, 1, 2**63 - 1, 0, 1, 0, 1, 0], dtype=np.uint64)
    with pytest.raises(ConfigError) as e:  # a gap in the classes, not an overflow
        _med(_npz(tmp_path / "big.npz", train_labels=labels))
    _one_line_error(e, "train labels go up to 9223372036854775807")


NASTY_NAMES = ["two\nlines.png", "carriage\rreturn.png", "escape\x1b[31m.png", "tab\there.png"]


@pytest.mark.parametrize("name", NASTY_NAMES)
def test_a_control_character_in_a_file_name_keeps_the_error_on_one_line(tmp_path, name, caplog):
    """The file name is shown escaped (Python's repr), in errors and log lines alike."""
    root = _folder(tmp_path, "ok.png", lambda p: _filler(p, 60))
    (root / "train" / "a" / name).write_bytes(b"not an image")
    for cache in ("off", "auto"):
        with pytest.raises(ConfigError) as e:
            load_dataset(DataConfig(kind="imagefolder", root=str(root), image_size=SIZE, bad_images="fail",
                                    cache=cache, cache_dir=str(tmp_path / "cache")))
        msg = _one_line_error(e, repr(str(root / "train" / "a" / name)), "unreadable image")
        assert "\r" not in msg and "\x1b" not in msg and "\t" not in msg
    with caplog.at_level("WARNING"):
        d = load_dataset(DataConfig(kind="imagefolder", root=str(root), image_size=SIZE, cache="off"))
    assert d.skipped_files == [str(root / "train" / "a" / name)]  # recorded as it is (JSON escapes it)
    [line] = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert repr(str(root / "train" / "a" / name)) in line and line.isprintable()


def test_a_library_message_quoting_a_control_character_is_escaped():
    from src.data.paths import one_line

    assert one_line(OSError("cannot open a\x1b[31m.png\nnow")) == "OSError: cannot open a\\x1b[31m.png now"


def test_a_control_character_in_a_class_folder_keeps_the_error_on_one_line(tmp_path):
    root = _folder(tmp_path, "ok.png", lambda p: _filler(p, 60))
    (root / "train" / "new\nclass").mkdir()
    (root / "train" / "new\nclass" / "notes.txt").write_text("no images")
    with pytest.raises(ConfigError) as e:
        load_dataset(DataConfig(kind="imagefolder", root=str(root), image_size=SIZE))
    _one_line_error(e, repr(str(root / "train" / "new\nclass")), "class folder has no images")
