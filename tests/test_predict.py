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

from src.record.io import read_json_object, write_json
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

    result = read_json_object(trained / "result.json")
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
    # a file that exists is not "no such run folder": its result.json stands for the run (as in src.report),
    # another file is named as a file
    image = sorted((Path(yaml_root(trained)) / "test" / "d3").glob("*.png"))[0]
    assert main([str(trained / "result.json"), str(image)]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith(f"{image},d")
    assert _error([str(trained / "config.yaml"), str(tmp_path)]) == \
        f"error: {trained / 'config.yaml'}: a file, not a run folder (give the folder, or its result.json)"
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


def test_unreadable_images_among_good_ones_are_named_and_the_rest_predicted(trained, tmp_path, capsys):
    # one bad file among many stopped the whole prediction and wrote nothing: every other image's
    # prediction was lost. Now the good ones are in the CSV, each bad one is named, and the exit code is 1
    import shutil

    from src.predict import main

    good = sorted((Path(yaml_root(trained)) / "test" / "d3").glob("*.png"))[:3]
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, image in enumerate(good):
        shutil.copy(image, folder / f"{i}_good.png")
    (folder / "1_broken.png").write_bytes(b"\x89PNG not really")
    (folder / "2_empty.jpg").write_bytes(b"")
    out = tmp_path / "preds.csv"
    assert main([str(trained), str(folder), "--out", str(out)]) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    rows = list(csv.reader(io.StringIO(out.read_text())))
    assert rows[0] == ["path", "class", "probability"]
    assert [Path(r[0]).name for r in rows[1:]] == ["0_good.png", "1_good.png", "2_good.png"]
    from src.predict import load_model

    loaded = load_model(trained)
    alone = loaded.predict_files(sorted(folder.glob("*_good.png")))
    assert [(r[1], r[2]) for r in rows[1:]] == [(c, f"{p:.6f}") for _, c, p in alone]  # as on the good files alone
    assert [ln.split(":")[0] for ln in err if ln.startswith("warning:")] == ["warning"] * 2
    assert any(f"{folder / '1_broken.png'}: not a readable image" in ln for ln in err)
    assert any(str(folder / "2_empty.jpg") in ln for ln in err)
    assert err[-1] == "error: 2 of 5 image files not predicted (named above); the other 3 are in the CSV"
    # and the Python API still raises on the first, naming it, unless asked to collect them
    with pytest.raises(Exception, match="1_broken.png"):
        loaded.predict_files(sorted(folder.iterdir()))


def test_a_model_best_with_one_flipped_bit_is_one_line_not_served(trained, tmp_path, capsys):
    """torch.load reads a rotted weight silently: predictions came out changed (or NaN), exit 0."""
    import shutil

    from src.predict import main
    from tests.disks import flip_bit

    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    flip_bit(copy / "model_best.pt", bit=6)
    image = next((Path(yaml_root(trained)) / "test" / "d0").glob("*.png"))
    line = _one_line_error(main, [str(copy), str(image)], capsys)
    assert line.startswith(f"error: {copy / 'model_best.pt'}: damaged: entry ") and "CRC-32" in line, line


@pytest.mark.parametrize("keep, says", [(0.5, "it is cut short: a zip whose end is missing"), (0, "it is empty (0 bytes)")])
def test_a_model_best_cut_short_is_named_damaged_not_another_run_s(trained, tmp_path, capsys, keep, says):
    """A copy or write that never finished leaves a zip without its end: it read as "not this run's
    weights (RuntimeError: PytorchStreamReader failed ...)", sending the user to look for another run."""
    import shutil

    from src.predict import main

    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    weights = copy / "model_best.pt"
    weights.write_bytes(weights.read_bytes()[: int(weights.stat().st_size * keep)])
    image = next((Path(yaml_root(trained)) / "test" / "d0").glob("*.png"))
    line = _one_line_error(main, [str(copy), str(image)], capsys)
    assert line.startswith(f"error: {weights}: damaged: {says}"), line


def test_a_weights_file_cut_short_is_named_damaged(tmp_path):
    """model.checkpoint_path and a resumed checkpoint read .pt files through the same check."""
    from src.models import PretrainedWeightsError, _load_state_dict_file

    path = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:1500])
    with pytest.raises(PretrainedWeightsError, match=r"is damaged: it is cut short: a zip whose end is missing"):
        _load_state_dict_file(path)


@pytest.mark.parametrize("status, error", [("pruned", None), ("failed", "DivergedError: test loss became nan"),
                                           ("interrupted", "interrupted by Ctrl-C")])
