"""`python -m src.predict` and `load_model`: a run's kept model on image files reproduces the run's own
test accuracy exactly; what cannot be read is one line naming the file."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.cli import REPO, env


def _digit_folders(root: Path, per_split: dict[str, int]) -> Path:
    """sklearn's digits as PNG files in root/<split>/<class>/, a few per class and split."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    taken = {c: 0 for c in range(10)}
    for split, n in per_split.items():
        for c in range(10):
            (root / split / f"d{c}").mkdir(parents=True)
            idx = np.flatnonzero(digits.target == c)[taken[c] : taken[c] + n]
            taken[c] += n
            for i in idx:
                pixels = (digits.images[i] * 255 / 16).round().astype(np.uint8)
                Image.fromarray(np.kron(pixels, np.ones((3, 3), np.uint8))).save(root / split / f"d{c}" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny run on an image folder (its test/ split given as files), with its kept weights."""
    from src.config import RunConfig
    from src.training.run import run
    from tests.conftest import TINY, merge

    root = _digit_folders(tmp_path_factory.mktemp("digits"), {"train": 6, "val": 3, "test": 5})
    cfg = RunConfig.from_dict(merge(TINY, {
        "dataset": {"kind": "imagefolder", "root": str(root), "image_size": 32, "train_per_class": None,
                    "num_workers": 0, "cache": "off"},
        "strategy": {"name": "full"}, "trainer": {"epochs": 2},
    }))
    run_dir = tmp_path_factory.mktemp("run")
    run(cfg, run_dir)
    return run_dir


def test_predict_on_the_test_split_reproduces_the_recorded_test_accuracy(trained, tmp_path):
    from src.predict import main

    result = json.loads((trained / "result.json").read_text())
    assert Path(result["run_dir"]) == trained and (trained / "model_best.pt").is_file()
    test_dir = Path(yaml_root(trained)) / "test"
    out = tmp_path / "preds.csv"
    assert main([str(trained), str(test_dir), "--out", str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == result["test_samples"] == 50
    assert all(0 < float(r["probability"]) <= 1 for r in rows)
    right = sum(Path(r["path"]).parent.name == r["class"] for r in rows)
    assert right / len(rows) == result["test_acc"]  # exactly: the same model, the same pixels
    # the per-class counts agree too: the recorded confusion matrix's diagonal
    classes = result["per_class"]["classes"]
    matrix = result["per_class"]["test"]["confusion"]
    for i, name in enumerate(classes):
        mine = [r for r in rows if Path(r["path"]).parent.name == name]
        assert sum(r["class"] == name for r in mine) == matrix[i][i], name


def yaml_root(run_dir: Path) -> str:
    import yaml

    return yaml.safe_load((run_dir / "config.yaml").read_text())["dataset"]["root"]


def test_load_model_in_python_matches_the_command_line(trained, tmp_path):
    from src.predict import load_model

    loaded = load_model(trained)
    assert loaded.classes == [f"d{c}" for c in range(10)] and loaded.image_size == 32
    files = sorted((Path(yaml_root(trained)) / "test" / "d3").glob("*.png"))[:2]
    preds = loaded.predict_files(files)
    proc = subprocess.run([sys.executable, "-m", "src.predict", str(trained), *map(str, files)],
                          cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == "path,class,probability"
    assert [line.split(",")[:2] for line in lines[1:]] == [[str(p), c] for p, c, _ in preds]
    state = torch.load(trained / "model_best.pt", weights_only=True)  # a plain state dict
    assert set(state) == set(loaded.model.state_dict())


def test_bad_run_folders_weights_and_images_are_one_line_naming_the_file(trained, tmp_path, capsys):
    """main() in this process (the subprocess tests above show the command line is this main)."""
    import shutil

    from src.predict import main

    def _error(args: list[str]) -> str:
        code = main(args)
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 2 and len(lines) == 1, err
        return lines[0]

    assert _error([str(tmp_path / "nowhere"), str(tmp_path)]) == f"error: {tmp_path / 'nowhere'}: no such run folder"
    assert _error([str(tmp_path), str(tmp_path)]).startswith(f"error: {tmp_path / 'config.yaml'}: not found")
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    (copy / "model_best.pt").unlink()
    assert _error([str(copy), str(tmp_path)]).startswith(f"error: {copy / 'model_best.pt'}: not found")
    (copy / "model_best.pt").write_bytes(b"not a checkpoint")
    assert _error([str(copy), str(tmp_path)]).startswith(f"error: {copy / 'model_best.pt'}: not this run's weights")
    shutil.copy(trained / "model_best.pt", copy / "model_best.pt")
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    assert _error([str(copy), str(bad)]).startswith(f"error: {bad}: not a readable image")
    assert _error([str(copy), str(tmp_path / "missing.jpg")]) == f"error: {tmp_path / 'missing.jpg'}: no such file or folder"
