"""What an image folder holds: its split folders (train/, val/, test/, or the class folders alone),
their class folders and image files, each listed in a fixed, sorted order. Hidden names are not data
(src/data/paths.py)."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from src.config import ConfigError
from src.data.labels import match_names, nfc
from src.data.paths import hidden, hidden_below, shown

log = logging.getLogger(__name__)

# Suffixes read as images: what Pillow opens by content (it does not look at the suffix). JPEG goes
# by five names (.jfif is what browsers save a JPEG as); AVIF needs a Pillow built with libavif, and
# where one is not, such a file is an unreadable image (dataset.bad_images), never silently dropped.
# This set decides which files are data: the dataset's identity hashes the part of it a folder's files
# use beyond FIRST_SUFFIXES (src/data/identity.py), and the decoded-data cache's key holds every file it lets in.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".jif", ".png", ".bmp", ".gif", ".tif", ".tiff",
                            ".webp", ".avif", ".ppm", ".pgm", ".pbm", ".pnm"})
# The list when dataset ids were first recorded: a folder with no file of a later suffix keeps its id
# (src/data/identity.py), so that runs recorded before the list grew pool with new ones in reports.
FIRST_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
# Files an OS writes into photo folders by itself (Windows' thumbnails and folder settings; macOS's
# are hidden names): left out without a warning, unlike every other file that is not an image.
SYSTEM_FILES = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini"})
# The split folders a root may hold, each by the names real datasets give it (matched without case):
# the first is the split's own name.
SPLIT_NAMES = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test", "testing")}
LAYOUTS = ("either split folders only (train/, and optionally " + ", ".join(
    f"{part}/ as {' or '.join(names)}" for part, names in SPLIT_NAMES.items() if part != "train")
    + ", each holding <class>/ folders) or class folders only (<class>/<images>, val and test split off)")


def class_names(folder: Path) -> list[str]:
    """An image folder's class names: its sub-folders (or links to folders), sorted, leaving out
    hidden ones (`.git`, `.ipynb_checkpoints`: src.data.paths.hidden)."""
    return sorted(d.name for d in folder.iterdir() if not hidden(d.name) and d.is_dir())


def class_folders(folder: Path, where: str | None = None) -> list[str]:
    """`class_names`; ConfigError naming `where` (default: the folder) when there are none."""
    found = class_names(folder)
    if not found:
        raise ConfigError(f"{where or shown(folder)}: no class folders (expected {shown(folder)}/<class>/<images>)")
    return found


def _candidates(folder: Path, links: list[Path] | None = None):
    """Every file at any depth in `folder` that is not hidden nor inside a hidden folder. Links to
    files count as files, a dangling or looping one too (it is then an unreadable image, with or
    without the cache); links to folders are not followed (the same as Path.rglob: a link to a
    parent would never end), and are added to `links` when given, so that their images are not
    left out without a word."""
    for p in folder.rglob("*"):
        if hidden_below(p, folder):
            continue
        if not p.is_dir():
            yield p
        elif links is not None and p.is_symlink():
            links.append(p)


def image_files(folder: Path, left_out: list[Path] | None = None) -> list[Path]:
    """A class folder's image files (`IMAGE_SUFFIXES`), at any depth, sorted, leaving out hidden files
    and everything in hidden folders (a notebook's `.ipynb_checkpoints/` copies would be duplicates).
    The other files, except the OS's own (`SYSTEM_FILES`), and the links to folders (not followed)
    are added to `left_out` when given."""
    found = []
    for p in _candidates(folder, left_out):
        if p.suffix.lower() in IMAGE_SUFFIXES:
            found.append(p)
        elif left_out is not None and p.name.lower() not in SYSTEM_FILES:
            left_out.append(p)
    return sorted(found)


def left_out_lines(root: Path, left_out: list[Path], where: str = "in class folders") -> list[str]:
    """What `image_files` left out of `root`, as lines to show: one for the files not read as images,
    counted by suffix, with an example (a folder of .heic photos must not lose them without a word),
    and one for the links to folders, which are not followed. `where` says where they lay."""
    links = sorted(p for p in left_out if p.is_symlink() and p.is_dir())
    linked, lines = set(links), []
    if links:  # their images are as much the user's as the files beside them
        lines.append(f"{shown(root)}: {len(links)} link{'' if len(links) == 1 else 's'} to a folder {where} "
                     f"{'is' if len(links) == 1 else 'are'} not followed, their images not read, e.g. "
                     f"{shown(links[0])}; link or copy the image files themselves")
    files = [p for p in left_out if p not in linked]
    if files:
        counts = Counter(p.suffix.lower() or "(none)" for p in files)
        by_suffix = ", ".join(f"{suffix}: {n}" for suffix, n in sorted(counts.items(), key=lambda c: (-c[1], c[0])))
        lines.append(f"{shown(root)}: {len(files)} files {where} are not read, their suffix not an image's "
                     f"({by_suffix}), e.g. {shown(min(files))}; images are read from {' '.join(sorted(IMAGE_SUFFIXES))}")
    return lines


def warn_left_out(root: Path, left_out: list[Path]) -> None:
    """`left_out_lines` of a dataset's class folders, each a warning."""
    for line in left_out_lines(root, left_out):
        log.warning("%s", line)


def warn_loose(root: Path, folders: dict[str, Path]) -> None:
    """One warning for the image files that lie beside the class folders (in a split folder, or in
    the root itself): they have no class and are not read, but a folder must not look smaller than
    its owner counts it without a reason given."""
    loose = sorted(p for top in {root, *folders.values()} for p in top.iterdir()
                   if not hidden(p.name) and p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())
    if loose:
        log.warning("%s: %d image files lie outside any class folder, e.g. %s: not read, as they have no class "
                    "(move each into its <class>/ folder)", shown(root), len(loose), shown(loose[0]))


def _holds_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in _candidates(folder))


