"""A completed run's curve or schedule file rotted into something that is not a file (a folder where
it was, a dangling or looping link) or emptied: the report still reports the run, and says which
file it could not use, instead of a page without that run's curve and not a word why."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from src.record.io import SkippedFile
from src.reporting.runs import load_runs

V1_RUN = Path(__file__).parent / "fixtures" / "v1_layerwise"  # a completed run's result, curve and schedule


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _loop(path: Path) -> None:
    path.unlink()
    path.symlink_to(path.name)


def _dangling(path: Path) -> None:
    path.unlink()
    path.symlink_to("gone.jsonl")


@pytest.mark.parametrize(("name", "damage", "says"), [
    ("metrics.jsonl", _empty, "empty file: no epochs"),
    ("metrics.jsonl", _folder, "a folder, not a file"),
    ("metrics.jsonl", _loop, "a link that leads to no file"),
    ("metrics.jsonl", _dangling, "a link that leads to no file"),
    ("param_groups.json", _folder, "a folder, not a file"),
    ("param_groups.json", _loop, "a link that leads to no file"),
])
def test_a_completed_run_s_file_that_is_no_longer_a_file_is_named(tmp_path, name, damage, says):
    run_dir = tmp_path / "study" / "0_layerwise"
    shutil.copytree(V1_RUN, run_dir)
    healthy: list[SkippedFile] = []
    assert len(load_runs([tmp_path / "study"], healthy)) == 1 and healthy == []
    damage(run_dir / name)
    skipped: list[SkippedFile] = []
    runs = load_runs([tmp_path / "study"], skipped)
    assert len(runs) == 1 and runs[0].result.completed  # the run itself is still reported
    assert [(s.path, says in s.reason) for s in skipped] == [(run_dir / name, True)], skipped
    assert os.path.lexists(run_dir / name)  # read only: the damaged entry is left as it was


GOOD_BLOCK = {"classes": ["cat", "dog"], "val": {"confusion": [[3, 1], [0, 4]]}, "test": {"confusion": [[3, 1], [0, 4]]}}


@pytest.mark.parametrize("block", [
    {"classes": ["cat", "dog"], "test": 5},                                   # a number where the split was
    {"classes": ["cat", "dog"], "test": {"confusion": [[1, "x"], [0, 4]]}},   # a cell that is not a count
    {"classes": ["cat", "dog"], "test": {"confusion": [[1, 2], [3]]}},        # a row cut short
    {"classes": ["cat", "dog"], "test": {"confusion": [[1, 2], [3, 4], [5, 6]]}},  # more rows than classes
    {"classes": "cat,dog", "test": {"confusion": [[1, 2], [3, 4]]}},         # the names not a list
])
def test_a_per_class_block_of_another_shape_is_left_out_not_a_traceback(tmp_path, block):
    from src.record.io import write_json
    from src.record.schema import RunRecord
    from src.reporting.configs import group_configs
    from src.reporting.per_class import per_class_section

    old = json.loads((V1_RUN / "result.json").read_text())
    for seed, per_class in ((0, GOOD_BLOCK), (1, block)):
        run_dir = tmp_path / "study" / f"{seed}_full"
        shutil.copytree(V1_RUN, run_dir)
        record = RunRecord.from_json(old).replace(seed=seed, strategy="full", strategy_params={}, per_class=per_class)
        write_json(run_dir / "result.json", record.to_json())
    configs = group_configs(load_runs([tmp_path / "study"]))
    assert per_class_section(configs) is None  # its seeds cannot be added up: no section, and no crash
    shutil.rmtree(tmp_path / "study" / "1_full")
    [entry] = per_class_section(group_configs(load_runs([tmp_path / "study"])))["entries"]
    assert entry["recall"] == [0.75, 1.0]


def test_a_result_json_whose_status_is_none_of_the_four_is_named(tmp_path, capsys):
    """Tester O: a result.json whose only damage is `status: 5` ended the report in 'no completed run
    under DIR', naming no file. Now it is skipped with a warning naming it and why."""
    from src.record.io import SkippedFile, find_results, write_json

    for i, status in enumerate((5, "complete", "completed")):
        write_json(tmp_path / f"{i}_run" / "result.json", {"schema_version": 2, "status": status, "strategy": "frozen",
                                                           "seed": i})
    skipped: list[SkippedFile] = []
    found = find_results([tmp_path], skipped)
    assert [d.name for d, _ in found] == ["2_run"]
    assert [(s.path.parent.name, s.reason) for s in skipped] == [
        ("0_run", "status 5 is none of completed, pruned, failed, interrupted"),
        ("1_run", 'status "complete" is none of completed, pruned, failed, interrupted')]
