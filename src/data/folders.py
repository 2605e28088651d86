"""What an image folder holds: its split folders (train/, val/, test/, or the class folders alone),
their class folders and image files, each listed in a fixed, sorted order. Hidden names are not data
(src/data/paths.py)."""

from __future__ import annotations

from pathlib import Path

from src.config import ConfigError
from src.data.paths import hidden, hidden_below, shown

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


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


def image_files(folder: Path) -> list[Path]:
    """A class folder's image files, at any depth, sorted: names with an image suffix that are not
    folders, leaving out hidden files and everything in hidden folders (a notebook's
    `.ipynb_checkpoints/` copies would be duplicates). Links to files count as files, a dangling or
    looping one too (it is then an unreadable image, with or without the cache); links to folders
    are not followed (the same as Path.rglob)."""
    return sorted(p for p in folder.rglob("*")
                  if p.suffix.lower() in IMAGE_SUFFIXES and not hidden_below(p, folder) and not p.is_dir())


def list_folder(folder: Path, classes: list[str] | None) -> tuple[list[Path], list[int], list[str]]:
    """The image files of `folder/<class>/` (sorted), their labels and the class names."""
    found = class_folders(folder)
    if classes is not None and found != classes:
        raise ConfigError(f"{shown(folder)}: class folders {found} differ from train's {classes}")
    files, labels = [], []
    for label, cls in enumerate(found):
        members = image_files(folder / cls)
        if not members:
            raise ConfigError(f"{shown(folder / cls)}: class folder has no images")
        files += members
        labels += [label] * len(members)
    return files, labels, found


def part_dir(root: Path, part: str) -> Path:
    """The folder of a split: root/train, root/val, root/test; or root itself when it holds the
    class folders directly (one folder of classes, as most photo collections come: val and test
    are then split off it)."""
    return root / part if (root / "train").is_dir() else root


def folder_parts(root: Path) -> tuple[dict[str, tuple[list[Path], list[int]]], list[str]]:
    """The files and labels of train/ (or of root's own class folders) and of val/ and test/ where
    present; train's class names."""
    files, labels, classes = list_folder(part_dir(root, "train"), None)
    parts = {"train": (files, labels)}
    for part in ("val", "test") if (root / "train").is_dir() else ():
        if (root / part).is_dir():
            files, labels, _ = list_folder(root / part, classes)
            parts[part] = (files, labels)
    return parts, classes
