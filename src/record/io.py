"""Run files: resolved config, per-epoch JSON lines, final result record; and the comparison table.

Every file is written whole (to a temporary name, then renamed) so a reader never sees half a
record, and a crashed run never leaves a `result.json` that looks finished. The JSON is strict (a
NaN or infinity is written as null) and files get the usual 0666 less the umask. Readers skip a file
or line they cannot read, and say which and why, instead of failing on every other run's files.
A file that cannot be written for lack of room (a full disk, a quota) raises DiskFull naming it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import math
import os
import secrets
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, NamedTuple

from src.record.digest import verified
from src.record.integrity import config_edited
from src.record.schema import RunRecord

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
METRICS_FILE = "metrics.jsonl"
GROUPS_FILE = "param_groups.json"
CONFIG_FILE = "config.yaml"
RETRIED_FILE = "retried.json"  # in a dead sweep trial's folder: the trial that retried it (src.search.job)


# What a filesystem answers when it takes no more of a file: full, over quota, the file too big for
# it, or read-only (a disk the kernel remounted after errors). Retrying does not help; room does.
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


class DiskFull(OSError):
    """A file that could not be written for lack of room (NO_ROOM): `path` is the file (None: not said)."""

    def __init__(self, path: Path | str | None, code: int, reason: str) -> None:
        super().__init__(code, reason, None if path is None else str(path))
        self.path = None if path is None else Path(path)


class OutOfRoom(BaseException):
    """A multirun job that ends the multirun with `line` and exit `code`: a full disk (1: every later
    job would fail the same way), a folder refused (2, the user's: another process in it, another
    config's finished run). A BaseException, because Hydra keeps a job's Exception as its result and
    goes on to the next job; src.exits.run_task prints the line. Both travel in `args` (pickled whole)."""

    def __init__(self, line: str, code: int = 1) -> None:
        super().__init__(line, code)
        self.line, self.code = line, code


def no_room(err: BaseException | None, path: Path | str | None = None, sqlite: Path | str | None = None) -> DiskFull | None:
    """`err`, or the error that caused it, as a DiskFull, if it is one: an OSError with a NO_ROOM errno (naming
    `path`, else the error's file), or sqlite's "database or disk is full" (naming `sqlite`). None otherwise."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, DiskFull):
            return err
        if isinstance(err, OSError) and err.errno in NO_ROOM:
            return DiskFull(path or err.filename, err.errno, err.strerror or os.strerror(err.errno))
        # sqlite3's error, or SQLAlchemy's wrapping it (`orig`); matched by its text, SQLITE_FULL's
        if type(err).__name__ in ("OperationalError", "DatabaseError") and "database or disk is full" in str(err):
            return DiskFull(sqlite, errno.ENOSPC, "database or disk is full")
        err = getattr(err, "orig", None) or err.__cause__ or err.__context__
    return None


def no_room_line(err: DiskFull, places: Sequence[tuple[Path | str, str]]) -> str:
    """What to tell the user about `err`, in one line: the file, why, and the setting that put it
    there, the one among `places` ((folder or file, "key=value")) that holds the file most closely."""
    if err.path is None:
        return f"{err.strerror} (writing to {places[0][1]})" if places else str(err.strerror)
    path = Path(os.path.abspath(err.path))
    holding = [(Path(os.path.abspath(p)), setting) for p, setting in places]
    holding = [(p, setting) for p, setting in holding if p == path or p in path.parents]
    setting = max(holding, key=lambda ps: len(ps[0].parts))[1] if holding else None
    return f"{path}: {err.strerror}" + (f" (its place is set by {setting})" if setting else "")


class SkippedFile(NamedTuple):
    """A run file a reader could not use, and why: `str()` is the one line to show the user."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def finite_json(value: Any) -> Any:
    """`value` with every non-finite float as None, numpy and torch values as plain numbers and lists: JSON has
    no NaN, and Python's `json` would write a bare `NaN` that strict readers (jq, JavaScript, W&B) reject."""
    if isinstance(value, float):  # also numpy.float64, a float subclass that json writes as NaN
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    # numpy scalars (float32 is no float subclass), 0-d tensors and arrays, without importing either
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return finite_json(value.item())
    if hasattr(value, "tolist"):
        return finite_json(value.tolist())
    return value  # json.dump names anything else it cannot write


def dumps(value: Any, **kwargs: Any) -> str:
    """JSON text of `value` with non-finite numbers as null; allow_nan=False makes a case that
    `finite_json` missed an error here rather than an invalid file for every reader later."""
    return json.dumps(finite_json(value), allow_nan=False, **kwargs)


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new temporary file beside `path`, opened for writing, 0666 less the umask applied by the kernel
    (no umask to read, no window to race; tempfile.mkstemp's 0600 hid results from the group)."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:  # 48 random bits taken: draw again
            continue
    raise FileExistsError(f"{path.parent}: no free temporary name for {path.name}")


def write_with(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Atomic write of whatever `write(file)` puts in a binary file: `path` holds the old content or the
    complete new one. No room: DiskFull naming `path` (the temporary file removed: the disk gets it back)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temp(path)
    except OSError as err:
        raise no_room(err, path) or err
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        full = no_room(err, path) if isinstance(err, Exception) else None
        if full is not None:
            raise full from None
        raise


_whole = 0  # how many `whole_record()` blocks the main thread is in


@contextlib.contextmanager
def whole_record() -> Iterator[None]:
    """A block a stop must not cut in half (an epoch's metrics line and what an interrupted run reports it
    measured): src.exits delivers a Ctrl-C or SIGTERM landing in it 50 ms later, once done. Keep it short."""
    global _whole
    _whole += 1
    try:
        yield
    finally:
        _whole -= 1


def in_whole_record() -> bool:
    return _whole > 0


def writable_home(path: Path) -> Path:
    """The nearest existing folder of `path` (missing ones are made by the write), checked to take a file.
    ValueError saying why not, to end a one-line error: "X is a file, not a folder", "cannot write in X (reason)"."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise ValueError(f"cannot write in {existing} ({err.strerror or err})") from None
    return existing


def write_text(path: Path, text: str) -> None:
    """Atomic write (write_with) of UTF-8 text."""
    data = text.encode("utf-8")
    write_with(path, lambda f: f.write(data))


def write_json(path: Path, data: Any) -> None:
    """Atomic write of `data` as valid JSON (non-finite numbers as null)."""
    write_text(path, dumps(data, indent=2, sort_keys=False) + "\n")


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one record as one line. One os.write() on an O_APPEND descriptor: the kernel places
    it at the end as a unit, so lines from concurrent writers never interleave (Python's buffered
    file would split a long line into several writes) and a crash leaves whole lines. A disk that
    fills mid-line: the half line is cut off (it stayed, torn, in a failed run's file), DiskFull."""
    data = (dumps(record) + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)  # less the umask, like any new file
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # the cut below must not take another writer's line with it
            size = os.fstat(fd).st_size
            if (written := os.write(fd, data)) != len(data):  # a short write to a regular file: the disk is full
                os.ftruncate(fd, size)  # as the study journal's (src/search/storage.py): whole lines only
        finally:
            os.close(fd)
    except OSError as err:
        raise no_room(err, path) or err
    if written != len(data):
        raise DiskFull(path, errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (wrote {written} of {len(data)} bytes)")


def _why_not_json(err: json.JSONDecodeError) -> str:
    return f"not valid JSON (line {err.lineno} column {err.colno})"


def read_jsonl(path: Path, skipped: list[SkippedFile] | None = None) -> list[dict[str, Any]]:
    """The records of a JSON-lines file. A line that is not a JSON object (a run killed mid-write, a
    hand's edit) is left out and added to `skipped` ("FILE line N"), or logged: a curve's hole is said."""
    records = []
    for n, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:  # decoded line by line: a rotted byte read as U+FFFD inside a key lost its value without a word
            record = json.loads(line.decode())
            reason = None if isinstance(record, dict) else f"not a JSON object (a {_kind(record)})"
        except UnicodeDecodeError:
            reason = "not UTF-8 text (a damaged byte)"
        except json.JSONDecodeError as err:
            reason = f"not valid JSON (column {err.colno})"
        if reason is None:
            records.append(record)
        else:
            note_skipped(SkippedFile(Path(f"{path} line {n}"), reason), skipped)
    return records


def _kind(value: Any) -> str:
    return {list: "list", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


def note_skipped(bad: SkippedFile, skipped: list[SkippedFile] | None) -> None:
    """`bad` into the caller's list, or, for a caller that keeps none, a logged warning."""
    if skipped is None:
        log.warning("skipped %s", bad)
    else:
        skipped.append(bad)


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; ValueError with the one-line reason when the file cannot be one:
    empty, truncated, not UTF-8, not JSON, or JSON that is not an object."""
    try:
        text = path.read_bytes().decode()
    except UnicodeDecodeError:
        raise ValueError("not valid JSON (not UTF-8 text)") from None
    except OSError as err:
        raise ValueError(f"unreadable ({err.strerror or type(err).__name__})") from None
    if not text.strip():
        raise ValueError("empty file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(_why_not_json(err)) from None
    if not isinstance(data, dict):
        raise ValueError(f"not a JSON object (a {_kind(data)})")
    return verified(data)  # a run record's digest: checked here, for every reader (src.record.digest)


def finished_status(result_file: Path) -> str | None:
    """"completed" or "pruned" when `result_file` records a finished run (one never to overwrite);
    None for a failed, interrupted or unreadable record."""
    try:
        status = read_json_object(result_file).get("status")
    except ValueError:  # unreadable or not a record: nothing to keep
        return None
    return status if status in ("completed", "pruned") else None


def find_results(roots: Iterable[Path], skipped: list[SkippedFile] | None = None) -> list[tuple[Path, RunRecord]]:
    """Every run folder under `roots` with a readable result.json, in path order, with its record (version 1
    upgraded). A result.json that cannot be read as a record (truncated, not JSON, no version), or whose
    config.yaml was edited since, is left out and added to `skipped` (or logged): one bad file must not hide
    every other run. A run is found once however many of `roots` reach it (`A A/0_full`, a link to it)."""
    found = []
    seen: set[Path] = set()
    for root in roots:
        paths = [root / RESULT_FILE] if (root / RESULT_FILE).is_file() else sorted(root.rglob(RESULT_FILE))
        for path in paths:
            if (real := path.resolve()) in seen:
                continue
            seen.add(real)
            try:
                record = RunRecord.from_json(read_json_object(path))
            except ValueError as err:
                note_skipped(SkippedFile(path, str(err)), skipped)
                continue
            if edited := config_edited(path.parent / CONFIG_FILE, record.config_sha256):  # its settings: not the run's
                note_skipped(SkippedFile(path.parent / CONFIG_FILE, f"{edited}; the run is left out"), skipped)
                continue
            found.append((path.parent, record))
    return found


def as_number(value: Any) -> float | None:
    """`value` as a float if it is a finite number, else None: the readers' one test for "missing",
    for null (how NaN is written), a NaN from an older file, or a string where a number belongs."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def si(value: Any, unit: str = "") -> str:
    """A number with an SI prefix, for counts that span orders of magnitude (FLOPs, parameters):
    "2.71 T", "3.38 M", "850"; "-" when it is missing. The one formatter of the table and the page."""
    if (number := as_number(value)) is None:
        return "-"
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= factor:
            return f"{number / factor:.2f} {prefix}{unit}".rstrip()
    return f"{number:.4g} {unit}".rstrip()


def _fmt(value: Any, kind: str) -> str:
    if kind == "str":
        return "-" if value is None else str(value)
    if (value := as_number(value)) is None:
        return "-"
    if kind == "acc":
        return f"{value:.4f}"
    if kind == "si":
        return si(value)
    if kind == "s":
        return f"{value:.1f}"
    return f"{value:.0f}"  # "mb"


COLUMNS: Sequence[tuple[str, str, str]] = (
    ("strategy", "strategy", "str"),
    ("val_acc", "val acc", "acc"),
    ("test_acc", "test acc", "acc"),
    ("test_balanced_acc", "test bal acc", "acc"),
    ("trainable_params", "trainable", "si"),
    ("train_flops", "train FLOPs", "si"),
    ("train_time_s", "train s", "s"),
    ("peak_mem_mb", "peak MiB", "mb"),
)


def format_table(rows: Sequence[tuple[Path, RunRecord | dict[str, Any]]], markdown: bool = False,
                 notes: dict[Path, str] | None = None) -> str:
    """The comparison table, one line per run, its seed and its folder last: the folder relative to
    what the runs' folders have in common (`run_names`), so that two studies' `0_frozen` are told
    apart. A row's record may also be a plain result dict (a placeholder for a job that wrote none).
    `notes` (by run folder) adds a column: why a run is not counted ("duplicate of ...")."""
    header = [title for _, title, _ in COLUMNS] + ["status"] + (["note"] if notes else []) + ["seed", "run"]
    names = run_names([d for d, _ in rows])
    body = []
    for run_dir, r in rows:
        record = r if isinstance(r, RunRecord) else RunRecord.from_json(r)
        cells = [_fmt(record.get(key), kind) for key, _, kind in COLUMNS] + [str(record.status or "?")]
        cells += [notes.get(run_dir, "-")] if notes else []
        seed = record.seed
        body.append(cells + [str(seed) if isinstance(seed, int) and not isinstance(seed, bool) else "-", names[run_dir]])
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body)]
    fmt = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(c) for c in body])


def run_names(dirs: Sequence[Path]) -> dict[Path, str]:
    """Each run folder as the tables show it: relative to the folder all of them are in (a multirun's
    `0_frozen`; `A/0_frozen` and `B/0_frozen` for two studies under one folder), its own name when
    that leaves nothing, and the whole path when the folders share no parent (other drives)."""
    if not dirs:
        return {}
    absolute = [Path(os.path.abspath(d)) for d in dirs]
    try:
        base = Path(os.path.commonpath(absolute))
    except ValueError:
        return {d: str(d) for d in dirs}
    if any(a == base for a in absolute):  # one run, or a run with others inside it: name it from its parent
        base = base.parent
    return {d: a.relative_to(base).as_posix() for d, a in zip(dirs, absolute)}
