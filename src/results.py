"""Run files: resolved config, per-epoch JSON lines, final result record; and the comparison table.

Every file is written whole (to a temporary name, then renamed) so a reader never sees half a
record, and a crashed run never leaves a `result.json` that looks finished.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

RESULT_FILE = "result.json"
METRICS_FILE = "metrics.jsonl"
GROUPS_FILE = "param_groups.json"
CONFIG_FILE = "config.yaml"


def write_json(path: Path, data: Any) -> None:
    """Atomic write: the file either holds the old content or the complete new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one record as one line. One os.write() on an O_APPEND descriptor: the kernel places
    it at the end as a unit, so lines from concurrent writers never interleave (Python's buffered
    file would split a long line into several writes) and a crash leaves whole lines."""
    data = (json.dumps(record) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        if written != len(data):  # a short write to a regular file: the disk is full
            raise OSError(f"{path}: wrote {written} of {len(data)} bytes")
    finally:
        os.close(fd)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def find_results(roots: Iterable[Path]) -> list[tuple[Path, dict[str, Any]]]:
    """Every run directory under `roots` that holds a result.json, in path order."""
    found = []
    for root in roots:
        paths = [root / RESULT_FILE] if (root / RESULT_FILE).is_file() else sorted(root.rglob(RESULT_FILE))
        for path in paths:
            found.append((path.parent, json.loads(path.read_text())))
    return found


def _si(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {prefix}{unit}".rstrip()
    return f"{value:.0f} {unit}".rstrip()


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "acc":
        return f"{value:.4f}"
    if kind == "si":
        return _si(value)
    if kind == "s":
        return f"{value:.1f}"
    if kind == "mb":
        return f"{value:.0f}"
    return str(value)


COLUMNS: Sequence[tuple[str, str, str]] = (
    ("strategy", "strategy", "str"),
    ("val_acc", "val acc", "acc"),
    ("test_acc", "test acc", "acc"),
    ("test_balanced_acc", "test bal acc", "acc"),
    ("trainable_params", "trainable", "si"),
    ("train_flops", "train FLOPs", "si"),
    ("train_time_s", "train s", "s"),
    ("peak_mem_mb", "peak MB", "mb"),
)


def format_table(rows: Sequence[tuple[Path, dict[str, Any]]], markdown: bool = False) -> str:
    """The comparison table, one line per run, with the run directory as the last column."""
    header = [title for _, title, _ in COLUMNS] + ["status", "run"]
    body = []
    for run_dir, r in rows:
        cells = [_fmt(r.get(key), kind) for key, _, kind in COLUMNS]
        body.append(cells + [r.get("status", "?"), run_dir.name])
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body)]
    fmt = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(c) for c in body])