def split_folders(root: Path) -> dict[str, Path]:
    """The folder of each split `root` has: {"train": root/train, "val": root/validation, ...} for a
    root of split folders (`SPLIT_NAMES`), or {"train": root} for a root of class folders (val and
    test are then split off it, as most photo collections come). A mix is refused (ConfigError, one
    line naming the folders and both layouts): a class folder named `train` would otherwise make
    the other classes vanish, and a `test/` holdout next to class folders would become a class.
    Folders without images next to the split folders (notes, `__MACOSX/`) are no mix."""
    folders = [d for d in root.iterdir() if not hidden(d.name) and d.is_dir()]
    split_of = {alias: part for part, names in SPLIT_NAMES.items() for alias in names}
    named: dict[str, list[Path]] = {}
    for d in folders:
        if d.name.lower() in split_of:
            named.setdefault(split_of[d.name.lower()], []).append(d)
    if not named:
        return {"train": root}
    others = sorted(d.name for d in folders if d.name.lower() not in split_of and _holds_images(d))
    splits = sorted(d.name for ds in named.values() for d in ds)
    if others:
        raise ConfigError(f"{shown(root)}: split folders {splits} next to folders of images {others}; "
                          f"expected {LAYOUTS}")
    for part, ds in named.items():
        if len(ds) > 1:
            names = " and ".join(repr(d.name) for d in sorted(ds))
            raise ConfigError(f"{shown(root)}: {names} are both the {part} split; keep one")
    if "train" not in named:
        raise ConfigError(f"{shown(root)}: split folders {splits} but no train/ folder; expected {LAYOUTS}")
    return {part: named[part][0] for part in SPLIT_NAMES if part in named}


def list_folder(folder: Path, classes: list[str] | None,
                left_out: list[Path] | None = None) -> tuple[list[Path], list[int], list[str]]:
    """The image files of `folder/<class>/` (sorted), their labels and the class names. Given
    train's `classes`, the folder must have the same ones, names matched as OOD folders' are
    (src.data.labels.match_names: after Unicode NFC, as a folder copied from macOS spells `é` in two
    code points), and labels go by name, not position: the two spellings sort differently."""
    found = class_folders(folder)
    spellings: dict[str, list[str]] = {}
    for name in found:
        spellings.setdefault(nfc(name), []).append(name)
    if twice := next((names for names in spellings.values() if len(names) > 1), None):
        raise ConfigError(f"{shown(folder)}: class folders {' and '.join(map(repr, twice))} differ only in Unicode "
                          "normalisation (two spellings of one name, NFC and NFD): merge them into one")
    labels_of = list(range(len(found)))
    if classes is not None:
        if set(spellings) != {nfc(c) for c in classes}:
            # a capital is easy to miss in two lists: the near-misses are named, as OOD folders' are
            folded = {nfc(c).casefold(): c for c in classes if nfc(c) not in spellings}
            near = [f"{n!r} ~ {folded[nfc(n).casefold()]!r}" for n in found
                    if nfc(n) not in {nfc(c) for c in classes} and nfc(n).casefold() in folded]
            raise ConfigError(f"{shown(folder)}: class folders {found} differ from train's {classes}"
                              + (f"; names match exactly, case included: {', '.join(near)}" if near else ""))
        labels_of = match_names(found, classes, shown(folder))
    files, labels = [], []
    for label, cls in zip(labels_of, found):
        members = image_files(folder / cls, left_out)
        if not members:
            raise ConfigError(f"{shown(folder / cls)}: class folder has no images")
        files += members
        labels += [label] * len(members)
    return files, labels, found if classes is None else classes


def part_dir(root: Path, part: str) -> Path:
    """The folder of a split (`split_folders`): root/train, root/validation, ...; or root itself when
    it holds the class folders directly."""
    return split_folders(root)[part]


def folder_parts(root: Path) -> tuple[dict[str, tuple[list[Path], list[int]]], list[str]]:
    """The files and labels of each split folder of `root` (`split_folders`: train/, or root's own
    class folders, and val/ and test/ where present); train's class names. Files left out by their
    suffix are one warning, image files outside any class folder another."""
    folders, left_out = split_folders(root), []
    files, labels, classes = list_folder(folders["train"], None, left_out)
    parts = {"train": (files, labels)}
    for part in ("val", "test"):
        if part in folders:
            files, labels, _ = list_folder(folders[part], classes, left_out)
            parts[part] = (files, labels)
    warn_left_out(root, left_out)
    warn_loose(root, folders)
    return parts, classes
