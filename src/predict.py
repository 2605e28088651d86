"""`python -m src.predict RUN_DIR IMAGE_OR_FOLDER... [--out preds.csv]`: a finished run's kept model
on your images, one CSV line per image (path, class, probability).

`load_model(run_dir)` is the same from Python. The model is `<run_dir>/model_best.pt` (the weights
validation selected, which the run's test accuracy was measured on) in the architecture and with the
preprocessing of the run's own config.yaml: each image decoded upright and brought to the run's
`dataset.image_size` as its data source made its training images (`Reader.image_file`: an image folder's
short side resized and centre-cropped, an array source's picture squared), then normalised as the run's batches were (`src.data.batches.Batches`)
and classified in eval mode (`src.training.engine.predict`). A folder is read at any depth; an image
that cannot be read is named and left out, the others predicted (exit code 1).
"""

from __future__ import annotations

import csv
import io
import itertools
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from src.cli_args import OneLineParser
from src.config import ConfigError
from src.config.checks import MAX_IMAGE_SIZE
from src.config.since import BEFORE
from src.data.batches import Batches
from src.data.decode import UnreadableImage
from src.data.folders import IMAGE_SUFFIXES, image_files, left_out_lines
from src.data.paths import one_line, shown
from src.data.registry import Reader
from src.data.splits import Split
from src.models import normalization
from src.record.integrity import DamagedFile
from src.record.io import CONFIG_FILE, RESULT_FILE, read_json_object, writable_home, write_text
from src.training.checkpoint import BEST_FILE as WEIGHTS_FILE  # the selected weights, as the run wrote them
from src.training.checkpoint import load_tensors
from src.training.engine import predict
from src.training.setup import usable_device

OLDER_WEIGHTS = "model.pt"  # the selected weights of trainer.save_model, and all an older run kept

CSV_HEAD = ("path", "class", "probability")


class PredictError(Exception):
    """What stops a prediction, as the one line to print (it names the file)."""


@dataclass
class LoadedModel:
    """A run's kept model and how its inputs were prepared."""

    model: torch.nn.Module
    classes: list[str]
    image_size: int
    jpeg_draft: bool
    batch_size: int
    device: torch.device
    reader: Reader  # the run's data source: it makes an image file into the pixels the run trained on
    amp_dtype: torch.dtype | None = None  # the run's autocast (trainer.amp), so that its numbers come out again

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N x classes) for uint8 N x C x size x size images, as the run saw them."""
        labels = torch.zeros(len(images), dtype=torch.long)  # unused: Batches carries labels along
        batches = Batches(Split(images, labels), self.batch_size, normalization(self.model), self.device)
        logits, _ = predict(self.model, batches, self.device, self.amp_dtype)
        return logits.softmax(1)

    def read(self, path: Path) -> np.ndarray:
        """One image file, decoded and resized as the run's data source made its training images."""
        try:
            return self.reader.image_file(path)
        except UnreadableImage as err:
            raise PredictError(f"{shown(path)}: not a readable image ({err})") from None
        except ConfigError as err:  # pixels the training loader refuses too (negative, float past 1): it names the file
            raise PredictError(str(err)) from None
        except OSError as err:
            raise PredictError(f"{shown(path)}: {err.strerror or err}") from None

    def predict_files(self, paths: Sequence[Path] | Path | str,
                      unreadable: list[str] | None = None) -> list[tuple[Path, str, float]]:
        """(path, predicted class, its probability) for each image file, in order. An image that
        cannot be read raises PredictError naming it; with `unreadable`, its line is added there and
        the other images are predicted (one bad file among thousands, found after an hour's
        predicting, lost every prediction made)."""
        if isinstance(paths, (str, os.PathLike)):  # one image: a string was iterated, "/: not a readable image"
            paths = [Path(paths)]
        out: list[tuple[Path, str, float]] = []
        for start in range(0, len(paths), self.batch_size):  # decoded a batch at a time: memory stays bounded
            chunk, pixels = [], []
            for path in paths[start : start + self.batch_size]:
                try:
                    pixels.append(self.read(path))
                except PredictError as err:
                    if unreadable is None:
                        raise
                    unreadable.append(str(err))
                    continue
                chunk.append(path)
            if not chunk:
                continue
            probs = self.probabilities(torch.from_numpy(np.stack(pixels)))
            best, index = probs.max(1)
            out += [(p, self.classes[i], float(b)) for p, i, b in zip(chunk, index.tolist(), best)]
        return out


def run_folder(given: Path) -> Path:
    """The run folder `given` names: itself, or the folder of its result.json, which stands for its run
    as in `src.report` (a path pasted from a report's table of runs). Another file is one line saying so;
    "no such run folder" for a file that exists sent users looking for a folder they had given."""
    if given.is_file():
        if given.name != RESULT_FILE:
            raise PredictError(f"{shown(given)}: a file, not a run folder (give the folder, or its {RESULT_FILE})")
        return given.parent
    return given


