"""A finished run's config.yaml edited by hand (to rerun it with another setting, say): the report
grouped the run under the settings it was edited to, and a rerun of the edited config in that folder
kept it as the new config's run. result.json now carries the SHA-256 of the config.yaml its run wrote
(`config_sha256`), and both readers name the edited file instead."""

from __future__ import annotations

import hashlib

import pytest

from src.record.io import CONFIG_FILE, read_json_object
from src.reporting.runs import load_runs
from src.training.run import RunDirTaken, finished_run, run


def test_an_edited_config_is_named_not_reported_under_its_new_settings_nor_kept(tiny_config, tmp_path):
    run_dir = tmp_path / "0_frozen"
    run(tiny_config(strategy={"name": "frozen"}, trainer={"epochs": 1}), run_dir)
    config = run_dir / CONFIG_FILE
    assert read_json_object(run_dir / "result.json")["config_sha256"] == hashlib.sha256(config.read_bytes()).hexdigest()
    assert [r.dir for r in load_runs([tmp_path])] == [run_dir]  # untouched: reported

    text = config.read_text()
    config.write_text(text.replace("batch_size: 16", "batch_size: 8"))
    assert config.read_text() != text
    skipped: list = []
    assert load_runs([tmp_path], skipped) == []
    assert [s.path for s in skipped] == [config] and "edited since the run wrote it" in skipped[0].reason
    # the config it was edited into, asked for in its folder: refused, not kept as that config's run
    edited = tiny_config(strategy={"name": "frozen"}, trainer={"epochs": 1, "batch_size": 8})
    with pytest.raises(RunDirTaken, match=r"config\.yaml was edited since the run wrote it"):
        finished_run(run_dir, edited, None)

    config.write_text(text)  # restored: reported and kept again
    assert [r.dir for r in load_runs([tmp_path])] == [run_dir]
    assert finished_run(run_dir, tiny_config(strategy={"name": "frozen"}, trainer={"epochs": 1}), None) is not None
