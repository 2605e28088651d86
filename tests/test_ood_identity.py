"""An OOD set is its images, not its folder's name: runs record which images (`ood.<set>.id`), and the
report never averages, pairs or fits accuracies measured on other images under one name (another
`ood_per_class` draw, another folder called `art_painting`)."""

from __future__ import annotations

import json

import pytest

from src.config import DataConfig
from src.data.ood import load_ood
from src.record.io import write_json
from src.record.schema import RunRecord
from src.reporting.comparisons import paired_rows
from src.reporting.configs import group_configs, ood_metrics
from src.reporting.ood_section import ood_section
from src.reporting.page import write_report
from src.reporting.runs import load_runs
from src.training import run as run_module
from tests.test_ood import DIGITS, _folder, _tiny


def test_each_set_records_which_images_it_is(tmp_path):
    """The same folder and draw: one id; another draw (ood_per_class) or another folder of the same
    name: another id; and a run writes it into result.json."""
    art, other = _folder(tmp_path / "a" / "art", DIGITS, 3), _folder(tmp_path / "b" / "art", DIGITS[:5], 3)

    def ident(path, per_class=None):
        [entry] = load_ood(DataConfig(image_size=16, ood=(str(path),), ood_per_class=per_class), DIGITS)
        return entry.identity

    assert ident(art) == ident(art) and len(ident(art)) == 16
    assert len({ident(art), ident(art, 2), ident(other)}) == 3
    cfg = _tiny(tmp_path, [str(art)], strategy={"name": "frozen"}, trainer={"epochs": 1, "drift_probe": 0})
    result = run_module.run(cfg, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "result.json").read_text())["ood"]["art"]["id"] == ident(art)


# (strategy, seed) -> (test acc, OOD acc, the OOD set's id): seed 1 was run on another draw of `art`
RECORDS = {("frozen", 0): (0.60, 0.40, "a" * 16), ("frozen", 1): (0.62, 0.90, "b" * 16),
           ("full", 0): (0.80, 0.45, "a" * 16), ("full", 1): (0.84, 0.95, "b" * 16),
           ("lpft", 0): (0.78, 0.55, "a" * 16), ("lpft", 1): (0.76, 0.99, "b" * 16)}


def _write(root, records) -> None:
    for (strategy, seed), (acc, ood, ident) in records.items():
        entry = {"acc": ood, "balanced_acc": ood, "n": 9} | ({"id": ident} if ident else {})
        record = RunRecord(strategy=strategy, seed=seed, dataset="photo", model="m", epochs=1, status="completed",
                           test_acc=acc, val_acc=acc, train_flops=1e9, ood={"art": entry})
        write_json(root / f"{strategy}_{seed}" / "result.json", record.to_json())


def test_the_report_keeps_sets_of_one_name_apart(tmp_path):
    """Before, both seeds' `art` accuracies were averaged (frozen 0.65 from 0.40 on one draw and 0.90
    on another), paired across strategies and fitted as one set. Now each is `art [id]`: no
    configuration has a mean of either (one seed of each), no pair mixes them, and the report says so
    in its names."""
    _write(tmp_path / "runs", RECORDS)
    configs = group_configs(load_runs([tmp_path / "runs"]))
    assert all("ood_acc/art" not in c.stats for c in configs)
    assert ood_metrics(configs) == []  # no configuration has every seed on one set: no mean to show
    for name in ("art [aaaaaa]", "art [bbbbbb]"):
        assert all(f"ood_acc/{name}" not in c.stats for c in configs)
        assert paired_rows(configs, f"ood_acc/{name}") == []
    assert ood_section(configs)["fits"] == []
    # the seed-0 runs alone are one set: measured, fitted and paired as before, under the plain name
    only = {k: v for k, v in RECORDS.items() if k[1] == 0}
    _write(tmp_path / "seed0", only)
    configs = group_configs(load_runs([tmp_path / "seed0"]))
    assert {c.strategy: c.stats["ood_acc/art"][0] for c in configs} == {"frozen": 0.40, "full": 0.45, "lpft": 0.55}
    assert ood_section(configs)["fits"][0]["points"] == 3


def test_one_seed_per_set_is_compared_set_by_set_and_old_records_join_a_lone_id(tmp_path):
    """Configurations of one seed on two draws: each draw is its own set (its own line, its own
    columns); a record without an id joins its name's one identity, as a dataset name does."""
    records = {("frozen", 0): (0.60, 0.40, "a" * 16), ("full", 0): (0.80, 0.45, "a" * 16),
               ("lpft", 0): (0.78, 0.55, "a" * 16), ("l2sp", 0): (0.70, 0.90, "b" * 16),
               ("surgical", 0): (0.72, 0.91, "b" * 16), ("layerwise", 0): (0.74, 0.93, "b" * 16)}
    _write(tmp_path / "runs", records)
    configs = group_configs(load_runs([tmp_path / "runs"]))
    assert ood_metrics(configs) == ["ood_acc/art [aaaaaa]", "eff_rob/art [aaaaaa]",
                                    "ood_acc/art [bbbbbb]", "eff_rob/art [bbbbbb]"]
    fits = {f["ood"]: f["points"] for f in ood_section(configs)["fits"]}
    assert fits == {"art [aaaaaa]": 3, "art [bbbbbb]": 3}
    by = {c.strategy: c for c in configs}
    assert by["l2sp"].stats["ood_acc/art [bbbbbb]"][0] == 0.90 and "ood_acc/art [aaaaaa]" not in by["l2sp"].stats
    page = write_report([tmp_path / "runs"], tmp_path / "report")
    assert "art [bbbbbb] accuracy" in page.read_text()

    _write(tmp_path / "old", {("frozen", 0): (0.60, 0.40, None), ("frozen", 1): (0.62, 0.42, "a" * 16)})
    [config] = group_configs(load_runs([tmp_path / "old"]))
    assert config.stats["ood_acc/art"][0] == pytest.approx(0.41)


def test_the_report_cli_says_which_set_it_kept_apart(tmp_path, capsys):
    """Left out of every table, the two `art`s would vanish without a word: one warning line names them."""
    from src.reporting.cli import main

    _write(tmp_path / "runs", RECORDS)
    assert main([str(tmp_path / "runs"), "--no-html"]) == 0
    err = capsys.readouterr().err
    assert "warning: OOD set 'art' is other images in some runs (art [aaaaaa], art [bbbbbb]" in err
