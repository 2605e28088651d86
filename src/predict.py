"""`python -m src.predict RUN_DIR IMAGE_OR_FOLDER... [--out preds.csv]`: a finished run's kept model
on your images, one CSV line per image (path, class, probability).

`load_model(run_dir)` is the same from Python. The model is `<run_dir>/model_best.pt` (the weights
validation selected, which the run's test accuracy was measured on) in the architecture and with the
preprocessing of the run's own config.yaml: each image decoded upright, its short side resized to the
run's `dataset.image_size` and centre-cropped (as the image-folder reader decoded the training images,
`src.data.decode.read_image`), then normalised as the run's batches were (`src.data.batches.Batches`)
and classified in eval mode (`src.training.engine.predict`). A folder is read at any depth.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from src.data.batches import Batches
from src.data.decode import UnreadableImage, read_image
from src.data.folders import IMAGE_SUFFIXES, image_files
from src.data.splits import Split
from src.models import normalization
from src.record.io import CONFIG_FILE, RESULT_FILE, read_json_object, write_text
from src.training.engine import predict
from src.training.checkpoint import BEST_FILE as WEIGHTS_FILE  # the selected weights, as the run wrote them
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
    amp_dtype: torch.dtype | None = None  # the run's autocast (trainer.amp), so that its numbers come out again

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N x classes) for uint8 N x C x size x size images, as the run saw them."""
        labels = torch.zeros(len(images), dtype=torch.long)  # unused: Batches carries labels along
        batches = Batches(Split(images, labels), self.batch_size, normalization(self.model), self.device)
        logits, _ = predict(self.model, batches, self.device, self.amp_dtype)
        return logits.softmax(1)

    def read(self, path: Path) -> np.ndarray:
        """One image file, decoded and resized as the run's image-folder reader did."""
        try:
            return read_image(path, self.image_size, self.jpeg_draft)[0]
        except UnreadableImage as err:
            raise PredictError(f"{path}: not a readable image ({err})") from None
        except OSError as err:
            raise PredictError(f"{path}: {err.strerror or err}") from None

    def predict_files(self, paths: Sequence[Path]) -> list[tuple[Path, str, float]]:
        """(path, predicted class, its probability) for each image file, in order."""
        out: list[tuple[Path, str, float]] = []
        for start in range(0, len(paths), self.batch_size):  # decoded a batch at a time: memory stays bounded
            chunk = paths[start : start + self.batch_size]
            probs = self.probabilities(torch.from_numpy(np.stack([self.read(p) for p in chunk])))
            best, index = probs.max(1)
            out += [(p, self.classes[i], float(b)) for p, i, b in zip(chunk, index.tolist(), best)]
        return out


def _run_file(run_dir: Path, name: str) -> Path:
    path = run_dir / name
    if not run_dir.is_dir():
        raise PredictError(f"{run_dir}: no such run folder")
    if not path.is_file():
        raise PredictError(f"{path}: not found (is {run_dir} a finished run's folder?)")
    return path


def _classes(run_dir: Path, config: dict) -> list[str]:
    """The class names in label order: result.json's `per_class.classes`, else the data's own class list
    where its reader knows it without reading the data, else the label numbers."""
    result = read_json_object(_run_file(run_dir, RESULT_FILE))
    names = (result.get("per_class") or {}).get("classes")
    if isinstance(names, list) and names:
        return [str(n) for n in names]
    count = result.get("num_classes")
    if not isinstance(count, int) or count < 1:
        raise PredictError(f"{run_dir / RESULT_FILE}: no class names and no num_classes (the run did not load its data)")
    try:
        from src.config import DataConfig
        from src.data.registry import reader_for

        data = config.get("dataset") or {}
        known = reader_for(data.get("kind", ""))(DataConfig(**data)).known_classes()
    except Exception:  # a reader that cannot say (its folder gone, a foreign config): numbers then
        known = None
    return list(known) if known and len(known) == count else [str(i) for i in range(count)]


def load_model(run_dir: Path | str, device: str = "cpu") -> LoadedModel:
    """The run's kept weights (`model_best.pt`) in its architecture, in eval mode, with its class names
    and input settings. PredictError (one line, naming the file) for anything missing or that does not fit."""
    import timm

    run_dir = Path(run_dir)
    config_path = _run_file(run_dir, CONFIG_FILE)
    try:
        config = yaml.safe_load(config_path.read_text()) or {}
        model_cfg, data_cfg, trainer = config["model"], config["dataset"], config.get("trainer") or {}
        name, image_size = model_cfg["name"], int(data_cfg["image_size"])
    except (yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise PredictError(f"{config_path}: not a run's config ({type(err).__name__}: {err})") from None
    classes = _classes(run_dir, config)
    weights = _run_file(run_dir, WEIGHTS_FILE)
    # The architecture only: the kept weights replace every parameter, pretrained or not.
    model = timm.create_model(name, pretrained=False, num_classes=len(classes))
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as err:  # unpickling, a foreign file, shapes of another architecture: all say the file
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise PredictError(f"{weights}: not this run's weights ({type(err).__name__}: {first})") from None
    dev = torch.device(device)
    # bfloat16 autocast where the run evaluated in it (src.training.setup.resolve_runtime's rule on this device)
    amp = trainer.get("amp", "auto")
    amp_dtype = torch.bfloat16 if amp == "on" or (amp == "auto" and dev.type == "cuda") else None
    return LoadedModel(model.to(dev).eval(), classes, image_size, bool(data_cfg.get("jpeg_draft", True)),
                       int(trainer.get("eval_batch_size") or 64), dev, amp_dtype)


def image_paths(targets: Sequence[Path]) -> list[Path]:
    """Each target that is an image file, and every image file in each target folder (any depth, sorted)."""
    out: list[Path] = []
    for target in targets:
        if target.is_dir():
            found = image_files(target)
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a finished run's folder (config.yaml, result.json, model_best.pt)")
    parser.add_argument("images", type=Path, nargs="+", help="image files or folders of them")
    parser.add_argument("--out", type=Path, help="write the CSV here instead of printing it")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda); default cpu")
    args = parser.parse_args(argv)
    try:
        loaded = load_model(args.run_dir, args.device)
        text = to_csv(loaded.predict_files(image_paths(args.images)))
        if args.out is None:
            sys.stdout.write(text)
        else:
            write_text(args.out, text)
            print(f"predictions: {args.out}", file=sys.stderr)
    except PredictError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
