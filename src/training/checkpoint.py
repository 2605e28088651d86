"""Checkpoints: what a run needs to continue from its last completed epoch, and its selected weights.

After every epoch (`trainer.resume`) the run writes `checkpoint_epochNNN.pt`: the model, the
optimizer, the LR scheduler, every random number generator (torch, CUDA, numpy, Python, and the
training batches' own, which draws data order and augmentation), the meters' running counters
(time, images, FLOPs, the best epoch) and, when the selected epoch is not the last one, its weights.
Gradual unfreezing needs nothing more: the schedule is a pure function of the epoch. A frozen
backbone's feature cache is computed again from the (unchanged) backbone, arithmetic that gives the
same features; its cost is already in the restored counters. With the cache on, nothing below the
head can change (the cache's own conditions), so the checkpoint holds the head's weights only. Only the newest checkpoint is kept
while training (`trainer.keep_checkpoints` more once the run ends).

Files are written whole (a temporary file, fsync, rename, fsync of the folder), hold only tensors
and plain types, and are read with `torch.load(weights_only=True)`. Each records its format, the
config that wrote it (the settings that change numbers), the code's version (src/, torch, timm) and
the data's identity (src/data/identity.py): `latest` refuses, in one line naming the file, one that
is damaged or was written by another config, other code or on other data, rather than continue a
different run from it. Data matters even with the same config: val and test are split off the file
list again on resume, so an image added since would move trained-on images into test.

`model_best.pt` is the selected model's state dict (the weights test accuracy is measured on), a
plain `torch.save` of CPU tensors; the run's config.yaml says how to build the model it fits.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch

from src.config import ConfigError, FolderRefused, RunConfig
from src.config.since import as_now, missing
from src.data.identity import short_id
from src.models import head_param_names, weights_identity
from src.record.io import METRICS_FILE, write_text, write_with
from src.record.integrity import BEST_FILE, check_crc

log = logging.getLogger(__name__)

FORMAT = 2  # raise it when what a checkpoint holds, or how it is read, changes (2: the data's identity)
_NAME = re.compile(r"checkpoint_epoch(\d+)\.pt")
# Settings that change nothing a run computes: a run continues, or is kept, whatever their values.
NOT_NUMERIC = ("logger.", "trainer.progress", "trainer.save_model", "trainer.resume", "trainer.keep_checkpoints")


class CheckpointError(ConfigError):
    """A checkpoint that cannot be continued from; the message names the file."""


class CheckpointRefused(CheckpointError, FolderRefused):
    """`latest` refused the folder's checkpoint (or the epochs it continues) before the run wrote
    anything: the folder is left as it was, with no failure recorded in it."""


def _flat(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def numeric_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of a config that decide what a run computes, flat (`trainer.epochs`), as JSON
    would read them back (a tuple is a list), so that a config.yaml compares equal to its RunConfig."""
    flat = json.loads(json.dumps(_flat(config)))
    return {k: v for k, v in sorted(flat.items()) if not k.startswith(NOT_NUMERIC)}


