"""A sweep folder's `study.json`: which study the folder belongs to, read by the sweep that resumes
there (src.search.study.claim_out_dir) and by the report (src.reporting.search).

It is written whole (src.search.study), so a damaged one is rot or a hand edit: empty, cut short, not
JSON, or JSON of another shape. Each reader gets a ValueError with the one-line reason and says it
its own way, naming the file; `json.loads` and `.get` on whatever was there were tracebacks.
"""

from __future__ import annotations

from pathlib import Path

from src.record.io import read_json_object

OWNER_KEYS = ("study", "uid", "storage")


def read_owner(path: Path) -> dict[str, str]:
    """The folder's owner record: {"study", "uid", "storage"}, each a string. ValueError with the
    one-line reason for a file that is not one (unreadable, empty, cut, not JSON, a key missing)."""
    data = read_json_object(path)
    for key in OWNER_KEYS:
        if not isinstance(data.get(key), str) or not data[key]:
            raise ValueError(f"no {key!r} string in it ({key}: {data.get(key)!r})")
    return {key: data[key] for key in OWNER_KEYS}