def _runs_below(folder: Path, most: int = 1000) -> list[str]:
    """The runs below `folder` at any depth, by their path from it (a sweep's rerun/, a day's multirun/DATE)."""
    found = itertools.islice((r.parent for r in folder.rglob(RESULT_FILE) if r.parent != folder), most)
    return sorted(d.relative_to(folder).as_posix() for d in found)


def _run_file(run_dir: Path, name: str) -> Path:
    path = run_dir / name
    if not run_dir.is_dir():
        raise PredictError(f"{run_dir}: no such run folder")
    runs = _runs_below(run_dir) if not path.exists() else []
    if runs:  # a multirun's, a sweep's or its re-runs' folder, or one above it: the runs are inside, one is the model
        more = f", ... ({len(runs)} in all)" if len(runs) > 3 else ""
        raise PredictError(f"{run_dir}: a folder of runs, not one run ({', '.join(runs[:3])}{more}): give the "
                           "one whose model to use (pareto.json's run_dir, the report's run column)")
    if not path.is_file():
        raise PredictError(f"{path}: not found (is {run_dir} a finished run's folder?)")
    return path


def _reader(config_path: Path, config: dict) -> Reader:
    """The run's data source (`dataset.kind`), which says how its images were prepared: a source this
    code cannot build is one line, never a guess at the preprocessing."""
    from src.config import DataConfig
    from src.data.registry import reader_for

    data = config.get("dataset") or {}
    # a key the file lacks: what runs before that setting did where it differs from today's default
    # (src.config.since.BEFORE: no draft decoding), else its default, as when the run was composed
    data = {k.removeprefix("dataset."): v for k, v in BEFORE.items() if k.startswith("dataset.")} | data
    try:
        cfg = DataConfig(**data)
        return reader_for(cfg.kind)(cfg)
    except Exception as err:  # an unknown kind (a reader registered elsewhere), keys of another version
        raise PredictError(f"{shown(config_path)}: dataset.kind={data.get('kind')!r}: its data source cannot be "
                           f"built here, so how its images were prepared is unknown ({one_line(err)})") from None


def _classes(run_dir: Path, reader: Reader) -> tuple[list[str], dict]:
    """The class names in label order: result.json's `per_class.classes`, else the data's own class list
    where its reader knows it without reading the data, else the label numbers; and the record itself."""
    path = _run_file(run_dir, RESULT_FILE)
    try:
        result = read_json_object(path)
    except ValueError as err:  # its one-line reason (truncated, not JSON, unreadable), with the file's name
        raise PredictError(f"{shown(path)}: {err}") from None
    status = result.get("status")
    if status is not None and status != "completed":
        # A pruned, failed or interrupted run can leave model_best.pt (the best epoch so far, or weights a
        # NaN test loss failed): no test accuracy was measured on it, and its predictions were served silently.
        error = " ".join(str(result.get("error") or "").split())  # one line, whatever the record holds
        why = f": {error}" if error else ""
        raise PredictError(f"{shown(path)}: the run did not complete (status {status!r}{why}); its {WEIGHTS_FILE} was "
                           "never tested: predict with a completed run's folder")
    per_class = result.get("per_class")
    names = per_class.get("classes") if isinstance(per_class, dict) else None
    if isinstance(names, list) and names:
        return [str(n) for n in names], result
    count = result.get("num_classes")
    if not isinstance(count, int) or count < 1:
        raise PredictError(f"{run_dir / RESULT_FILE}: no class names and no num_classes (the run did not load its data)")
    try:
        known = reader.known_classes()
    except Exception:  # a reader that cannot say (its folder gone, a foreign config): numbers then
        known = None
    return (list(known) if known and len(known) == count else [str(i) for i in range(count)]), result


def _as_recorded(config_path: Path, name: str, image_size: int, result: dict) -> None:
    """config.yaml's model and image size are what result.json (digest-checked) recorded: a config edited
    since the run (image_size 32 -> 64) was predicted with, silently, at chance on the run's own test images."""
    for key, given, recorded in (("model.name", name, result.get("model")),
                                 ("dataset.image_size", image_size, result.get("image_size"))):
        if recorded is not None and given != recorded:
            raise PredictError(f"{shown(config_path)}: {key}={given!r}, but the run trained with {recorded!r} (its "
                               f"{RESULT_FILE}): the config was edited since; restore it to predict as the run did")


