"""Hydra conventions a newcomer relies on: the smoke preset (`python -m src.train experiment=smoke`, the
first command to run) and `paths.output_dir`, the one setting that moves every run and multirun folder."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from src.config import ConfigError
from src.gate import check_overrides, compose_train, precheck, to_run_config
from tests.cli import env

STAMP = r"\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d(_\d+)?"  # DATE/TIME, or DATE/TIME_1 for a same-second twin


def test_smoke_preset_is_the_small_untracked_run_it_promises():
    cfg = to_run_config(compose_train(["experiment=smoke"]))
    assert (cfg.trainer.epochs, cfg.dataset.image_size, cfg.dataset.train_per_class) == (1, 32, 5)
    assert cfg.logger.kind == "none" and cfg.trainer.drift_probe == 0
    # Everything else is the default study, so the smoke run exercises what `make study` runs.
    assert cfg.model.name == "tf_efficientnet_lite0" and cfg.model.pretrained
    assert cfg.dataset.kind == "digits" and cfg.strategy.name == "layerwise"
    # Any key still overrides the preset (the preset comes after the groups in the defaults list).
    assert to_run_config(compose_train(["experiment=smoke", "trainer.epochs=2"])).trainer.epochs == 2


def _folders(overrides: list[str]) -> tuple[str, str]:
    cfg = compose_train(overrides, return_hydra_config=True)
    # Resolving claims the folders (unique_dir creates them), as Hydra does when it starts.
    return OmegaConf.select(cfg, "hydra.run.dir"), OmegaConf.select(cfg, "hydra.sweep.dir")


def test_output_dir_moves_run_and_multirun_folders(tmp_path):
    run_dir, sweep_dir = _folders([f"paths.output_dir={tmp_path}"])
    assert re.fullmatch(f"{re.escape(str(tmp_path))}/outputs/{STAMP}", run_dir), run_dir
    assert re.fullmatch(f"{re.escape(str(tmp_path))}/multirun/{STAMP}", sweep_dir), sweep_dir
    assert Path(run_dir).is_dir() and Path(sweep_dir).is_dir()
    # A preset with a folder of its own builds it under paths.output_dir too.
    _, grid_dir = _folders([f"paths.output_dir={tmp_path / 'g'}", "experiment=data_size_grid"])
    assert grid_dir.startswith(f"{tmp_path / 'g'}/multirun/data_size_grid/"), grid_dir
    # The output folder is where Hydra writes, not part of what a run computes.
    assert "paths" not in to_run_config(compose_train([f"paths.output_dir={tmp_path}"])).to_dict()


def test_default_output_folders_stay_where_they_were(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir, sweep_dir = _folders([])
    assert re.fullmatch(f"outputs/{STAMP}", run_dir), run_dir
    assert re.fullmatch(f"multirun/{STAMP}", sweep_dir), sweep_dir


@pytest.mark.parametrize("override,message", [
    ("paths.bogus=1", "unknown key 'paths.bogus' (allowed in paths: output_dir)"),
    ("paths=/tmp", "paths='/tmp': expected a mapping of keys"),
])
def test_paths_keys_are_checked_like_every_other(override, message):
    with pytest.raises(ConfigError) as err:
        check_overrides([override])
    assert str(err.value) == message


def test_output_dir_that_cannot_hold_folders_is_one_line_before_anything_starts(tmp_path):
    (tmp_path / "afile").write_text("")
    with pytest.raises(ConfigError) as err:
        precheck([f"paths.output_dir={tmp_path}/afile/x"])
    assert str(err.value) == f"paths.output_dir={tmp_path}/afile/x: {tmp_path}/afile is a file, not a folder"
    with pytest.raises(ConfigError, match=r"^paths.output_dir=.*afile/x: .*is a file, not a folder$"):
        precheck(["-m", "strategy=frozen,full", f"paths.output_dir={tmp_path}/afile/x"])
    with pytest.raises(ConfigError, match=r"^paths.output_dir='': expected a folder"):
        precheck(["paths.output_dir="])
    assert not list(tmp_path.glob("*/outputs")) and not (Path.cwd() / "paths.output_dir").exists()


@pytest.mark.parametrize("overrides, line", [
    (['paths.output_dir="~/runs"'], "paths.output_dir='~/runs': '~' is not expanded here"),
    (["-m", "seed=0,1", 'hydra.sweep.dir="~/sweep"'], "hydra.sweep.dir='~/sweep': '~' is not expanded here"),
    (['hydra.run.dir="~"'], "hydra.run.dir='~': '~' is not expanded here"),
    (["dataset=imagefolder", 'dataset.root="~/photos"'], "dataset.root='~/photos': '~' is not expanded here"),
    (['dataset.ood=["~/art"]'], "dataset.ood[0]='~/art': '~' is not expanded here"),
    (['dataset.cache_dir="~/cache"'], "dataset.cache_dir='~/cache': '~' is not expanded here"),
    (['model.checkpoint_path="~bob/w.pt"'], "model.checkpoint_path='~bob/w.pt': '~' is not expanded here"),
])
def test_a_path_starting_with_a_tilde_is_refused_not_made_a_folder_named_tilde(overrides, line, tmp_path, monkeypatch):
    # Nothing expands `~` inside quotes (or in a preset's YAML): paths.output_dir="~/runs" ran, into
    # ./~/runs/outputs/..., and dataset.root="~/photos" was 'no such folder'.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        precheck(overrides)
    home = "the full path" if "~bob" in line else "$HOME" + line.split("'~", 1)[1].split("'", 1)[0]
    assert str(err.value) == f"{line} (it would be taken as a folder named '~' in the current one); write {home}"
    assert not any(tmp_path.iterdir())


def test_a_value_hydras_grammar_reads_only_quoted_says_how_to_quote_it(tmp_path):
    # A path with a non-ASCII letter, '#', '&' or '~' was "LexerNoViableAltException: ..." and no more.
    photos = tmp_path / "café #1"
    for name in ("a", "b"):  # two classes: the gate refuses a folder that cannot train
        (photos / name).mkdir(parents=True)
    with pytest.raises(ConfigError) as err:
        precheck(["dataset=imagefolder", f"dataset.root={photos}"])
    assert str(err.value) == (f"dataset.root={photos}: LexerNoViableAltException: dataset.root={photos}; Hydra's grammar "
                              f"reads this value only quoted (and the shell needs its own quotes around that): "
                              f"'dataset.root=\"{photos}\"'")
    with pytest.raises(ConfigError, match=r"LexerNoViableAltException: dataset.root=~/photos; '~' is not expanded "
                                          r"here: write \$HOME/photos$"):
        precheck(["dataset=imagefolder", "dataset.root=~/photos"])
    with pytest.raises(ConfigError) as err:  # a sweep's list: quoting it whole would make it one value
        precheck(["-m", "dataset=imagefolder", f"dataset.root={photos},{tmp_path}"])
    assert str(err.value).endswith(f"LexerNoViableAltException: dataset.root={photos},{tmp_path}")
    # quoted as the hint says, it is read, and the folder's cheap checks pass
    assert precheck(["dataset=imagefolder", f'dataset.root="{photos}"', f"paths.output_dir={tmp_path}"]) == 1


@pytest.mark.slow  # about 25 s on 2 idle CPU cores (the real model, pretrained weights and data)
def test_smoke_preset_runs_to_a_complete_run_folder(tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = subprocess.run([sys.executable, "-m", "src.train", "experiment=smoke", f"paths.output_dir={tmp_path / 'out'}",
                           "trainer.progress=false"], cwd=cwd, env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = [p.parent for p in (tmp_path / "out").glob("outputs/*/*/result.json")]
    assert re.fullmatch(STAMP, str(run_dir.relative_to(tmp_path / "out" / "outputs")))
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed" and result["epochs"] == 1 and result["image_size"] == 32
    assert result["train_samples"] == 50 and result["strategy"] == "layerwise"
    assert 0 <= result["test_acc"] <= 1 and result["train_flops"] > 0
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 1
    assert not (run_dir / "wandb").exists()  # logger off
    assert not any(cwd.iterdir())  # nothing written where it was started: everything under paths.output_dir
