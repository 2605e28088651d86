"""Read what an offline W&B run wrote to its `.wandb` file (a LevelDB-style log of protobuf records).

wandb no longer ships a Python reader, and `wandb sync` needs the network; this is the format as
wandb-core writes it: a 7-byte header, then 32 KiB blocks of records (crc32 4 bytes, length 2
bytes little-endian, type 1 byte: 1 full, 2 first, 3 middle, 4 last).
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32768
HEADER = 7


def records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B datastore file"
    out, pos, pending = [], HEADER, b""
    while pos + 7 <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < 7:  # block trailer padding
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:  # zero padding at the end
            break
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(pending)
            out.append(rec)
            pending = b""
    return out


def history(path: Path) -> list[dict]:
    rows = []
    for rec in records(path):
        if rec.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in rec.history.item})
    return rows


def summary(path: Path) -> dict:
    out: dict = {}
    for rec in records(path):
        if rec.WhichOneof("record_type") == "summary":
            for item in rec.summary.update:
                out[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return out


def config(path: Path) -> dict:
    """The run's config: sent with the run record, plus any later config updates."""
    out: dict = {}
    for rec in records(path):
        kind = rec.WhichOneof("record_type")
        updates = rec.run.config.update if kind == "run" else rec.config.update if kind == "config" else []
        for item in updates:
            out[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return out


def run_info(path: Path) -> wandb_internal_pb2.RunRecord:
    for rec in records(path):
        if rec.WhichOneof("record_type") == "run":
            return rec.run
    raise AssertionError(f"no run record in {path}")


def metrics(path: Path) -> dict[str, dict]:
    """The run's `define_metric` declarations, by metric name (or glob): step metric and summaries."""
    out: dict[str, dict] = {}
    for rec in records(path):
        if rec.WhichOneof("record_type") == "metric":
            m = rec.metric
            summary = [f.name for f, v in m.summary.ListFields() if v is True]
            out[m.name or m.glob_name] = {"step_metric": m.step_metric, "summary": summary}
    return out


def table(run_dir: Path, key: str) -> list[dict]:
    """A wandb.Table an offline run under `run_dir` logged as `key`, as one dict per row."""
    [path] = run_dir.glob(f"wandb/offline-run-*/files/media/table/{key}_*.table.json")
    data = json.loads(path.read_text())
    return [dict(zip(data["columns"], row)) for row in data["data"]]


def closed(path: Path, timeout_s: float = 60.0) -> Path:
    """`path` once the run's exit record is in it. In the process that ran it, `run.finish()` can
    return before wandb-core has flushed the file (a subprocess's run is complete when it exits)."""
    deadline = time.monotonic() + timeout_s
    while not _has_exit(path):
        assert time.monotonic() < deadline, f"{path}: no exit record after {timeout_s} s"
        time.sleep(0.2)
    return path


def _has_exit(path: Path) -> bool:
    try:
        return any(r.WhichOneof("record_type") == "exit" for r in records(path))
    except Exception:  # a file still being written: its header or last record not there yet
        return False
