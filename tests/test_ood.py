"""Out-of-distribution test sets (dataset.ood): loaded by class name, refused on a mismatch before any
training, evaluated once on the selected model, recorded, and reported with effective robustness."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from src.config import ConfigError, DataConfig, RunConfig
from src.data.batches import Batches
from src.data.ood import check_ood, load_ood
from src.measurement.feature_cache import PreLogits
from src.models import build_model, normalization
from src.record.io import write_json
from src.record.schema import RunRecord
from src.reporting.comparisons import paired_rows
from src.reporting.configs import group_configs, ood_metrics
from src.reporting.ood_section import ood_markdown, ood_section, ood_win_map
from src.reporting.page import write_report
from src.reporting.runs import load_runs
from src.reporting.tracking import run_summary
from src.reporting.stats import holm
from src.training import engine
from src.training import run as run_module
from tests.cli import TINY_OVERRIDES, env
from tests.conftest import TINY, merge

DIGITS = [str(c) for c in range(10)]


def _folder(root: Path, classes, per_class: int = 4) -> Path:
    """An image folder root/<class>/*.png of real digits (the last images of each digit; a class that
    is not a digit gets 0s)."""
    digits = load_digits()
    for c in classes:
        (root / str(c)).mkdir(parents=True, exist_ok=True)
        idx = np.flatnonzero(digits.target == (int(c) if c.isdigit() else 0))[-per_class:]
        for k, i in enumerate(idx):
            Image.fromarray((digits.images[i] * 15).astype(np.uint8)).resize((16, 16)).save(root / str(c) / f"{k}.png")
    return root


def _tiny(tmp_path: Path, ood: list[str], **sections) -> RunConfig:
    return RunConfig.from_dict(merge(TINY, {"dataset": {"ood": ood}} | sections))


def test_each_set_is_evaluated_once_on_the_selected_weights(tmp_path, monkeypatch):
    """Validation picks epoch 0 of 2 (forced, so that the selected weights are not the last): each OOD
    set is evaluated exactly once, after test, on epoch 0's head; the recorded accuracy equals the
    selected weights' through the whole model and through the feature cache's head path."""
    full, subset = _folder(tmp_path / "full_set", DIGITS, 3), _folder(tmp_path / "some", ["7", "3"], 5)
    (subset / "7" / "broken.png").write_bytes(b"not a png")  # skipped (dataset.bad_images=skip) and counted
    calls = []

    def spy(model, batches, device, amp_dtype=None):
        calls.append((len(batches.labels), model.state_dict()["classifier.weight"].clone()))
        return real(model, batches, device, amp_dtype)

    real = engine.evaluate
    monkeypatch.setattr(engine, "evaluate", spy)
    update = run_module.BestModel.update
    monkeypatch.setattr(run_module.BestModel, "update", lambda self, epoch, val_acc, model:
                        update(self, epoch, val_acc, model) if epoch == 0 else None)
    cfg = _tiny(tmp_path, [str(full), str(subset)], strategy={"name": "frozen"},
                trainer={"epochs": 2, "drift_probe": 0, "save_model": True, "feature_cache": "on"})
    result = run_module.run(cfg, tmp_path / "run")

    on_disk = json.loads((tmp_path / "run" / "result.json").read_text())
    assert on_disk["ood"] == result["ood"] and set(result["ood"]) == {"full_set", "some"}
    assert result["ood"]["full_set"]["n"] == 30 and result["ood"]["some"]["n"] == 10
    assert result["ood"]["full_set"]["skipped_files"] == 0 and result["ood"]["some"]["skipped_files"] == 1
    assert result["best_epoch"] == 0 and result["feature_cache"] is True
    # val, val (epochs 0, 1), then _final: val, test, and each OOD set once
    assert [n for n, _ in calls][-2:] == [30, 10] and len(calls) == 6
    epoch0, epoch1, ood_weights = calls[0][1], calls[1][1], calls[-1][1]
    assert torch.equal(ood_weights, epoch0) and not torch.equal(epoch0, epoch1)

    model = build_model(cfg.model, 10)
    model.load_state_dict(torch.load(tmp_path / "run" / "model.pt"))
    sets = load_ood(cfg.dataset, DIGITS)
    for entry in sets:
        batches = Batches(entry.split, 64, normalization(model), torch.device("cpu"))
        assert real(model, batches, torch.device("cpu")).acc == result["ood"][entry.name]["acc"]
        logits, labels = engine.predict(torch.nn.Sequential(PreLogits(model), model.get_classifier()), batches,
                                        torch.device("cpu"))
        assert int((logits.argmax(1) == labels).sum()) / len(labels) == result["ood"][entry.name]["acc"]


def _npz(path: Path, images: np.ndarray, labels, classes=None) -> Path:
    arrays = {"images": images, "labels": np.asarray(labels)}
    if classes is not None:
        arrays["classes"] = np.asarray(classes)
    np.savez(path, **arrays)
    return path


def test_classes_are_matched_by_name_in_folders_and_npz(tmp_path):
    """A set with training's classes in another order and a subset of them gets training's labels."""
    cfg = DataConfig(image_size=16, ood=(str(_folder(tmp_path / "f", ["7", "3"], 2)),))
    [folder] = load_ood(cfg, DIGITS)
    assert folder.split.labels.tolist() == [3, 3, 7, 7]  # not 0, 0, 1, 1 (its own sorted order)
    images = folder.split.images[:].permute(0, 2, 3, 1).numpy()
    # The same images in a .npz whose own class list is ["7", "3"]: label 0 means "7".
    npz = _npz(tmp_path / "n.npz", images, [1, 1, 0, 0], ["7", "3"])
    [named] = load_ood(DataConfig(image_size=16, ood=(str(npz),)), DIGITS)
    assert named.split.labels.tolist() == [3, 3, 7, 7] and torch.equal(named.split.images, folder.split.images[:])
    plain = _npz(tmp_path / "p.npz", images, [3, 3, 7, 7])
    assert load_ood(DataConfig(image_size=16, ood=(str(plain),)), DIGITS)[0].split.labels.tolist() == [3, 3, 7, 7]
    [capped] = load_ood(DataConfig(image_size=16, ood=(str(plain),), ood_per_class=1), DIGITS)
    assert sorted(capped.split.labels.tolist()) == [3, 7]  # dataset.ood_per_class: at most 1 per class


def test_mismatches_and_duplicate_names_are_one_line_errors(tmp_path):
    folder = _folder(tmp_path / "a" / "shift", ["1", "cat"], 1)
    with pytest.raises(ConfigError, match=r"^dataset.ood\[0\]=.*classes \['cat'\] are not training classes") as err:
        check_ood(DataConfig(ood=(str(folder),)))
    assert "\n" not in str(err.value)
    twin = _folder(tmp_path / "b" / "shift", ["1"], 1)
    with pytest.raises(ConfigError, match=r"^dataset.ood\[1\]=.*its name 'shift' is already that of dataset.ood\[0\]"):
        check_ood(DataConfig(ood=(str(twin), str(twin))))
    bad = _npz(tmp_path / "bad.npz", np.zeros((2, 8, 8), np.uint8), [0, 10])
    with pytest.raises(ConfigError, match=r"labels 0..10 are outside the 10 training classes"):
        load_ood(DataConfig(image_size=16, ood=(str(bad),)), DIGITS)
    with pytest.raises(ConfigError, match=r"^dataset.ood\[1\]='.*nope': no such folder or .npz file$"):
        RunConfig.from_dict({"dataset": {"ood": [str(twin), str(tmp_path / "nope")]}})


def test_two_names_for_one_class_are_refused_not_pooled(tmp_path):
    """A .npz class list that repeats a name, a folder set with one class in two Unicode spellings,
    a training class list that repeats a name the set uses: each would put two labels' images under
    one. One line naming the set and the names."""
    images = np.zeros((3, 8, 8), np.uint8)
    twice = _npz(tmp_path / "twice.npz", images, [0, 1, 2], ["3", "7", "3"])
    with pytest.raises(ConfigError, match=r"^dataset.ood\[0\]=.*twice.npz.*'3' and '3' name one training class") as err:
        load_ood(DataConfig(image_size=16, ood=(str(twice),)), DIGITS)
    assert "\n" not in str(err.value)
    cafe = ["caf\u00e9", "the"]
    spelled = _folder(tmp_path / "spelled", ["the"], 1)
    for spelling in ("caf\u00e9", "cafe\u0301"):  # NFC and NFD (as macOS writes it)
        _folder(tmp_path / "x", ["0"], 1)
        (tmp_path / "x" / "0").rename(spelled / spelling)
    with pytest.raises(ConfigError, match=r"'caf.*' and 'caf.*' name one training class \('café'\)"):
        check_ood(DataConfig(ood=(str(spelled),)), cafe)
    (spelled / "caf\u00e9").rename(tmp_path / "gone")  # one spelling left: the NFD folder is café
    [matched] = load_ood(DataConfig(image_size=16, ood=(str(spelled),)), cafe)
    assert sorted(set(matched.split.labels.tolist())) == [0, 1]
    plain = _npz(tmp_path / "plain.npz", images, [0, 1, 0], ["a", "b"])
    with pytest.raises(ConfigError, match=r"class 'a' is training's labels \[0, 2\]"):
        load_ood(DataConfig(image_size=16, ood=(str(plain),)), ["a", "b", "a"])


def test_class_names_match_case_included_and_a_near_miss_says_so(tmp_path):
    folder = _folder(tmp_path / "shift", ["1"], 1)
    (folder / "1").rename(folder / "Dog")
    with pytest.raises(ConfigError, match=r"classes \['Dog'\] are not training classes .*case included: 'Dog' ~ 'dog'"):
        check_ood(DataConfig(ood=(str(folder),)), ["cat", "dog"])


@pytest.mark.parametrize("classes, words", [
    (np.array("37"), "class names of shape ()"),  # read one character per class before
    (np.array([["3"], ["7"]]), "class names of shape (2, 1)"),
    (np.array([3.0, 7.0]), "class names of type float64"),
])
def test_a_class_list_that_is_not_a_list_of_names_is_one_line(tmp_path, classes, words):
    bad = _npz(tmp_path / "bad.npz", np.zeros((2, 8, 8), np.uint8), [0, 1], classes)
    with pytest.raises(ConfigError) as err:
        load_ood(DataConfig(image_size=16, ood=(str(bad),)), DIGITS)
    assert "bad.npz" in str(err.value) and "'classes'" in str(err.value) and words in str(err.value)


def test_bytes_class_names_and_0d_or_overflowing_arrays(tmp_path):
    images = np.zeros((2, 8, 8), np.uint8)
    named = _npz(tmp_path / "bytes.npz", images, [0, 1], np.array([b"7", b"3"]))
    assert load_ood(DataConfig(image_size=16, ood=(str(named),)), DIGITS)[0].split.labels.tolist() == [7, 3]
    for name, arrays, words in [
        ("scalar_images", {"images": np.array(5), "labels": np.array([0])}, "'images'"),
        ("scalar_labels", {"images": images, "labels": np.array(3)}, "'labels': a single value"),
        ("huge_labels", {"images": images, "labels": np.array([0, 2**64 - 1], np.uint64)}, "does not fit"),
    ]:
        np.savez(tmp_path / f"{name}.npz", **arrays)
        with pytest.raises(ConfigError) as err:
            load_ood(DataConfig(image_size=16, ood=(str(tmp_path / f"{name}.npz"),)), DIGITS)
        assert f"{name}.npz" in str(err.value) and words in str(err.value) and "\n" not in str(err.value)


def test_hidden_folders_in_an_ood_set_are_not_classes(tmp_path):
    folder = _folder(tmp_path / "shift", ["1", "2"], 2)
    (folder / ".ipynb_checkpoints").mkdir()
    (folder / ".git").mkdir()
    check_ood(DataConfig(ood=(str(folder),)), DIGITS)  # not refused as classes training lacks
    [entry] = load_ood(DataConfig(image_size=16, ood=(str(folder),)), DIGITS)
    assert sorted(entry.split.labels.tolist()) == [1, 1, 2, 2]


def test_a_class_mismatch_is_refused_before_the_run_folder_is_made(tmp_path):
    cfg = _tiny(tmp_path, [str(_folder(tmp_path / "shift", ["1", "cat"], 1))])
    with pytest.raises(ConfigError, match=r"dataset.ood\[0\]=.*\['cat'\]"):
        run_module.run(cfg, tmp_path / "r")
    assert not (tmp_path / "r").exists()


@pytest.mark.slow  # a Python start with Hydra and timm: 10-30 s
def test_a_class_mismatch_stops_the_cli_before_the_run_folder(tmp_path):
    folder = _folder(tmp_path / "shift", ["1", "cat"], 1)
    args = [sys.executable, "-m", "src.train", *TINY_OVERRIDES, f"dataset.ood=[{folder}]", f"hydra.run.dir={tmp_path / 'r'}"]
    proc = subprocess.run(args, check=False, cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1 and "dataset.ood[0]=" in proc.stderr and "'cat'" in proc.stderr
    assert not (tmp_path / "r").exists()


# (strategy, seed) -> (in-distribution test accuracy, OOD accuracy): three configurations, two seeds
RECORDS = {("frozen", 0): (0.60, 0.40), ("frozen", 1): (0.62, 0.38), ("full", 0): (0.80, 0.45),
           ("full", 1): (0.84, 0.47), ("lpft", 0): (0.78, 0.55), ("lpft", 1): (0.76, 0.53)}


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_report_fits_the_line_and_gives_each_configuration_its_effective_robustness(tmp_path):
    for (strategy, seed), (acc, ood) in RECORDS.items():
        record = RunRecord(strategy=strategy, seed=seed, dataset="photo", model="m", epochs=1, status="completed",
                           test_acc=acc, val_acc=acc, train_flops=1e9, ood={"art": {"acc": ood, "balanced_acc": ood, "n": 9}})
        write_json(tmp_path / "runs" / f"{strategy}_{seed}" / "result.json", record.to_json())
    configs = group_configs(load_runs([tmp_path / "runs"]))
    # by hand: least squares of logit(mean OOD) on logit(mean ID) over the three configurations
    means = {s: [np.mean([v[i] for (t, _), v in RECORDS.items() if t == s]) for i in (0, 1)] for s in ("frozen", "full", "lpft")}
    slope, intercept = np.polyfit([_logit(m[0]) for m in means.values()], [_logit(m[1]) for m in means.values()], 1)
    for c in configs:
        per_seed = [RECORDS[(c.strategy, s)] for s in (0, 1)]
        expected = np.mean([o - 1 / (1 + math.exp(-(intercept + slope * _logit(a)))) for a, o in per_seed])
        assert c.stats["eff_rob/art"][0] == pytest.approx(expected, abs=1e-12)
        assert c.stats["ood_acc/art"][0] == pytest.approx(means[c.strategy][1])
    eff = {c.strategy: c.stats["eff_rob/art"][0] for c in configs}
    assert eff["lpft"] > 0 > eff["full"]  # LP-FT above the line, full fine-tuning below it
    assert ood_metrics(configs) == ["ood_acc/art", "eff_rob/art"]
    pairs = paired_rows(configs, "eff_rob/art")
    assert len(pairs) == 3 and {p["metric"] for p in pairs} == {"eff_rob/art"}
    assert [c["dataset"] for c in ood_win_map(configs)] == ["photo → art"]
    table = ood_markdown(ood_section(configs))  # python -m src.report --markdown
    assert "| art accuracy | art effective robustness |" in table and f"{slope:.3f} · logit(ID)" in table

    page = write_report([tmp_path / "runs"], tmp_path / "report")
    html = page.read_text()
    assert 'id="fig-ood"' in html and 'id="ood"' in html and 'id="paired-ood"' in html
    assert "art effective robustness" in html and f"{eff['lpft']:+.4f}"[1:] in html
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert {"ood_acc/art", "eff_rob/art", "eff_rob/art_ci95"} <= set(summary[0])
    ood = json.loads((tmp_path / "report" / "ood.json").read_text())
    assert ood["fits"][0]["slope"] == pytest.approx(slope) and ood["fits"][0]["points"] == 3


def _ranks(values) -> np.ndarray:
    return np.argsort(np.argsort(values)).astype(float)  # no ties in the data below


def _drift_runs(root: Path) -> dict:
    """Runs at 10 and all images per class, 3 strategies x 3 seeds, with drift measures and OOD
    accuracy written under root; returns (train_per_class, strategy, seed) -> (cka, agreement, test, ood)."""
    rng = np.random.default_rng(0)
    runs = {}
    for n in (10, None):
        for strategy in ("frozen", "full", "lpft"):
            for seed in (0, 1, 2):
                cka = float(rng.uniform(0.3, 0.99))
                # OOD accuracy rises with CKA at 10 per class and falls with it at all images: the pooled
                # ρ must not be a per-size one, and each size's must be its own
                ood = 0.2 + (0.3 * cka if n == 10 else 0.3 * (1 - cka)) + float(rng.normal(0, 0.005))
                runs[(n, strategy, seed)] = (cka, float(rng.uniform(0.1, 0.9)), float(rng.uniform(0.5, 0.9)), ood)
                record = RunRecord(strategy=strategy, seed=seed, dataset="photo", model="m", epochs=1, status="completed",
                                   train_per_class=n, train_samples=70 if n else 700, test_acc=runs[(n, strategy, seed)][2],
                                   val_acc=0.5, train_flops=1e9, cka_features=cka, imagenet_agreement=runs[(n, strategy, seed)][1],
                                   ood={"art": {"acc": ood, "balanced_acc": ood, "n": 9}})
                write_json(root / f"{n}_{strategy}_{seed}" / "result.json", record.to_json())
    return runs


def test_report_correlates_the_drift_measures_with_ood_accuracy_across_runs(tmp_path):
    runs = _drift_runs(tmp_path / "runs")
    section = ood_section(group_configs(load_runs([tmp_path / "runs"])))
    got = {(d["per_class"], d["drift"], d["measure"]): d for d in section["drift"]}
    assert {k[0] for k in got} == {"pooled", "10", "all"}
    assert {k[1] for k in got} == {"cka_features", "imagenet_agreement"} and {k[2] for k in got} == {"ood_acc/art", "eff_rob/art"}

    def by_hand(select, column):
        xs = [v[column] for k, v in runs.items() if select(k)]
        ys = [v[3] for k, v in runs.items() if select(k)]
        return float(np.corrcoef(_ranks(xs), _ranks(ys))[0, 1]), len(xs)

    for per_class, select in (("pooled", lambda k: True), ("10", lambda k: k[0] == 10), ("all", lambda k: k[0] is None)):
        for drift, column in (("cka_features", 0), ("imagenet_agreement", 1)):
            rho, n = by_hand(select, column)
            row = got[(per_class, drift, "ood_acc/art")]
            assert row["rho"] == pytest.approx(rho, abs=1e-12) and row["runs"] == n
            assert 0 <= row["p"] <= 1
    assert got[("10", "cka_features", "ood_acc/art")]["rho"] > 0.8 > -0.8 > got[("all", "cka_features", "ood_acc/art")]["rho"]
    assert got[("10", "cka_features", "ood_acc/art")]["p"] < 0.01
    # the runs are seeds of few configurations (3 strategies, at 10 per class and at all: 6 pooled), and a
    # dataset's rows are many tests at once: Holm over all of them, never below the row's own p
    assert {k[0]: d["configs"] for k, d in got.items()} == {"pooled": 6, "10": 3, "all": 3}
    rows = section["drift"]
    assert [d["p_holm"] for d in rows] == pytest.approx(holm([d["p"] for d in rows]))
    assert all(d["p"] <= d["p_holm"] <= 1 for d in rows) and len(rows) == 12

    table = ood_markdown(section)
    assert "| dataset | per class | drift | measure | ρ | p | p (Holm) | runs (configurations) |" in table
    assert "| 18 (6) |" in table
    assert f"| photo | 10 | cka_features | art accuracy | {got[('10', 'cka_features', 'ood_acc/art')]['rho']:+.2f} |" in table
    write_report([tmp_path / "runs"], tmp_path / "report")
    html = (tmp_path / "report" / "index.html").read_text()
    assert 'id="drift-ood"' in html
    saved = json.loads((tmp_path / "report" / "ood.json").read_text())["drift"]
    assert len(saved) == len(section["drift"]) and saved[0]["rho"] == pytest.approx(section["drift"][0]["rho"])


def test_the_notebook_shows_the_ood_measures_and_the_drift_correlations(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    repo = Path(__file__).resolve().parents[1]
    _drift_runs(tmp_path / "runs")
    rho = next(d["rho"] for d in ood_section(group_configs(load_runs([tmp_path / "runs"])))["drift"]
               if (d["per_class"], d["drift"], d["measure"]) == ("10", "cka_features", "ood_acc/art"))
    nb = nbformat.read(repo / "notebooks" / "analysis.ipynb", as_version=4)
    monkeypatch.setenv("RESULTS_DIRS", str(tmp_path / "runs"))
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(repo)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "art effective robustness" in text
    assert f"10 per class: cka_features vs art accuracy: rho {rho:+.2f}" in text


def test_drift_correlations_leave_out_runs_without_a_value_and_constant_measures(tmp_path):
    for seed in range(6):
        record = RunRecord(strategy="full", seed=seed, dataset="photo", model="m", epochs=1, status="completed",
                           test_acc=0.5 + seed / 100, val_acc=0.5, train_flops=1e9,
                           cka_features=None if seed == 0 else 0.5 + seed / 10,
                           imagenet_agreement=1.0,  # the same in every run: nothing to rank
                           ood={"art": {"acc": 0.3 - seed / 100, "balanced_acc": 0.3, "n": 9}})
        write_json(tmp_path / "runs" / f"full_{seed}" / "result.json", record.to_json())
    section = ood_section(group_configs(load_runs([tmp_path / "runs"])))
    # one configuration: no line, so no effective robustness; CKA over the 5 runs that have it, ρ = −1
    assert [(d["per_class"], d["drift"], d["measure"], d["runs"]) for d in section["drift"]] == [
        ("all", "cka_features", "ood_acc/art", 5)]
    assert section["drift"][0]["rho"] == pytest.approx(-1.0)


def test_wandb_summary_and_runs_table_carry_the_ood_measures(tmp_path):
    """A run's W&B summary (read back from the offline run file) has each set's accuracy as a flat
    metric; the study summary's runs table has OOD accuracy and effective robustness columns, and its
    drift_ood table the rank correlations."""
    pytest.importorskip("wandb")
    from src.config import LoggerConfig
    from src.reporting.publish import log_summary
    from src.reporting.tracking import make_tracker
    from tests import wandb_files

    for (strategy, seed), (acc, ood) in RECORDS.items():
        record = RunRecord(strategy=strategy, seed=seed, dataset="photo", status="completed", test_acc=acc,
                           cka_features=1 - ood,  # falls as OOD accuracy rises: ρ = −1 in the drift table
                           ood={"art": {"acc": ood, "balanced_acc": ood, "n": 9}})
        write_json(tmp_path / "runs" / f"{strategy}_{seed}" / "result.json", record.to_json())
    runs = load_runs([tmp_path / "runs"])
    tracker = make_tracker(LoggerConfig(kind="wandb", mode="offline", project="test"), tmp_path / "w", "s", {}, "summary")
    tracker.summary(run_summary(runs[0].result.to_json()))
    log_summary(tracker, runs, group_configs(runs), "test_acc", tmp_path / "w", [])
    tracker.finish()
    [path] = (tmp_path / "w").glob("wandb/offline-run-*/run-*.wandb")
    summary = wandb_files.summary(wandb_files.closed(path))
    assert summary["ood_acc/art"] == runs[0].result.ood["art"]["acc"] and summary["ood_n/art"] == 9
    rows = wandb_files.table(tmp_path / "w", "runs")
    assert {"ood_acc/art", "eff_rob/art"} <= set(rows[0]) and all(r["eff_rob/art"] is not None for r in rows)
    drift = {(r["drift"], r["measure"]): r for r in wandb_files.table(tmp_path / "w", "drift_ood")}
    assert drift[("cka_features", "ood_acc/art")]["rho"] == pytest.approx(-1.0) and drift[("cka_features", "ood_acc/art")]["runs"] == 6