def _weights_name(run_dir: Path) -> str:
    """model_best.pt; model.pt in a folder without one: before model_best.pt (6fef3e1) a run kept its
    selected weights, the same state dict, only there (trainer.save_model)."""
    if os.path.lexists(run_dir / WEIGHTS_FILE) or not (run_dir / OLDER_WEIGHTS).is_file():
        return WEIGHTS_FILE  # a link or folder there is refused as it, never passed by
    return OLDER_WEIGHTS


def load_model(run_dir: Path | str, device: str = "cpu") -> LoadedModel:
    """The run's kept weights (`model_best.pt`) in its architecture, in eval mode, with its class names
    and input settings. PredictError (one line, naming the file) for anything missing or that does not fit."""
    import timm

    dev = torch_device(device)
    run_dir = run_folder(Path(run_dir))
    config_path = _run_file(run_dir, CONFIG_FILE)
    config, settings = _read_config(config_path)
    name, image_size, jpeg_draft, batch_size, amp = settings
    reader = _reader(config_path, config)
    classes, result = _classes(run_dir, reader)
    weights = _run_file(run_dir, _weights_name(run_dir))
    # The architecture only: the kept weights replace every parameter, pretrained or not.
    try:
        model = timm.create_model(name, pretrained=False, num_classes=len(classes))
    except Exception as err:  # an unknown name (another timm's, a typo edited in): the config says it
        raise PredictError(f"{shown(config_path)}: model.name={name!r} cannot be built ({one_line(err)})") from None
    _as_recorded(config_path, name, image_size, result)
    try:
        model.load_state_dict(load_tensors(weights))
    except DamagedFile as err:  # this run's file, rotted or cut: not "another run's weights"
        raise PredictError(f"{weights}: damaged: {err}") from None
    except Exception as err:  # unpickling, a foreign file, shapes of another architecture: all say the file
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise PredictError(f"{weights}: not this run's weights ({type(err).__name__}: {first})") from None
    # bfloat16 autocast where the run evaluated in it (src.training.setup.resolve_runtime's rule on this device)
    amp_dtype = torch.bfloat16 if amp == "on" or (amp == "auto" and dev.type == "cuda") else None
    return LoadedModel(model.to(dev).eval(), classes, image_size, jpeg_draft, batch_size, dev, reader, amp_dtype)


def torch_device(name: str) -> torch.device:
    """`name` as a torch device this machine has (src.training.setup.usable_device); PredictError otherwise."""
    try:
        return usable_device(name)
    except ConfigError as err:
        raise PredictError(str(err)) from None


def _read_config(path: Path) -> tuple[dict, tuple[str, int, bool, int, str]]:
    """The run's config.yaml, and what prediction takes from it (model.name, dataset.image_size and
    jpeg_draft, trainer.eval_batch_size and amp), each checked: PredictError, one line naming the file
    and the key, for a file that is damaged, edited or not a run's config."""
    try:
        config = yaml.safe_load(path.read_bytes().decode())
    except yaml.YAMLError as err:  # several lines, with a caret under the spot: the problem and where
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        why = getattr(err, "problem", None) or one_line(err)
        raise PredictError(f"{shown(path)}: not valid YAML: {why}{where}") from None
    except UnicodeDecodeError:
        raise PredictError(f"{shown(path)}: not a run's config (not UTF-8 text)") from None
    except OSError as err:
        raise PredictError(f"{shown(path)}: unreadable ({err.strerror or type(err).__name__})") from None

    def bad(key: str, value, expected: str) -> PredictError:
        return PredictError(f"{shown(path)}: not a run's config ({key}={value!r}: expected {expected})")

    if not isinstance(config, dict):
        raise bad("config", config, "a mapping of keys")
    sections = {}
    for key, optional in (("model", False), ("dataset", False), ("trainer", True)):
        section = config.get(key)
        if section is None and optional:
            section = {}
        if not isinstance(section, dict):
            raise bad(key, section, "a mapping of keys")
        sections[key] = section
    model, data, trainer = sections["model"], sections["dataset"], sections["trainer"]
    name = model.get("name")
    if not isinstance(name, str) or not name:
        raise bad("model.name", name, "a timm model name")
    size = data.get("image_size")
    # the training gate's range: an image size edited to 100000 would decode 30 GB an image
    if isinstance(size, bool) or not isinstance(size, int) or not 16 <= size <= MAX_IMAGE_SIZE:
        raise bad("dataset.image_size", size, f"an integer in 16..{MAX_IMAGE_SIZE}")
    draft = data.get("jpeg_draft", BEFORE["dataset.jpeg_draft"])  # a file without it: a run that had no draft decoding
    if not isinstance(draft, bool):
        raise bad("dataset.jpeg_draft", draft, "true or false")
    batch = trainer.get("eval_batch_size") or 64
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise bad("trainer.eval_batch_size", batch, "a positive integer")
    amp = trainer.get("amp", "auto")
    amp = {True: "on", False: "off"}.get(amp, amp) if isinstance(amp, bool) else amp  # YAML 1.1 reads a bare on/off so
    if amp not in ("auto", "on", "off"):
        raise bad("trainer.amp", amp, "'auto' | 'on' | 'off'")
    return config, (name, size, draft, batch, amp)


