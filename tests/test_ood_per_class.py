"""Each OOD set's per-class results in result.json (`ood.<set>.per_class`), as val's and test's: a
shift that costs one class most (PACS photo -> art: person 6 of 100 right, dog 44) is not visible in one
accuracy, and before this a run recorded nothing per class out of distribution."""

from __future__ import annotations

import json

import torch

from src.data.batches import Batches
from src.data.ood import load_ood
from src.models import build_model, normalization
from src.training import engine
from src.training import run as run_module
from tests.test_ood import DIGITS, _folder, _tiny


def test_each_ood_set_records_its_confusion_and_per_class_recall(tmp_path):
    art = _folder(tmp_path / "art", DIGITS[:6], 3)
    cfg = _tiny(tmp_path, [str(art)], strategy={"name": "frozen"},
                trainer={"epochs": 1, "drift_probe": 0, "save_model": True})
    run_module.run(cfg, tmp_path / "run")
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    entry = result["ood"]["art"]
    assert result["per_class"]["classes"] == DIGITS
    # by hand: the kept model's predictions on the set, counted per (true, predicted) class
    model = build_model(cfg.model, 10)
    model.load_state_dict(torch.load(tmp_path / "run" / "model.pt"))
    [ood] = load_ood(cfg.dataset, DIGITS)
    logits, labels = engine.predict(model, Batches(ood.split, 64, normalization(model), torch.device("cpu")),
                                    torch.device("cpu"))
    counts = [[0] * 10 for _ in range(10)]
    for t, p in zip(labels.tolist(), logits.argmax(1).tolist()):
        counts[t][p] += 1
    per_class = entry["per_class"]
    assert per_class["confusion"] == counts and per_class["support"] == [3] * 6 + [0] * 4
    assert per_class["recall"][:6] == [counts[c][c] / 3 for c in range(6)] and per_class["recall"][6:] == [None] * 4
    assert sum(counts[c][c] for c in range(10)) / 18 == entry["acc"]