def test_a_run_that_did_not_complete_is_refused_though_it_kept_weights(trained, tmp_path, capsys, status, error):
    # a pruned trial, or a run that failed or was stopped after writing model_best.pt: no test accuracy
    # was measured on those weights, and they predicted silently
    import shutil

    from src.predict import main

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    record = read_json_object(run / "result.json")
    write_json(run / "result.json", record | {"status": status, "error": error})
    assert (run / "model_best.pt").is_file()
    line = _one_line_error(main, [str(run), str(tmp_path)], capsys)
    why = f": {error}" if error else ""
    assert line == (f"error: {run / 'result.json'}: the run did not complete (status '{status}'{why}); its "
                    "model_best.pt was never tested: predict with a completed run's folder")


def _one_line_error(main, args: list[str], capsys) -> str:
    code = main(args)
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and not captured.out, captured.err
    return lines[0]


def test_pixels_the_training_loader_refuses_are_one_line_naming_the_file(trained, tmp_path, capsys):
    """What read_image refuses by value (ConfigError, as training refuses it), not only what it cannot
    decode: a float TIFF at 0..255 (floats are read in [0, 1]) and an integer TIFF with negative values."""
    from PIL import Image

    from src.predict import main

    ramp = np.arange(32 * 32).reshape(32, 32) % 256
    files = {"float.tif": ramp.astype(np.float32), "negative.tif": (ramp - 100).astype(np.int32)}
    for name, array in files.items():
        Image.fromarray(array).save(tmp_path / name)  # modes F and I: no mode= (Pillow 13 refuses it)
    for name, says in [("float.tif", "float pixel values outside [0, 1]"), ("negative.tif", "negative pixel values")]:
        line = _one_line_error(main, [str(trained), str(tmp_path / name)], capsys)
        assert line.startswith(f"error: {tmp_path / name}: {says}"), line