def image_paths(targets: Sequence[Path], notes: list[str] | None = None) -> list[Path]:
    """Each target that is an image file, and every image file in each target folder (any depth, sorted).
    What a folder holds that is not read (other suffixes, links to folders) is added to `notes` as
    lines to show, as training's loader warns: a .heic photo among jpgs was left unpredicted without a word."""
    out: list[Path] = []
    for target in targets:
        if target.is_dir():
            left_out: list[Path] = []
            try:
                found = image_files(target, left_out)
                if notes is not None:
                    notes += left_out_lines(target, left_out, "in it")
            except OSError as err:  # a folder in it that cannot be listed
                raise PredictError(f"{shown(err.filename or target)}: unreadable ({err.strerror or err})") from None
            if not found:
                raise PredictError(f"{target}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
            out += found
        elif target.is_file():
            out.append(target)
        else:
            raise PredictError(f"{target}: no such file or folder")
    return out


def to_csv(rows: Sequence[tuple[Path, str, float]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEAD)
    writer.writerows((str(p), c, f"{prob:.6f}") for p, c, prob in rows)
    return buffer.getvalue()


def check_out(out: Path, run_dir: Path, images: Sequence[Path]) -> None:
    """`--out` can take the CSV: not a folder, below folders (or places one can be made), writable, and
    none of what the command reads or the run wrote (`--out RUN/result.json`, or `RUN --out a.jpg b.png`,
    the name forgotten, replaced the run's record or the photo). PredictError, one line naming it;
    nothing is created here (the write makes missing folders)."""
    if out.is_dir():
        raise PredictError(f"--out {shown(out)} is a folder, not a file")
    if out.suffix.lower() in IMAGE_SUFFIXES:
        raise PredictError(f"--out {shown(out)} is an image's name, not a CSV's (a file name after --out forgotten?)")
    if out.is_file() and out.suffix.lower() != ".csv":  # an earlier CSV may be written over; a run's file may not
        run = run_folder(run_dir).resolve()
        if out.resolve().is_relative_to(run) or any(out.samefile(i) for i in images if i.is_file()):
            raise PredictError(f"--out {shown(out)} is a file of the run or one the command reads: give a new file")
    try:
        writable_home(out.parent)
    except ValueError as err:
        raise PredictError(f"--out {shown(out)}: {err}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m src.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a finished run's folder (config.yaml, result.json, model_best.pt), or its result.json")
    parser.add_argument("images", nargs="+", help="image files or folders of them")
    parser.add_argument("--out", help="write the CSV here instead of printing it")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda); default cpu")
    args = parser.parse_args(argv)
    # Path("") is Path("."): `src.predict RUN "$UNSET"` predicted every image below the current folder.
    empty = [name for name, given in (("run_dir", [args.run_dir]), ("an image", args.images), ("--out", [args.out]))
             if "" in given]
    if empty:
        print(f"error: {empty[0]} is an empty path (an unset variable?)", file=sys.stderr)
        return 2
    args.run_dir, args.images = Path(args.run_dir), [Path(i) for i in args.images]
    args.out = None if args.out is None else Path(args.out)
    try:
        if args.out is not None:  # before any work: a place the CSV cannot go is known now
            check_out(args.out, args.run_dir, args.images)
        loaded = load_model(args.run_dir, args.device)
        notes: list[str] = []
        paths, unreadable = image_paths(args.images, notes), []
        for line in notes:  # not predicted, and not images by this tool's reading: said, the exit code unchanged
            print(f"warning: {line}", file=sys.stderr)
        rows = loaded.predict_files(paths, unreadable)
        if not rows:  # nothing to write: the first file's reason is the error
            raise PredictError(unreadable[0] + (f" (and {len(unreadable) - 1} more image files unreadable)"
                                                if len(unreadable) > 1 else ""))
        text = to_csv(rows)
        if args.out is None:
            sys.stdout.write(text)
        else:
            try:
                write_text(args.out, text)
            except OSError as err:  # a full disk (DiskFull names the file), a folder removed meanwhile
                raise PredictError(f"--out {shown(args.out)}: not written ({err.strerror or one_line(err)})") from None
            print(f"predictions: {args.out}", file=sys.stderr)
    except PredictError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for line in unreadable:  # each named; the rest were predicted, and the exit code says not all were
        print(f"warning: {line}: not predicted", file=sys.stderr)
    if unreadable:
        print(f"error: {len(unreadable)} of {len(paths)} image files not predicted (named above); the other "
              f"{len(rows)} are in the CSV", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