def config_changes(saved: Mapping[str, Any], cfg: RunConfig) -> list[str]:
    """The settings that differ between `saved` (a run's config) and `cfg`, as `key: old -> new`."""
    new = numeric_config(cfg.to_dict())
    old = as_now(numeric_config(saved), new)  # a file an older version wrote, without settings added since
    # a key one side lacks is said so, not shown as None: a setting added since an older version wrote the file
    # (and not yet in src/config/since.py), or one that version had and this one dropped
    shown = lambda k: repr(old[k]) if k in old else missing(k)  # noqa: E731
    return [f"{k}: {shown(k)} -> {repr(new[k]) if k in new else f'(no {k} in this one)'}"
            for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]  # null and absent alike


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """A digest of the training code (every src/*.py) and of torch's and timm's versions."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256(f"torch {torch.__version__} timm {timm.__version__}".encode())
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def load_tensors(path: Path) -> Any:
    """A .pt file this project wrote, read with `torch.load(weights_only=True)` once every entry of its
    zip matches the CRC-32 that `torch.save` stored with it (`integrity.check_crc`: DamagedFile names
    the first bad entry)."""
    check_crc(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def checkpoints(run_dir: Path) -> list[Path]:
    """The run folder's epoch checkpoints, oldest first."""
    found = [(int(m.group(1)), p) for p in run_dir.glob("checkpoint_epoch*.pt") if (m := _NAME.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def latest(run_dir: Path, cfg: RunConfig, data_id: str | None) -> dict[str, Any] | None:
    """The newest checkpoint in `run_dir`, checked to be this config's and this code's, trained on the
    data whose identity is `data_id` (None: the data cannot be listed now); None when there is none.
    CheckpointRefused (one line, naming the file) for any other, or for one whose epochs metrics.jsonl
    no longer holds: never loaded silently, and nothing read is written. Where either
    side's identity is unknown the data cannot be checked: continued, with a warning that says so."""
    found = checkpoints(run_dir)
    if not found:
        return None
    path = found[-1]
    # Where moving it away leads: with trainer.keep_checkpoints, to the one before it, not to epoch 0
    # (said so, a user threw away every kept epoch to be rid of one damaged file).
    again = (f"move it away to continue from {found[-2].name}, the one before it" if len(found) > 1 else
             "move it away to train this run from epoch 0") + ", or choose another folder"
    try:
        state = load_tensors(path)
    except Exception as err:  # truncated, corrupted, or holding objects that are not tensors: all refused
        why = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise CheckpointRefused(f"checkpoint {path} is damaged or not a checkpoint ({why}); {again}") from None
    if not isinstance(state, dict) or not isinstance(state.get("format"), int):
        raise CheckpointRefused(f"checkpoint {path} is not a checkpoint of this project (no format version); {again}")
    if state["format"] != FORMAT:
        raise CheckpointRefused(f"checkpoint {path} has format {state['format']}, this code reads format {FORMAT}; {again}")
    changes = config_changes(json.loads(state["config"]), cfg)
    if changes:
        shown = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")
        raise CheckpointRefused(f"checkpoint {path} was written by another config ({shown}); {again}")
    if state["code"] != code_version():
        raise CheckpointRefused(f"checkpoint {path} was written by other code (src/, torch or timm changed since: "
                                f"{state['code']} != {code_version()}); {again}")
    saved = state.get("data")
    if saved is None or data_id is None:
        log.warning("checkpoint %s: its data could not be checked against the data now (dataset_id %s -> %s: "
                    "files that could not be listed); continued", path, short_id(saved), short_id(data_id))
    elif saved != data_id:
        raise CheckpointRefused(f"checkpoint {path} was trained on other data: {cfg.dataset.root or cfg.dataset.kind} "
                                f"changed since (dataset_id {short_id(saved)} -> {short_id(data_id)}); restore the "
                                "data to continue this run, or choose another folder (hydra.run.dir=...) to train on it as it is now")
    _check_weights(state, cfg, path)
    _epochs_up_to(run_dir, int(state["epoch"]), CheckpointRefused)  # read only: rewind_metrics cuts the file
    return state


def _check_weights(state: dict[str, Any], cfg: RunConfig, path: Path) -> None:
    """The run starts again from model.checkpoint_path's file: the same bytes as when `state` was
    written, or CheckpointRefused. A frozen run's checkpoint holds the head alone, the backbone being
    built again from that file: a file replaced meanwhile gave a head trained on one backbone's
    features under another, reported as one run. A checkpoint written before it was recorded is not
    checked (its key is absent)."""
    if "weights" not in state or state["weights"] == (now := weights_identity(cfg.model)):
        return
    raise CheckpointRefused(f"checkpoint {path} was trained from other weights: model.checkpoint_path="
                            f"{cfg.model.checkpoint_path!r} changed since (weights_id {short_id(state['weights'])} -> "
                            f"{short_id(now)}); restore the file to continue this run, or choose another folder "
                            "(hydra.run.dir=...) to train from it as it is now")


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": [version, list(internal), gauss_next],
        "batches": generator.get_state(),  # data order and augmentation (shared by the feature cache)
    }


def _set_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    generator.set_state(state["batches"])


def snapshot(cfg: RunConfig, s: Any, meters: Any, epoch: int, peak_mem_mb: float | None,
             head_only: bool = False) -> dict[str, Any]:
    """Everything the run needs to go on after `epoch` (a `Setup` and its `Meters`), as it stands now.
    `head_only` (the feature cache is on: nothing below the head can change, by the cache's own
    conditions) keeps only the classifier's weights; the rest is what setup builds again."""
    best = meters.best
    keep = head_param_names(s.model) if head_only else None

    def weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return state if keep is None else {k: v for k, v in state.items() if k in keep}

    return {
        "format": FORMAT, "config": json.dumps(numeric_config(cfg.to_dict())), "code": code_version(),
        "data": s.dataset_id, "weights": weights_identity(cfg.model), "epoch": epoch,
        "model": weights(s.model.state_dict()), "head_only": head_only, "optimizer": s.optimizer.state_dict(),
        "scheduler": s.scheduler.state_dict(), "rng": _rng_state(s.train.generator), "meters": meters.state(),
        "peak_mem_mb": peak_mem_mb,
        # the selected weights, unless they are the model's own (the best epoch is this one)
        "best": None if best.epoch == epoch else weights(best.state),
    }


def restore(state: dict[str, Any], s: Any, meters: Any) -> int:
    """Put a `Setup` and its `Meters` back as `snapshot` found them; returns the next epoch to train.
    Call it after everything that draws random numbers before the first epoch (setup, the cache)."""
    head_only = bool(state.get("head_only"))
    try:
        if head_only and set(state["model"]) != head_param_names(s.model):
            raise KeyError("its head's weights are not this model's head")
        s.model.load_state_dict(state["model"], strict=not head_only)
        s.optimizer.load_state_dict(state["optimizer"])
        s.scheduler.load_state_dict(state["scheduler"])
    except (RuntimeError, KeyError, ValueError) as err:
        raise CheckpointError(f"checkpoint of epoch {state['epoch']} does not fit this run's model: "
                              f"{str(err).strip().splitlines()[0][:160]}") from None
    meters.load_state(state["meters"])
    best = s.model.state_dict() | (state["best"] or {})  # head_only: the rest is the model's, unchanged
    device = next(s.model.parameters()).device
    meters.best.state = {k: v.detach().to(device).clone() for k, v in best.items()}
    _set_rng(state["rng"], s.train.generator)
    return first_epoch(state)


def first_epoch(state: dict[str, Any] | None) -> int:
    """The first epoch a run trains: the one after its checkpoint's (`latest`), 0 with none."""
    return 0 if state is None else int(state["epoch"]) + 1


def epochs_done(path: Path) -> int:
    """How many epochs the checkpoint file `path` (`checkpoint_epochNNN.pt`) holds."""
    return int(_NAME.fullmatch(path.name).group(1)) + 1


def elapsed_s(state: dict[str, Any] | None) -> float:
    """The seconds the run's earlier attempts spent up to its checkpoint (the meters' clock), 0 with none."""
    return 0.0 if state is None else float(state["meters"]["elapsed_s"])


def _fsync_dir(folder: Path) -> None:
    """The rename itself made durable (POSIX: fsync of the folder); where that is not possible, as close as the OS allows."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save(run_dir: Path, state: dict[str, Any], keep: int) -> Path:
    """Write the epoch's checkpoint whole and durable, then remove all but the newest `keep` (at least 1)."""
    path = run_dir / f"checkpoint_epoch{state['epoch']:03d}.pt"

    def write(f: Any) -> None:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())  # on disk before the rename makes it the checkpoint a restart reads

    write_with(path, write)
    _fsync_dir(run_dir)
    prune(run_dir, max(1, keep))
    return path


