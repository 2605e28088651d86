"""An image folder's split folders as pixels: decoded (by the decoding processes) into memory, or
into a decoded-data cache entry that this and later runs memory-map (src/data/cache.py). Shared by
the image-folder reader and the OOD sets' folders (src/data/ood.py); unreadable files are skipped
and counted or stop the load (`dataset.bad_images`)."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from src.config import ConfigError, DataConfig
from src.data.cache import build, cache_key, default_cache_dir, lookup
from src.data.cache_write import RowFile, labels_crc
from src.data.folders import folder_parts, part_dir
from src.data.paths import one_line, shown
from src.data.splits import Split
from src.data.workers import decoded
from src.machine import usable_cpus

log = logging.getLogger(__name__)


@dataclass
class _Decode:
    """How a folder's files are decoded (from DataConfig) and what decoding reported."""

    size: int
    draft: bool
    bad: str
    workers: int
    progress: bool
    skipped: list[str] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (file, Pillow's warnings)


def _decode_into(out: np.ndarray | RowFile, folder: Path, files: list[Path], labels: list[int], classes: list[str],
                 how: _Decode) -> np.ndarray:
    """Decode `files` into the rows of `out` (readable files packed from row 0, in order); the
    labels of the rows written. Unreadable files are skipped or stop the load (dataset.bad_images)."""
    kept: list[int] = []
    readable = dict.fromkeys(range(len(classes)), 0)
    results = decoded(files, how.size, how.draft, how.workers, how.progress, folder)
    with contextlib.closing(results):  # a failure stops the workers now, not when the generator is collected
        for (file, (pixels, status, text)), label in zip(results, labels):
            _take(out, kept, readable, file, pixels, status, text, label, how)
    for label, count in readable.items():
        if not count:
            raise ConfigError(f"{shown(folder / classes[label])}: none of its {labels.count(label)} image files "
                              "is readable")
    return np.array(kept, dtype=np.int64)


def _take(out: np.ndarray | RowFile, kept: list[int], readable: dict[int, int], file: Path, pixels: np.ndarray | None,
          status: str, text: str | None, label: int, how: _Decode) -> None:
    """One decoded file into the next row of `out`; a failure skipped or raised (dataset.bad_images)."""
    if status == "refused":
        raise ConfigError(text)
    if status == "unreadable":
        if how.bad == "fail":
            raise ConfigError(f"{shown(file)}: unreadable image ({text}); "
                              "dataset.bad_images=skip leaves such files out")
        how.skipped.append(str(file))
        return
    if text:
        log.warning("%s: %s", shown(file), text)
        how.notes.append((str(file), text))
    out[len(kept)] = pixels
    kept.append(label)
    readable[label] += 1


SKIPPED_NAMED = 20  # unreadable files named in the warning: all of a few, a sample of a broken copy's thousands


def warn_skipped(where: str, skipped: list[str]) -> None:
    """One warning naming the unreadable files `where` left out (dataset.bad_images=skip), up to
    `SKIPPED_NAMED` of them: result.json keeps only their count, and the user repairs files by name."""
    if not skipped:
        return
    named = ", ".join(shown(f) for f in skipped[:SKIPPED_NAMED])
    more = f" and {len(skipped) - SKIPPED_NAMED} more" if len(skipped) > SKIPPED_NAMED else ""
    log.warning("%sskipped %d unreadable image files (dataset.bad_images=skip): %s%s", f"{where}: " if where else "",
                len(skipped), named, more)


def _decode_setup(cfg: DataConfig, progress: bool) -> _Decode:
    # the CPUs this process may use, not the machine's: a cluster job given 4 of a node's 64 cores
    # started 64 decoders on them
    workers = cfg.num_workers if cfg.num_workers is not None else usable_cpus()
    return _Decode(cfg.image_size, cfg.jpeg_draft, cfg.bad_images, workers, progress)


def _decode_parts(root: Path, parts, classes, how: _Decode, allocate) -> dict[str, tuple[Any, np.ndarray]]:
    """Decode each part into `allocate(part, n)`'s array: {part: (array, labels of its rows)}."""
    out = {}
    for part, (files, labels) in parts.items():
        array = allocate(part, len(files))
        kept = _decode_into(array, part_dir(root, part), files, labels, classes, how)
        out[part] = (array, kept)
    return out


def _cache_writer(root: Path, parts, classes, how: _Decode):
    """What writes a cache entry's files into a folder and returns its meta (see src.data.cache)."""

    def write(folder: Path) -> dict[str, Any]:
        opened: list[RowFile] = []

        def allocate(part: str, n: int) -> RowFile:
            opened.append(RowFile(folder / f"{part}.npy", n, (3, how.size, how.size)))
            return opened[-1]

        try:
            decoded = _decode_parts(root, parts, classes, how, allocate)
            counts = {}
            for part, (rows, kept) in decoded.items():
                info = rows.close()  # its count is len(kept): one row per kept label
                np.save(folder / f"{part}.labels.npy", kept.astype("<i8"))
                counts[part] = info | {"labels_crc32": labels_crc(kept)}
        finally:
            for rows in opened:  # closed already unless something failed
                rows.discard()
        return {"parts": counts, "classes": classes, "skipped": how.skipped, "notes": how.notes}

    return write


def _read_cached(cfg: DataConfig, root: Path, parts, classes, how: _Decode) -> tuple[dict[str, Split], str, Path] | None:
    """The parts from the decoded-data cache (built on a miss), "hit" | "miss" | "refresh" and the
    entry's folder; None when the entry cannot be written (a read-only folder, a full disk, a quota:
    logged, and the caller decodes in memory as with dataset.cache=off)."""
    cache_dir = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()
    settings = {"image_size": how.size, "jpeg_draft": how.draft, "bad_images": how.bad, "pillow": _pillow_version()}
    key = cache_key(root, {part: files for part, (files, _) in parts.items()}, settings)
    entry = lookup(cache_dir, key, set(parts), classes, (3, how.size, how.size)) if cfg.cache == "auto" else None
    status = "hit"
    if entry is not None:
        for file, text in entry.meta["notes"]:
            log.warning("%s: %s", shown(file), text)  # a hit warns as the decode that built it did
        how.skipped += entry.meta["skipped"]
    else:
        status = "refresh" if cfg.cache == "refresh" else "miss"
        try:
            entry = build(cache_dir, key, _cache_writer(root, parts, classes, how),
                          replace=cfg.cache == "refresh" or (cache_dir / key).exists())
        except OSError as err:
            log.warning("dataset.cache_dir=%s cannot be written (%s); decoding without the cache, in memory "
                        "(dataset.cache_dir=<folder> puts the cache elsewhere, dataset.cache=off skips it)",
                        shown(cache_dir), one_line(err))
            return None
    log.info("decoded-data cache %s: %s", status, shown(entry.path))
    splits = {part: Split(entry.images(part), torch.from_numpy(entry.labels(part))) for part in parts}
    return splits, status, entry.path


def _pillow_version() -> str:
    import PIL

    return PIL.__version__


@dataclass
class Parts:
    """An image folder's split folders, decoded or read from the cache."""

    splits: dict[str, Split]  # train, and val and test where the folder has them
    classes: list[str]
    skipped: list[str]  # unreadable files left out (dataset.bad_images=skip)
    cache: str  # hit | miss | refresh | off
    entry: Path | None = None  # the cache entry read from, if any


def read_parts(cfg: DataConfig, root: Path, progress: bool) -> Parts:
    """Every split folder of `root` decoded, or read from the decoded-data cache."""
    parts, classes = folder_parts(root)
    how = _decode_setup(cfg, progress)
    if cfg.cache != "off":
        cached = _read_cached(cfg, root, parts, classes, how)
        if cached is not None:
            return Parts(cached[0], classes, how.skipped, cached[1], cached[2])
        how = _decode_setup(cfg, progress)  # a failed cache build may have counted some files already
    decoded = _decode_parts(root, parts, classes, how,
                            lambda part, n: np.empty((n, 3, how.size, how.size), dtype=np.uint8))
    splits = {part: Split(torch.from_numpy(array[: len(kept)]), torch.from_numpy(kept))
              for part, (array, kept) in decoded.items()}
    return Parts(splits, classes, how.skipped, "off")
