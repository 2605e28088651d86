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


def test_a_trial_whose_study_counts_it_finished_is_not_said_to_be_resumed(tmp_path, capsys):
    """A sweep trial's folder without result.json was "the same command resumes it"; where the study
    records the trial COMPLETE (its record deleted or left out of a copy since), the same command
    trains nothing and the folder stays as it is: the hint says so. A trial the study still counts
    as running (a killed worker) keeps the old hint. Real sqlite storage, no training."""
    import optuna

    from src.config import OUR_SWEEPER
    from src.reporting.cli import main

    sweep = tmp_path / "sweeps-out" / "study"
    sweep.mkdir(parents=True)
    url = f"sqlite:///{sweep / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    study.set_user_attr("uid", "u1")
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.5))  # trial 0: completed
    study.ask()  # trial 1: running (its worker killed)
    (sweep / "study.json").write_text(json.dumps({"study": "s", "uid": "u1", "storage": url}))
    shutil.copytree(V1_RUN, sweep / "2_layerwise")  # a trial whose record is whole, so the report has a run
    for number in (0, 1):
        folder = sweep / f"{number}_layerwise"
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "hydra.yaml").write_text(
            f"hydra:\n  sweeper:\n    _target_: {OUR_SWEEPER}\n  mode: MULTIRUN\n  job:\n    num: {number}\n")
        (folder / "config.yaml").write_text("strategy:\n  name: layerwise\n")
    main([str(sweep), "--out", str(tmp_path / "report")])
    err = capsys.readouterr().err
    hints = {line.removeprefix("warning: ").partition(": no result.json")[0]: line.rpartition(" is still running; ")[2]
             for line in err.splitlines() if "no result.json" in line}
    assert hints[str(sweep / "0_layerwise")].startswith(
        "its study records trial 0 as COMPLETE: its result.json was lost after it finished"), err
    assert "does not train it again" in hints[str(sweep / "0_layerwise")]
    assert hints[str(sweep / "1_layerwise")] == "the same command resumes it", err


def test_a_metrics_line_with_a_rotted_byte_is_named_not_read_as_a_hole(tmp_path):
    """A byte of metrics.jsonl rotted into one that is not UTF-8, inside a key ("val_acc"): read with
    errors="replace", the line parsed with a key "val\\ufffdacc", and the epoch's val_acc went missing
    from the curve without a word. The line is now named and left out, as a cut line is."""
    run = tmp_path / "run"
    shutil.copytree(V1_RUN, run)
    data = bytearray((run / "metrics.jsonl").read_bytes())
    data[data.index(b'"val_acc"') + 4] = 0xFF
    (run / "metrics.jsonl").write_bytes(bytes(data))
    skipped: list[SkippedFile] = []
    (loaded,) = load_runs([tmp_path], skipped)
    assert [str(s) for s in skipped] == [f"{run / 'metrics.jsonl'} line 1: not UTF-8 text (a damaged byte)"]
    assert all(m.val_acc is not None for m in loaded.metrics)