def test_domain_shift_preset_takes_the_folders_as_settings(tmp_path, monkeypatch):
    """No path of its own: the training folder is dataset.root, the OOD domains come from $PACS_DIR,
    and the sweep is the 6 x 2 x 3 x 3 grid the docs describe."""
    from omegaconf import OmegaConf

    from src.gate import compose_train, to_run_config

    for domain in ("art_painting", "cartoon"):
        (tmp_path / domain).mkdir()
    monkeypatch.setenv("PACS_DIR", str(tmp_path))
    overrides = ["experiment=domain_shift"]
    run_cfg = to_run_config(compose_train(overrides))
    assert run_cfg.dataset.kind == "imagefolder" and run_cfg.dataset.root == f"{tmp_path}/photo"
    assert run_cfg.dataset.ood == (f"{tmp_path}/art_painting", f"{tmp_path}/cartoon")
    assert to_run_config(compose_train([*overrides, f"dataset.root={tmp_path}"])).dataset.root == str(tmp_path)
    params = OmegaConf.to_container(compose_train(overrides, return_hydra_config=True).hydra.sweeper.params)
    assert [len(str(v).split(",")) for v in params.values()] == [3, 6, 2, 3]
    monkeypatch.delenv("PACS_DIR")
    with pytest.raises(ConfigError, match="PACS_DIR"):  # the data's folder is the user's to give
        to_run_config(compose_train(overrides))


def test_a_set_given_as_dot_or_dotdot_is_named_by_its_folder(tmp_path, monkeypatch):
    # `dataset.ood=[.]` keyed the set '' in result.json's `ood` (and `[..]` as '..'): a nameless
    # column in the report. The name is the folder's own, the path made absolute without following links.
    from src.data.ood import ood_names

    (tmp_path / "art" / "sub").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "art")
    assert ood_names(DataConfig(ood=(".",))) == ["art"]
    assert ood_names(DataConfig(ood=("sub/..",))) == ["art"]
    monkeypatch.chdir(tmp_path / "art" / "sub")
    assert ood_names(DataConfig(ood=("..",))) == ["art"]