# write_with's temporary file (src.record.io.write_with): `.NAME.HEX.tmp`, renamed to NAME when whole
_WRITE_TMP = re.compile(r"\..+\.[0-9a-f]{12}\.tmp")


def prune(run_dir: Path, keep: int) -> None:
    """All but the newest `keep` checkpoints removed, and the leftovers of killed writes."""
    found = checkpoints(run_dir)
    for path in found[: max(0, len(found) - keep)]:
        path.unlink(missing_ok=True)
    remove_leftovers(run_dir)


def remove_leftovers(run_dir: Path) -> None:
    """The temporary files of writes that a kill cut short (`write_with`'s): a checkpoint's (39 MiB for
    the default model and its optimizer), model_best.pt's (13 MiB) or a record's, which stayed for good.
    Also before a run (re)starts: left to the first checkpoint's save, they took the room that save
    needed on a full disk, and the same command failed again each time. Safe: the run holds its folder
    (src/record/lock.py), so no other process is writing one there."""
    for tmp in run_dir.glob(".*.tmp"):
        if _WRITE_TMP.fullmatch(tmp.name):
            tmp.unlink(missing_ok=True)


def write_best(run_dir: Path, weights: dict[str, torch.Tensor]) -> None:
    """model_best.pt: the selected weights as a plain state dict (`write_weights`)."""
    write_weights(run_dir / BEST_FILE, weights)


