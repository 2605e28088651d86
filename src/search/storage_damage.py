"""A damaged study storage file is refused, never written to: what is wrong with a journal or a sqlite file."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from src.config import ConfigError


class DamagedStorage(ConfigError):
    """The study's storage file cannot be read whole (a journal with a line cut short or not JSON, a
    sqlite file that is not a database or fails sqlite's check). It is left as it is: one more
    write could make what it still holds unreadable."""


def damaged(path: Path, what: str, fix: str) -> DamagedStorage:
    return DamagedStorage(f"the study storage {path} is damaged: {what}; it is left as it is: {fix}")


NEW_STUDY = "or start a new study with another hydra.sweeper.storage and hydra.sweep.dir"


def journal_damage(path: Path) -> DamagedStorage | None:
    """What is wrong with a journal file, if anything: every line must be a whole JSON object ending
    in a newline. The caller holds the journal's lock, so no writer is midway through a line: a last
    line without its newline is a write that never finished (a killed worker, a full disk)."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    whole, tail = lines[:-1], lines[-1]  # `tail` is what follows the last newline: b"" when none is cut short
    for number, line in enumerate(whole, start=1):
        try:
            ok = isinstance(json.loads(line), dict)
        except ValueError:  # not JSON, or not UTF-8
            ok = False
        if not ok:
            return damaged(path, f"line {number} is not a JSON object, and Optuna cannot read past it",
                            f"restore it from a copy, {NEW_STUDY}")
    if tail:
        keep = len(data) - len(tail)
        return damaged(path, f"line {len(whole) + 1} is cut short (a write that never finished)",
                        f"the {len(whole)} lines before it are whole (`truncate -s {keep} {shlex.quote(str(path))}` keeps them), "
                        f"{NEW_STUDY}")
    return None


def sqlite_damage(path: Path) -> DamagedStorage | None:
    """What sqlite's own check (PRAGMA quick_check, on a read-only connection) finds wrong with a
    database file, if anything. A file sqlite cannot open for other reasons (locked, a hot journal a
    read-only connection may not roll back) is not called damaged: the storage says why it fails."""
    import sqlite3
    from urllib.parse import quote

    if not path.is_file() or path.stat().st_size == 0:  # sqlite makes an empty file a database
        return None
    try:
        con = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=30)
        try:
            rows = con.execute("PRAGMA quick_check").fetchall()
        finally:
            con.close()
    except sqlite3.OperationalError:
        return None
    except sqlite3.DatabaseError as err:  # "file is not a database", "database disk image is malformed"
        return damaged(path, f"sqlite says: {err}", f"restore it from a copy, {NEW_STUDY}")
    if rows != [("ok",)]:
        problems = [line for row in rows for line in str(row[0]).splitlines() if line and not line.startswith("***")]
        first = problems[0] if problems else str(rows[0][0])
        return damaged(path, f"sqlite's check finds {len(problems) or 1} problem(s), the first: {first}",
                        f"restore it from a copy, {NEW_STUDY}")
    return None


