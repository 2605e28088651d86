"""The report a multirun or a sweep writes when it ends (`<dir>/report`, src.reporting.publish) is one
writer's, whole (src/record/whole_folder.py): two drivers of one sweep that end together, or a report
stopped half-way, left one report's page beside another's figures and summary.json."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from src.config import LoggerConfig
from src.record.lock import release, try_lock
from src.reporting import page as page_module
from src.reporting.publish import publish
from tests.test_verdict import APART, write_runs

NONE = LoggerConfig(kind="none")


def _files(folder: Path) -> dict[str, bytes]:
    """Every file's bytes, the page's time of writing left out."""
    return {p.name: re.sub(rb"; written [0-9T:-]+", b"", p.read_bytes()) for p in folder.iterdir() if p.is_file()}


def _is_one_report(report: Path, alone: Path) -> None:
    """`report` holds exactly what one writer alone wrote into `alone`, and no writer's folder is left."""
    assert _files(report) == _files(alone)
    assert not list(report.parent.glob(".report.writing-*"))


def test_two_writers_of_one_report_leave_one_whole_report(tmp_path, monkeypatch):
    study = write_runs(tmp_path / "study", APART)
    out = study / "report"
    one_run = sorted(p for p in study.iterdir() if p.is_dir())[0]
    assert publish([study], tmp_path / "alone", NONE, "g")
    real_write_json = page_module.write_json
    others: list[Path | None] = []
    started: list[bool] = []

    def write_json(path: Path, data):
        # The second driver writes its whole report while the first is between its figures and
        # its summary.json: the two drivers of one sweep, ending together.
        if path.name == "summary.json" and not started:
            started.append(True)
            others.append(publish([one_run], out, NONE, "g"))
        return real_write_json(path, data)

    monkeypatch.setattr(page_module, "write_json", write_json)
    assert publish([study], out, NONE, "g") == out / "index.html"
    assert others == [out / "index.html"]
    # it held the first driver's page and summary.json beside the second's figures (of one run)
    _is_one_report(out, tmp_path / "alone")


@pytest.mark.parametrize("stop", [KeyboardInterrupt, OSError])
def test_a_report_stopped_half_way_leaves_the_earlier_one_as_it_was(tmp_path, monkeypatch, stop):
    study = write_runs(tmp_path / "study", APART)
    out = study / "report"
    assert publish([study], out, NONE, "g")
    assert publish([study], tmp_path / "alone", NONE, "g")
    real_write_json = page_module.write_json

    def write_json(path: Path, data):
        if path.name == "verdict.json":  # the figures and summary.json written, the page not yet
            raise stop(28, "No space left on device")
        return real_write_json(path, data)

    monkeypatch.setattr(page_module, "write_json", write_json)
    problems: list[str] = []
    if stop is KeyboardInterrupt:
        with pytest.raises(KeyboardInterrupt):
            publish([study], out, NONE, "g", metric="val_acc", problems=problems)
    else:
        assert publish([study], out, NONE, "g", metric="val_acc", problems=problems) is None
        assert problems == [f"no report written in {out} (OSError: [Errno 28] No space left on device)"]
    # it held the new report's figures and summary.json beside the earlier report's page
    _is_one_report(out, tmp_path / "alone")


def test_earlier_reports_wandb_runs_are_kept_and_abandoned_writers_folders_removed(tmp_path):
    study = write_runs(tmp_path / "study", APART)
    out = study / "report"
    earlier = out / "wandb" / "offline-run-20260101_000000-abc123"
    earlier.mkdir(parents=True)
    (earlier / "run-abc123.wandb").write_bytes(b"an earlier summary run, not uploaded yet")
    abandoned = study / ".report.writing-dead"  # a writer killed with SIGKILL: no one holds its lock
    abandoned.mkdir()
    live = study / ".report.writing-live"  # a writer still at work
    live.mkdir()
    fd = try_lock(live)
    try:
        assert publish([study], out, NONE, "g")
        assert live.is_dir() and not abandoned.exists()
    finally:
        release(fd)
    assert (earlier / "run-abc123.wandb").read_bytes() == b"an earlier summary run, not uploaded yet"
    assert (out / "index.html").is_file() and not [p for p in os.listdir(out) if p.startswith(".replaced")]
    assert oct((out).stat().st_mode & 0o777) == oct(0o777 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_the_same_study_reported_again_leaves_one_summary_run_to_sync(tmp_path):
    """The same sweep command run again once it had finished (or two drivers ending together) made a
    second summary run beside the first: both synced, the study's W&B group held two summaries."""
    pytest.importorskip("wandb")
    study = write_runs(tmp_path / "study", APART)
    out = study / "report"
    offline = LoggerConfig(kind="wandb", mode="offline", project="test")
    assert publish([study], out, offline, "g")
    [first] = (out / "wandb").glob("offline-run-*")
    assert publish([study], out, offline, "g")
    [second] = (out / "wandb").glob("offline-run-*")  # what the sync command uploads: the newest summary
    assert second != first and list((out / "wandb").glob("superseded-offline-run-*")) == [
        first.with_name("superseded-" + first.name)]


@pytest.mark.parametrize("landed", [False, True])
def test_a_writer_killed_between_its_renames_loses_no_report_and_no_wandb_run(tmp_path, landed):
    """SIGKILL after `report/` was moved into the writer's folder and before that folder took its place:
    no `report/` is left, the earlier one is inside the dead writer's folder. The next report (here, or
    where another writer's report has since landed) must take it back, not remove it with its W&B runs."""
    study = write_runs(tmp_path / "study", APART)
    out = study / "report"
    dead = study / ".report.writing-dead"  # what the kill leaves: no lock held, the earlier report inside
    earlier = dead / ".replaced-0"
    run = earlier / "wandb" / "offline-run-20260101_000000-abc123"
    run.mkdir(parents=True)
    (run / "run-abc123.wandb").write_bytes(b"an earlier summary run, not uploaded yet")
    (earlier / "index.html").write_text("the earlier report")
    if landed:  # another writer's report is in place since
        (out / "wandb").mkdir(parents=True)
        (out / "index.html").write_text("a later report")
    assert publish([study], out, NONE, "g")
    assert (out / "wandb" / run.name / "run-abc123.wandb").read_bytes() == b"an earlier summary run, not uploaded yet"
    assert "the earlier report" not in (out / "index.html").read_text()
    assert not dead.exists() and not list(study.glob(".report.writing-*"))
