"""What an image folder holds: which layout a root is (split folders or class folders, never a mix),
which files are images, which names match across split folders, and the splits carved off train.
Each refusal is one line naming the folder, class or file."""

from __future__ import annotations

import logging
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from src.config import ConfigError, DataConfig, RunConfig
from src.data.folders import IMAGE_SUFFIXES, folder_parts, image_files
from src.data.load import load_dataset
from src.training import run as run_module
from tests.conftest import TINY, merge

pytestmark = pytest.mark.usefixtures("tmp_cache")


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _images(folder: Path, n: int, shade: int = 0, suffix: str = ".png", fmt: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((12, 10, 3), shade + i, dtype=np.uint8)).save(folder / f"{i}{suffix}", format=fmt)
    return folder


def _classes(root: Path, classes=("cat", "dog"), n: int = 5) -> Path:
    for ci, cls in enumerate(classes):
        _images(root / cls, n, 60 * ci)
    return root


def _load(root: Path, **kw):
    return load_dataset(DataConfig(kind="imagefolder", root=str(root), image_size=16, num_workers=0, **kw))


# --- A-C: a root holds split folders or class folders, never a mix
def test_a_class_named_train_among_class_folders_is_refused_naming_both_layouts(tmp_path):
    root = _classes(tmp_path / "d", ("bus", "car", "train"))
    with pytest.raises(ConfigError) as err:
        _load(root)
    text = str(err.value)
    assert "\n" not in text and "'train'" in text and "'bus'" in text and "'car'" in text
    assert "split folders" in text and "class folders" in text
    _images(root / "train" / "nested", 3)  # nested folders inside it were taken for train's classes
    with pytest.raises(ConfigError, match="split folders"):
        _load(root)


@pytest.mark.parametrize("holdout", ["test", "val", "validation", "Test"])
def test_a_holdout_folder_next_to_class_folders_is_not_an_extra_class(tmp_path, holdout):
    root = _classes(tmp_path / "d")
    _classes(root / holdout)
    with pytest.raises(ConfigError, match=rf"'{holdout}'.*'cat'.*split folders .* class folders"):
        _load(root)


@pytest.mark.parametrize("name, part", [("validation", "val"), ("valid", "val"), ("testing", "test"),
                                        ("Validation", "val")])
def test_common_names_of_val_and_test_are_those_splits(tmp_path, name, part):
    root = tmp_path / "d"
    _classes(root / "train")
    _classes(root / name, n=2)
    parts, classes = folder_parts(root)
    assert set(parts) == {"train", part} and classes == ["cat", "dog"]
    assert all(f.parts[-3] == name for f in parts[part][0])
    d = _load(root)
    assert len(getattr(d, part)) == 4 and d.split_note.count("stratified") == 1


def test_two_names_of_one_split_or_an_unknown_folder_next_to_train_are_refused(tmp_path):
    root = tmp_path / "d"
    _classes(root / "train")
    _classes(root / "val", n=2)
    _classes(root / "validation", n=2)
    with pytest.raises(ConfigError, match=r"'val' and 'validation' are both the val split"):
        folder_parts(root)
    (root / "validation").rename(root / "holdout")
    with pytest.raises(ConfigError) as err:
        folder_parts(root)
    assert "'holdout'" in str(err.value) and "validation" in str(err.value) and "\n" not in str(err.value)


def test_folders_without_images_next_to_train_are_no_mix(tmp_path):
    root = tmp_path / "d"
    _classes(root / "train")
    (root / "notes").mkdir()
    (root / "notes" / "readme.txt").write_text("x")
    (root / "__MACOSX" / "cat").mkdir(parents=True)
    (root / "__MACOSX" / "cat" / "._0.png").write_bytes(b"x")  # hidden: not an image
    parts, _ = folder_parts(root)
    assert set(parts) == {"train"}


def test_split_folders_without_train_are_refused(tmp_path):
    root = tmp_path / "d"
    _classes(root / "val")
    _classes(root / "test")
    with pytest.raises(ConfigError, match=r"no train/ folder"):
        folder_parts(root)


# --- D: every file in a class folder is read or spoken of
def test_jpeg_under_other_suffixes_is_read(tmp_path):
    root = tmp_path / "d"
    _images(root / "cat", 3, suffix=".jpg")
    for suffix in (".jfif", ".jpe", ".jif"):
        _images(root / "dog", 1, suffix=suffix, fmt="JPEG")
        (root / "dog" / f"0{suffix}").rename(root / "dog" / f"{suffix[1:]}{suffix}")
    assert {".jfif", ".jpe", ".jif"} <= IMAGE_SUFFIXES
    assert len(image_files(root / "dog")) == 3
    d = _load(root, val_fraction=0.3, test_fraction=0.3)
    assert len(d.train) + len(d.val) + len(d.test) == 6


