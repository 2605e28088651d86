"""A completed run's curve or schedule file rotted into something that is not a file (a folder where
it was, a dangling or looping link) or emptied: the report still reports the run, and says which
file it could not use, instead of a page without that run's curve and not a word why."""

from __future__ import annotations

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