def test_a_device_this_machine_lacks_is_one_line_naming_it(trained, tmp_path, capsys, monkeypatch):
    from src.predict import main

    image = next((Path(yaml_root(trained)) / "test" / "d0").glob("*.png"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without a GPU
    for device in ("cuda", "cuda:1"):  # src.train's own check, with what to use instead
        line = _one_line_error(main, [str(trained), str(image), "--device", device], capsys)
        assert line == f"error: --device {device} but no CUDA device is available (use cpu)", line
    for device in ("foo", "meta", "cuda:x", ""):
        line = _one_line_error(main, [str(trained), str(image), "--device", device], capsys)
        assert line == f"error: --device {device!r} is not allowed (cpu, cuda, cuda:N or mps)", line


def test_an_empty_path_is_refused_not_read_as_the_current_folder(trained, tmp_path, capsys, monkeypatch):
    # Path("") is Path("."): `src.predict RUN "$UNSET"` predicted every image below the current folder.
    from src.predict import main

    image = next((Path(yaml_root(trained)) / "test" / "d0").glob("*.png"))
    monkeypatch.chdir(image.parent)
    for argv, says in (([str(trained), ""], "an image"), (["", str(image)], "run_dir"),
                       ([str(trained), str(image), "--out", ""], "--out")):
        assert _one_line_error(main, argv, capsys) == f"error: {says} is an empty path (an unset variable?)"


def test_an_out_that_cannot_take_the_csv_is_refused_before_any_work(trained, tmp_path, capsys, monkeypatch):
    import src.predict as predict

    image = next((Path(yaml_root(trained)) / "test" / "d0").glob("*.png"))
    a_file = tmp_path / "a_file"
    a_file.write_text("kept\n")
    (tmp_path / "folder").mkdir()
    monkeypatch.setattr(predict, "load_model", lambda *a: pytest.fail("--out is checked first"))
    cases = [(tmp_path / "folder", f"--out {tmp_path / 'folder'} is a folder, not a file"),
             (a_file / "preds.csv", f"--out {a_file / 'preds.csv'}: {a_file} is a file, not a folder"),
             (a_file / "x" / "y" / "preds.csv", f"--out {a_file / 'x' / 'y' / 'preds.csv'}: {a_file} is a file, not a folder")]
    for out, says in cases:
        assert _one_line_error(predict.main, [str(trained), str(image), "--out", str(out)], capsys) == f"error: {says}"
    assert a_file.read_text() == "kept\n" and list((tmp_path / "folder").iterdir()) == []
    monkeypatch.undo()
    out = tmp_path / "new" / "deeper" / "preds.csv"  # missing folders are made, as before
    assert predict.main([str(trained), str(image), "--out", str(out)]) == 0
    assert out.read_text().startswith("path,class,probability\n")


@pytest.mark.parametrize("name, content, says", [
    ("result.json", "{trunc", "result.json: not valid JSON"),
    ("result.json", "[1, 2]", "result.json: not a JSON object"),
    ("result.json", b"\xff\xfe{}", "result.json: not valid JSON (not UTF-8 text)"),
    ("config.yaml", "garbage: [", "config.yaml: not valid YAML: "),
    ("config.yaml", b"model: \xff\n", "config.yaml: not a run's config (not UTF-8 text)"),
    ("config.yaml", "- a list\n", "config.yaml: not a run's config (config=['a list']: expected a mapping of keys)"),
    ("config.yaml", "model: {name: no_such_net}\ndataset: {image_size: 32}\n",
     "config.yaml: model.name='no_such_net' cannot be built (RuntimeError: Unknown model"),
    ("config.yaml", "model: {name: test_efficientnet}\ndataset: {image_size: 100000}\n",
     "config.yaml: not a run's config (dataset.image_size=100000: expected an integer in 16..4096)"),
    ("config.yaml", "model: {name: test_efficientnet}\ndataset: {image_size: 32}\ntrainer: {eval_batch_size: many}\n",
     "config.yaml: not a run's config (trainer.eval_batch_size='many': expected a positive integer)"),
    ("config.yaml", "model: {name: test_efficientnet}\ndataset: {image_size: 32}\ntrainer: {amp: maybe}\n",
     "config.yaml: not a run's config (trainer.amp='maybe': expected 'auto' | 'on' | 'off')"),
])
def test_a_damaged_run_file_is_one_line_naming_it(trained, tmp_path, capsys, name, content, says):
    """Every file of the run that predict reads (config.yaml, result.json; model_best.pt above), damaged
    or edited: one line naming it, never a traceback or a multi-line YAML error."""
    import shutil

    from src.predict import main

    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    (copy / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    image = next((Path(yaml_root(trained)) / "test" / "d0").glob("*.png"))
    line = _one_line_error(main, [str(copy), str(image)], capsys)
    assert line.startswith(f"error: {copy / says}"), line


def test_the_kept_weights_convert_to_safetensors_and_load_back_in_plain_timm(trained, tmp_path):
    # A run on the CPU trains channels_last: model_best.pt kept its conv weights in that memory order,
    # and safetensors' save_file, the usual next step to publish a model, refused it ("non contiguous
    # tensor: conv_stem.weight"). The same numbers, contiguous, convert and load back into timm.
    import timm
    from safetensors.torch import load_file, save_file

    from src.predict import load_model

    state = torch.load(trained / "model_best.pt", weights_only=True)
    assert all(v.is_contiguous() for v in state.values())
    save_file(state, tmp_path / "model.safetensors")
    loaded = load_model(trained)
    plain = timm.create_model(loaded.model.default_cfg["architecture"], pretrained=False, num_classes=len(loaded.classes))
    plain.load_state_dict(load_file(tmp_path / "model.safetensors"))
    for name, value in loaded.model.state_dict().items():
        assert torch.equal(plain.state_dict()[name], value), name


def test_an_array_sources_run_predicts_on_its_own_test_images_as_it_measured_them(tmp_path):
    # A MedMNIST run's test images, saved as PNG files and predicted, gave 420 of 468 right where the
    # run recorded 419: prediction decoded every file the image folders' way (Pillow's resize of the
    # short side, then a crop), while the .npz's arrays were resized by resize_uint8. Each file is
    # now prepared by the run's own source, pixel for pixel as the run's test split.
    from PIL import Image
    from sklearn.datasets import load_digits

    from src.config import DataConfig, RunConfig
    from src.data.load import load_dataset
    from src.predict import load_model
    from src.training.run import run
    from tests.conftest import TINY, merge

    digits = load_digits()
    keep = digits.target < 3  # 3 classes, 28 x 28 grey as MedMNIST's
    images = np.kron((digits.images[keep] * 255 / 16).round().astype(np.uint8), np.ones((1, 4, 4), np.uint8))[:, 2:30, 2:30]
    labels = digits.target[keep].astype(np.uint8)[:, None]
    cut = {"train": slice(0, 60), "val": slice(60, 90), "test": slice(90, 130)}
    npz = tmp_path / "tiny.npz"
    np.savez(npz, **{f"{s}_{k}": a[c] for s, c in cut.items() for k, a in (("images", images), ("labels", labels))})
    data = {"kind": "medmnist", "root": str(npz), "image_size": 32, "train_per_class": None}
    run_dir = tmp_path / "run"
    run(RunConfig.from_dict(merge(TINY, {"dataset": data, "strategy": {"name": "full"}, "trainer": {"epochs": 1}})), run_dir)
    files = []
    for i, (pixels, label) in enumerate(zip(images[cut["test"]], labels[cut["test"]])):
        files.append(tmp_path / "test" / str(int(label[0])) / f"{i:03d}.png")
        files[-1].parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(files[-1])
    loaded = load_model(run_dir)
    measured = load_dataset(DataConfig(**data)).test.images
    for i, path in enumerate(files):
        assert np.array_equal(loaded.read(path), measured[i].expand(3, -1, -1).numpy()), path
    result = read_json_object(run_dir / "result.json")
    right = sum(c == p.parent.name for p, c, _ in loaded.predict_files(files))
    assert right / len(files) == result["test_acc"]


def test_a_run_folder_written_at_90672a3_predicts_with_its_weights_and_its_decoding(trained, tmp_path):
    """Seen: a run folder written at 90672a3 (November), whose selected weights are model.pt (there
    was no model_best.pt) and whose config.yaml has no dataset.jpeg_draft: 'model_best.pt: not
    found (is it a finished run's folder?)', and with model_best.pt in place its JPEGs decoded with
    draft decoding, other pixels than that run's own (it decoded at full size)."""
    import shutil

    import yaml

    from src.predict import load_model

    older = tmp_path / "older"
    shutil.copytree(trained, older)
    (older / "model_best.pt").rename(older / "model.pt")
    config = yaml.safe_load((older / "config.yaml").read_text())
    for key in ("cache", "cache_dir", "num_workers", "jpeg_draft", "ood", "ood_per_class"):
        del config["dataset"][key]  # what that version's config.yaml lacked
    (older / "config.yaml").write_text(yaml.safe_dump(config))
    loaded = load_model(older)
    assert loaded.jpeg_draft is False
    # and its JPEGs are decoded so: at full size, as that run decoded its own (the field alone said so
    # while the data source that decodes read today's default, draft decoding)
    from PIL import Image

    from src.data.decode import read_image

    jpeg = tmp_path / "big.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)).save(jpeg, quality=90)
    full, draft = (read_image(jpeg, loaded.image_size, d)[0] for d in (False, True))
    assert not np.array_equal(full, draft)  # the case can tell them apart
    assert np.array_equal(loaded.read(jpeg), full)
    state = torch.load(trained / "model_best.pt", weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in loaded.model.state_dict().items())
    files = sorted((Path(yaml_root(trained)) / "test" / "d3").glob("*.png"))[:2]
    assert loaded.predict_files(files) == load_model(trained).predict_files(files)


def test_a_folder_of_runs_is_one_line_naming_the_runs_in_it(trained, tmp_path, capsys):
    # A sweep's folder, or its rerun/trial_0000 (seed_1, seed_2): "config.yaml: not found (is it a finished
    # run's folder?)" sent users looking for a damaged run, not for the run folders inside.
    import shutil

    from src.predict import main

    for name in ("seed_1", "seed_2"):
        shutil.copytree(trained, tmp_path / "trial_0000" / name)
    assert main([str(tmp_path / "trial_0000"), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {tmp_path / 'trial_0000'}: a folder of runs, not one run (seed_1, seed_2): give the one "
                   "whose model to use (pareto.json's run_dir, the report's run column)\n")


def test_files_of_a_folder_that_are_not_read_are_named_not_left_unpredicted_silently(trained, tmp_path, capsys):
    # A .heic photo among pngs, or a linked folder of pngs, got no CSV row and no word: the user's
    # count of predictions came up short with nothing saying why. Now each kind is one warning line;
    # the exit code stays 0 (every image file was predicted).
    import shutil

    from src.predict import main

    good = sorted((Path(yaml_root(trained)) / "test" / "d3").glob("*.png"))[:2]
    folder, elsewhere = tmp_path / "photos", tmp_path / "more"
    folder.mkdir()
    elsewhere.mkdir()
    shutil.copy(good[0], folder / "a.png")
    shutil.copy(good[1], elsewhere / "b.png")
    (folder / "phone.heic").write_bytes(b"an iPhone photo")
    (folder / "Thumbs.db").write_bytes(b"the OS's own: no word")
    (folder / "more").symlink_to(elsewhere, target_is_directory=True)
    out = tmp_path / "preds.csv"
    assert main([str(trained), str(folder), "--out", str(out)]) == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")]
    assert len(err) == 2, err
    assert any(".heic: 1" in ln and str(folder / "phone.heic") in ln for ln in err), err
    assert any("link to a folder" in ln and str(folder / "more") in ln for ln in err), err
    assert not any("Thumbs" in ln for ln in err)
    assert [r[0] for r in csv.reader(io.StringIO(out.read_text()))][1:] == [str(folder / "a.png")]


@pytest.mark.parametrize("edit, says", [
    (("dataset", "image_size", 64), "dataset.image_size=64, but the run trained with 32"),
    (("model", "name", "resnet18"), "model.name='resnet18', but the run trained with 'test_efficientnet'"),
])
def test_a_config_edited_since_the_run_is_one_line_not_predictions_at_chance(trained, tmp_path, capsys, edit, says):
    # config.yaml is the run's only record of its preprocessing, and nothing guards it: a user who edited
    # dataset.image_size 32 -> 64 in a kept digits run got predictions at 64 px, exit 0, 0.197 accuracy on
    # the test images the run had measured 0.678 on; another model.name read as "not this run's weights".
    # result.json (digest-checked) records both: a config that disagrees with it is named, key and values.
    import shutil

    import yaml

    from src.predict import main

    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    section, key, value = edit
    config[section][key] = value
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    image = next((Path(yaml_root(trained)) / "test" / "d0").glob("*.png"))
    line = _one_line_error(main, [str(copy), str(image)], capsys)
    assert line.startswith(f"error: {copy / 'config.yaml'}: {says} (its result.json)"), line


def test_an_out_that_is_a_run_file_or_an_image_is_refused_and_left_as_it_was(trained, tmp_path, capsys, monkeypatch):
    # `--out` took any writable path: `--out RUN/result.json` replaced the run's record with the CSV, and
    # `src.predict RUN --out a.jpg b.png` (the name forgotten after --out) replaced the photo a.jpg, exit 0
    # both. The CSV never goes over a file the command reads or a file of the run, nor into an image's name.
    import shutil

    import src.predict as predict

    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    image = tmp_path / "a.png"
    shutil.copy(next((Path(yaml_root(trained)) / "test" / "d0").glob("*.png")), image)
    before = {p: p.read_bytes() for p in [*copy.rglob("*"), image] if p.is_file()}
    monkeypatch.setattr(predict, "load_model", lambda *a: pytest.fail("--out is checked first"))
    cases = [(copy / "result.json", "is a file of the run"), (copy / "model_best.pt", "is a file of the run"),
             (copy / "config.yaml", "is a file of the run"), (image, "is an image's name, not a CSV's"),
             (tmp_path / "new.jpg", "is an image's name, not a CSV's")]
    for out, says in cases:
        line = _one_line_error(predict.main, [str(copy), str(image), "--out", str(out)], capsys)
        assert line.startswith(f"error: --out {out} {says}"), line
    assert {p: p.read_bytes() for p in [*copy.rglob("*"), image] if p.is_file()} == before
    assert not (tmp_path / "new.jpg").exists()


def test_predict_files_given_one_path_predicts_that_image_not_its_characters(trained):
    # predict_files("a.png") iterated the string: "/: not a readable image (IsADirectoryError)", a message
    # about the root folder for a call about one photo. One path (str or Path) is that image.
    from src.predict import load_model

    image = next((Path(yaml_root(trained)) / "test" / "d0").glob("*.png"))
    loaded = load_model(trained)
    expected = loaded.predict_files([image])
    assert loaded.predict_files(str(image)) == [(Path(image), *expected[0][1:])]
    assert loaded.predict_files(image) == expected


def test_a_folder_with_runs_deeper_down_is_one_line_naming_them(trained, tmp_path, capsys):
    # A sweep's rerun/ (trial_0000/seed_1, ...) or a day's multirun/DATE (HH-MM-SS/0_full, ...), the folder
    # above the one that holds runs: "rerun/config.yaml: not found (is it a finished run's folder?)", as for
    # a damaged run. The runs below are named as one level down is, by their path from the folder.
    import shutil

    from src.predict import main

    for name in ("trial_0000/seed_1", "trial_0000/seed_2", "trial_0001/seed_1"):
        shutil.copytree(trained, tmp_path / "rerun" / name)
    assert main([str(tmp_path / "rerun"), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {tmp_path / 'rerun'}: a folder of runs, not one run (trial_0000/seed_1, trial_0000/seed_2, "
                   "trial_0001/seed_1): give the one whose model to use (pareto.json's run_dir, the report's run column)\n")