def test_files_left_out_by_suffix_are_one_warning_per_dataset(tmp_path, caplog):
    root = _classes(tmp_path / "d", n=4)
    for i in range(8):
        (root / "cat" / f"{i}.heic").write_bytes(b"not read")
    (root / "dog" / "x.heic").write_bytes(b"not read")
    (root / "dog" / "notes.txt").write_text("x")
    for quiet in (".DS_Store", "Thumbs.db", "desktop.ini"):
        (root / "dog" / quiet).write_bytes(b"x")
    with caplog.at_level(logging.WARNING, logger="src.data"):
        _load(root, val_fraction=0.25, test_fraction=0.25)
    lines = [r.getMessage() for r in caplog.records if "suffix" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "10 files" in lines[0] and ".heic: 9" in lines[0] and ".txt: 1" in lines[0]
    assert "Thumbs" not in lines[0] and "desktop" not in lines[0] and "DS_Store" not in lines[0]
    assert str(root / "cat") in lines[0] and "\n" not in lines[0]


def test_the_image_suffixes_decide_the_identity_of_a_folder(tmp_path, monkeypatch):
    """A file the suffix list newly reads is data the earlier list left out: another dataset. A folder
    with no such file keeps the id the first list gave it (recorded runs still pool with new ones)."""
    from src.data import folders
    from src.data.identity import dataset_identity

    plain = DataConfig(kind="imagefolder", root=str(_classes(tmp_path / "p")))
    now = dataset_identity(plain)
    monkeypatch.setattr(folders, "IMAGE_SUFFIXES", folders.FIRST_SUFFIXES)
    assert dataset_identity(plain) == now
    monkeypatch.undo()

    cfg = DataConfig(kind="imagefolder", root=str(_classes(tmp_path / "d")))
    (Path(cfg.root) / "cat" / "0.png").rename(Path(cfg.root) / "cat" / "0.jfif")
    before = dataset_identity(cfg)
    monkeypatch.setattr(folders, "IMAGE_SUFFIXES", folders.IMAGE_SUFFIXES - {".jfif"})
    assert dataset_identity(cfg) != before


# --- E: a split carved off train leaves every class an image on both sides
def test_a_class_too_small_for_a_stratified_split_is_refused_naming_it(tmp_path):
    root = _classes(tmp_path / "d", ("a", "b"), n=20)
    _images(root / "c", 2, 200)
    with pytest.raises(ConfigError) as err:
        _load(root, val_fraction=0.15, test_fraction=0.15)
    text = str(err.value)
    assert "\n" not in text and "'c'" in text and "2 images" in text and "dataset.val_fraction" in text
    assert "at least" in text


# --- F: split folders' class names match as OOD folders' do, after Unicode NFC
def test_class_names_differing_only_in_unicode_normalisation_are_one_class(tmp_path):
    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    root = tmp_path / "d"
    # 'é' spelt as e + accent sorts before 'f' and after it as one code point: labels go by name
    _classes(root / "train", (nfc, "f"), n=3)
    _classes(root / "test", (nfc, "f"), n=2)
    _classes(root / "val", (nfd, "f"), n=2)
    d = _load(root)
    assert d.classes == [nfc, "f"]
    for split in (d.val, d.test):
        assert sorted(split.labels.tolist()) == [0, 0, 1, 1]
        shade = split.images[split.labels == 1].float().mean()
        assert shade > 50  # 'f' is the brighter class in both spellings' folders


# --- G: a missing root is refused by the checks before any run folder is made
@pytest.mark.parametrize("make", [lambda p: p, lambda p: (p.write_text("x"), p)[1]])
def test_a_missing_root_or_a_file_is_refused_before_the_run_folder(tmp_path, make):
    root = make(tmp_path / "photos")
    cfg = RunConfig.from_dict(merge(TINY, {"dataset": {"kind": "imagefolder", "root": str(root)}}))
    with pytest.raises(ConfigError, match=r"^dataset.root='.*photos': no such folder"):
        run_module.run(cfg, tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_a_mixed_layout_is_refused_before_the_run_folder(tmp_path):
    root = _classes(tmp_path / "d", ("bus", "train"))
    cfg = RunConfig.from_dict(merge(TINY, {"dataset": {"kind": "imagefolder", "root": str(root)}}))
    with pytest.raises(ConfigError, match="split folders"):
        run_module.run(cfg, tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_a_missing_npz_is_refused_before_the_run_folder(tmp_path):
    cfg = RunConfig.from_dict(merge(TINY, {"dataset": {"kind": "medmnist", "root": str(tmp_path / "x.npz")}}))
    with pytest.raises(ConfigError, match=r"x.npz'?: no such .npz file"):
        run_module.run(cfg, tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_links_to_folders_inside_a_class_are_named_in_a_warning_not_lost_silently(tmp_path, caplog):
    # Links to folders are not followed (a loop would never end); the images behind one must not
    # vanish from the training set without a word.
    root = _classes(tmp_path / "d", n=4)
    elsewhere = _images(tmp_path / "more_cats", 3)
    (root / "cat" / "more").symlink_to(elsewhere, target_is_directory=True)
    with caplog.at_level(logging.WARNING, logger="src.data"):
        d = _load(root, val_fraction=0.25, test_fraction=0.25)
    assert len(d.train) + len(d.val) + len(d.test) == 8  # the linked folder's 3 are not read
    lines = [r.getMessage() for r in caplog.records if "link" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    assert "1 link to a folder in class folders is not followed" in lines[0] and str(root / "cat" / "more") in lines[0]
    assert "suffix" not in lines[0]  # not counted as a file of another suffix


@pytest.mark.parametrize("layout", ["classes", "splits"])
def test_images_outside_any_class_folder_are_named_in_a_warning(tmp_path, caplog, layout):
    # An image beside the class folders has no class: it cannot be read, but dropping it without a
    # word made the folder look smaller than the user's count with no reason given.
    root = tmp_path / "d"
    top = root / "train" if layout == "splits" else root
    _classes(top, n=4)
    _images(top, 2, suffix=".jpg")  # top/0.jpg, top/1.jpg
    (top / "notes.txt").write_text("not an image, not a class: no word")
    with caplog.at_level(logging.WARNING, logger="src.data"):
        d = _load(root, val_fraction=0.25, test_fraction=0.25)
    assert len(d.train) + len(d.val) + len(d.test) == 8
    lines = [r.getMessage() for r in caplog.records if "outside" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    assert "2 image files" in lines[0] and str(top / "0.jpg") in lines[0] and "notes" not in lines[0]


def test_every_skipped_unreadable_file_is_named_in_the_log(tmp_path, caplog):
    # result.json keeps only their count: the log is where the user learns which files to repair,
    # and naming one of three sent them looking for the other two.
    root = _classes(tmp_path / "d", n=4)
    bad = [root / "cat" / "broken.jpg", root / "dog" / "empty.png", root / "dog" / "text.png"]
    bad[0].write_bytes(b"\xff\xd8\xff not a jpeg")
    bad[1].write_bytes(b"")
    bad[2].write_text("hello")
    with caplog.at_level(logging.WARNING, logger="src.data"):
        d = _load(root, val_fraction=0.25, test_fraction=0.25)
    assert sorted(d.skipped_files) == sorted(map(str, bad))
    lines = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert all(str(p) in lines[0] for p in bad), lines[0]


def test_the_split_note_says_test_is_a_fraction_of_what_val_left(tmp_path):
    # Both notes read 'stratified 0.25 of train', as if of the same images: test is 0.25 of what
    # the val split left (here 4 of 15, not 5 of 20).
    d = _load(_classes(tmp_path / "d", n=10), val_fraction=0.25, test_fraction=0.25)
    assert (len(d.val), len(d.test)) == (5, 4)
    assert "val = stratified 0.25 of train (seed 0)" in d.split_note
    assert "test = stratified 0.25 of train after val was split off (seed 0)" in d.split_note


def test_a_val_class_folder_differing_from_train_only_in_case_is_named_as_such(tmp_path):
    # 'class folders ['Cat', 'dog'] differ from train's ['cat', 'dog']' left the user to spot the
    # capital; OOD folders already said which names match but for case.
    root = tmp_path / "d"
    _classes(root / "train", ("cat", "dog"))
    _classes(root / "val", ("Cat", "dog"))
    with pytest.raises(ConfigError, match=r"'Cat' ~ 'cat'") as err:
        _load(root)
    assert str(root / "val") in str(err.value) and "\n" not in str(err.value)


def test_a_root_given_as_dot_is_named_by_its_folder(tmp_path, monkeypatch):
    # `cd photos && python -m src.train dataset=imagefolder dataset.root=.` recorded dataset ''.
    root = _classes(tmp_path / "photos", n=5)
    monkeypatch.chdir(root)
    assert _load(Path(".")).name == "photos"
