"""Per-class results: the confusion matrix and per-class recall of the selected model on val and test in
result.json, the report page and W&B; the training passes' accuracy per epoch beside validation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from src.record.io import read_jsonl

V1_RUN = Path(__file__).parent / "fixtures" / "v1_layerwise"


def test_confusion_matrix_and_what_it_gives_per_class():
    from src.training.engine import confusion_matrix
    from src.training.record import split_per_class

    labels, preds = torch.tensor([0, 0, 0, 1, 1, 2]), torch.tensor([0, 1, 1, 1, 1, 1])
    matrix = confusion_matrix(labels, preds, 4)  # class 3: neither present nor predicted
    assert matrix == [[1, 2, 0, 0], [0, 2, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    out = split_per_class(matrix)
    assert out["support"] == [3, 2, 1, 0]
    assert out["recall"] == [pytest.approx(1 / 3), 1.0, 0.0, None]
    assert out["precision"] == [1.0, pytest.approx(2 / 5), None, None]


def test_a_run_records_per_class_results_train_accuracy_and_logs_confusion_charts(tiny_config, tmp_path, monkeypatch):
    from tests import wandb_files

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    from src.training.run import run

    result = run(tiny_config(strategy={"name": "full"}, logger={"kind": "wandb", "mode": "offline"}), tmp_path)
    on_disk = json.loads((tmp_path / "result.json").read_text())
    block = on_disk["per_class"]
    assert block["classes"] == [str(d) for d in range(10)]
    for split in ("val", "test"):
        matrix = block[split]["confusion"]
        assert len(matrix) == 10 and all(len(row) == 10 for row in matrix)
        assert sum(map(sum, matrix)) == on_disk[f"{split}_samples"]
        # the matrix is the recorded accuracy's own counts, exactly
        assert sum(matrix[i][i] for i in range(10)) / on_disk[f"{split}_samples"] == on_disk[f"{split}_acc"]
        assert block[split]["support"] == [sum(row) for row in matrix]
        assert block[split]["recall"] == [row[i] / sum(row) for i, row in enumerate(matrix)]
    balanced = sum(block["test"]["recall"]) / 10
    assert balanced == pytest.approx(on_disk["test_balanced_acc"])
    # train accuracy per epoch, from the training passes: a count of the images they saw
    metrics = read_jsonl(tmp_path / "metrics.jsonl")
    seen = on_disk["train_samples"] * on_disk["passes_per_epoch"]  # 40 images in batches of 16: none left out
    assert [m["epoch"] for m in metrics] == [0, 1]
    for m in metrics:
        assert 0 <= m["train_acc"] <= 1 and m["train_acc"] * seen == pytest.approx(round(m["train_acc"] * seen))
    # W&B: a confusion-matrix chart per split, its table the same counts; per-class recall in the summary
    [file] = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    wandb_files.closed(file)
    rows = wandb_files.table(tmp_path, "confusion_test_table")
    assert {(r["Actual"], r["Predicted"]): r["nPredictions"] for r in rows} == {
        (str(i), str(j)): n for i, row in enumerate(block["test"]["confusion"]) for j, n in enumerate(row)}
    assert wandb_files.table(tmp_path, "confusion_val_table")
    summary = wandb_files.summary(file)
    assert [summary[f"recall_test/{c}"] for c in block["classes"]] == pytest.approx(block["test"]["recall"])
    assert "per_class" not in summary
    assert result["per_class"] == block


def test_old_records_without_per_class_still_load_and_report(tmp_path):
    from src.record.io import write_json
    from src.record.schema import RunRecord
    from src.reporting.page import write_report

    shutil.copytree(V1_RUN, tmp_path / "runs" / "old")
    old = json.loads((V1_RUN / "result.json").read_text())
    assert "per_class" not in RunRecord.from_json(old).to_json()  # written back as it was
    classes = ["cat", "dog", "fox"]
    matrix = [[8, 2, 0], [1, 9, 0], [0, 5, 5]]
    new = tmp_path / "runs" / "new"
    shutil.copytree(V1_RUN, new)
    rec = RunRecord.from_json(old).replace(
        seed=1, strategy="full", strategy_params={},
        per_class={"classes": classes, "val": {"confusion": matrix}, "test": {"confusion": matrix}})
    write_json(new / "result.json", rec.to_json())
    page = write_report([tmp_path / "runs"], tmp_path / "report")
    html = page.read_text()
    assert 'id="fig-confusion"' in html and (tmp_path / "report" / "confusion.png").is_file()
    section = json.loads((tmp_path / "report" / "per_class.json").read_text())
    [entry] = section["entries"]  # the old run has no per-class block: only the new one is shown
    assert entry["config"] == "full" and entry["recall"] == [0.8, 0.9, 0.5]
    assert [(p["true"], p["predicted"], p["count"]) for p in entry["pairs"]] == [
        ("fox", "dog", 5), ("cat", "dog", 2), ("dog", "cat", 1)]
    assert "fox → dog" in html and "50.0%" in html
    # without any per-class block the section and its files are gone
    shutil.rmtree(new)
    write_report([tmp_path / "runs"], tmp_path / "report")
    assert not (tmp_path / "report" / "confusion.png").exists() and not (tmp_path / "report" / "per_class.json").exists()
    assert 'id="confused"' not in (tmp_path / "report" / "index.html").read_text()


def test_the_curves_show_training_accuracy_beside_validation(tmp_path):
    import matplotlib.pyplot as plt

    from src.record.io import append_jsonl, read_jsonl
    from src.reporting import plots
    from src.reporting.configs import group_configs
    from src.reporting.runs import load_runs

    run = tmp_path / "runs" / "a"
    shutil.copytree(V1_RUN, run)
    lines = read_jsonl(run / "metrics.jsonl")
    (run / "metrics.jsonl").unlink()
    for line in lines:
        append_jsonl(run / "metrics.jsonl", line | {"train_acc": min(1.0, line["val_acc"] + 0.05)})
    fig = plots.curves(group_configs(load_runs([tmp_path / "runs"])))
    val_ax, train_ax = fig.axes
    assert list(train_ax.get_lines()[0].get_ydata()) == pytest.approx([min(1.0, x["val_acc"] + 0.05) for x in lines])
    assert list(val_ax.get_lines()[0].get_ydata()) == pytest.approx([x["val_acc"] for x in lines])
    plt.close(fig)
    # runs written before train_acc existed: validation alone
    shutil.rmtree(run)
    shutil.copytree(V1_RUN, run)
    fig = plots.curves(group_configs(load_runs([tmp_path / "runs"])))
    assert len(fig.axes) == 1
    plt.close(fig)