def write_weights(path: Path, weights: dict[str, torch.Tensor]) -> None:
    """A plain state dict of contiguous CPU tensors, written whole (atomic). Contiguous: a run trained
    channels_last holds its conv weights in that memory order, torch.save kept it, and safetensors'
    save_file refused the file ("non contiguous tensor") when a user converted it; the values are the same."""
    plain = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
    write_with(path, lambda f: torch.save(plain, f))


def rewind_metrics(run_dir: Path, last_epoch: int) -> list[dict[str, Any]]:
    """metrics.jsonl cut back to epochs 0..last_epoch (a killed run may have logged an epoch whose
    checkpoint it never wrote); returns those rows. CheckpointError when any of them is missing."""
    kept, rows = _epochs_up_to(run_dir, last_epoch, CheckpointError)
    write_text(run_dir / METRICS_FILE, "".join(line + "\n" for line in kept))
    return rows


def _epochs_up_to(run_dir: Path, last_epoch: int, error: type[CheckpointError]) -> tuple[list[str], list[dict[str, Any]]]:
    """metrics.jsonl's lines of epochs 0..last_epoch and their rows, read only; `error` when any is missing."""
    path = run_dir / METRICS_FILE
    # Bytes, decoded line by line: one byte a disk rotted (not UTF-8) failed the whole read with a
    # bare UnicodeDecodeError, also in a line the rewind drops anyway; now it is one unreadable line.
    lines = path.read_bytes().splitlines() if path.is_file() else []
    kept: list[str] = []
    rows: list[dict[str, Any]] = []
    for raw in lines:
        try:
            line = raw.decode()
            row = json.loads(line)
        except ValueError:  # a line a kill cut short (the last one, never a kept epoch's), or rotted
            continue
        if isinstance(row, dict) and isinstance(row.get("epoch"), int) and row["epoch"] <= last_epoch:
            kept.append(line)
            rows.append(row)
    if [r["epoch"] for r in rows] != list(range(last_epoch + 1)):
        raise error(f"{path} does not hold epochs 0-{last_epoch} that the checkpoint of epoch {last_epoch} "
                    "continues; move the checkpoint away to train this run from epoch 0")
    return kept, rows


def adopt(dead_dir: Path, run_dir: Path, cfg: RunConfig, data_id: str | None) -> Path | None:
    """Move the newest checkpoint of `cfg` on the data `data_id`, and the epochs it continues, from a
    dead attempt's folder into `run_dir` (a retried sweep trial runs in a folder of its own); None when
    there is none to move, it is not one `latest` would continue from (logged, and left where it is:
    the retry starts from epoch 0), or `run_dir` has its own."""
    found = checkpoints(dead_dir) if dead_dir.is_dir() else []
    if not found or checkpoints(run_dir) or not (dead_dir / METRICS_FILE).is_file():
        return None
    try:
        latest(dead_dir, cfg, data_id)
    except CheckpointError as err:
        log.warning("not continued: %s", err)
        return None
    run_dir.mkdir(parents=True, exist_ok=True)
    os.replace(dead_dir / METRICS_FILE, run_dir / METRICS_FILE)
    target = run_dir / found[-1].name
    os.replace(found[-1], target)
    return target
