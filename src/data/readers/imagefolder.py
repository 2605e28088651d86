"""Your own images: `dataset.root` = DIR with DIR/train/<class>/*, DIR/val/<class>/* and optionally
DIR/test/<class>/* (val/ also as valid/ or validation/, test/ as testing/: src.data.folders.SPLIT_NAMES),
or DIR/<class>/* alone, never a mix; a missing val/ or test/ is split off train (stratified,
`dataset.split_seed`). Decoded in parallel (`dataset.num_workers`, `dataset.jpeg_draft`) into the
decoded-data cache (`dataset.cache`, `dataset.cache_dir`), which later runs memory-map: docs/data.md."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from src.config import ConfigError
from src.data import folders
from src.data.decode import read_image
from src.data.folders import class_folders, class_names, part_dir, split_folders
from src.data.identity import hash_folder
from src.data.labels import one_class
from src.data.parts import read_parts, warn_skipped
from src.data.paths import absolute
from src.data.registry import Reader, register
from src.data.splits import DataBundle, held_out


@register
class ImageFolder(Reader):
    name = "imagefolder"
    keys = ("root", "bad_images", "cache", "cache_dir", "num_workers", "jpeg_draft")

    def read(self, progress: bool = False) -> DataBundle:
        cfg = self.cfg
        self.check()
        root = Path(cfg.root)
        name = cfg.name or absolute(root).name
        read = read_parts(cfg, root, progress)
        where = {"dataset": name, "classes": read.classes}
        train, val, val_note = held_out(read.splits["train"], "val", read.splits.get("val"), cfg, **where)
        train, test, test_note = held_out(train, "test", read.splits.get("test"), cfg, **where,
                                          after="val" if val_note else None)
        notes = [n for n in (val_note, test_note) if n]
        warn_skipped("", read.skipped)
        return DataBundle(name, read.classes, train, val, test, "; ".join(notes) or "folders train/val/test",
                          read.skipped, cache=read.cache, cache_entry=str(read.entry) if read.entry else None)

    def check(self) -> None:
        """The root is a folder of split folders or of class folders, not a mix (split_folders), and
        training has at least 2 class folders: checked where the gate calls it, before any run folder
        is made (a folder of images alone used to fail in setup, leaving a failed run behind)."""
        root = Path(self.cfg.root or "")
        if not root.is_dir():
            raise ConfigError(f"dataset.root={self.cfg.root!r}: no such folder (expected train/<class>/ images, "
                              "or <class>/ images)")
        split_folders(root)
        train = part_dir(root, "train")
        found = class_folders(train, f"dataset.root={self.cfg.root!r}")
        if len(found) == 1:  # before decoding anything; and the cache entry is not to blame (check_labels_from)
            raise one_class(self.cfg.name or absolute(root).name, found, [0])

    def known_classes(self) -> list[str] | None:
        """train/'s class folders (or root's own when it has no train/); None until root is a folder.
        An empty list when it has none: the load says so."""
        if self.cfg.root and Path(self.cfg.root).is_dir():
            return class_names(part_dir(Path(self.cfg.root), "train"))
        return None

    def image_file(self, path: Path) -> np.ndarray:
        """Decoded, short side resized and centre-cropped as every training image was (read_image)."""
        return read_image(path, self.cfg.image_size, self.cfg.jpeg_draft)[0]

    def identify(self, digest, head: dict) -> None:
        """The folder's resolved path, every file under it (relative path and size), and the image
        suffixes added since ids were first recorded that its files have (src.data.identity)."""
        hash_folder(digest, head, Path(self.cfg.root or ""), folders.IMAGE_SUFFIXES - folders.FIRST_SUFFIXES)
