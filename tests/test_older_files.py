"""Files written by an older version of this tool, read by this one: a run folder's config.yaml and a
study's recorded identity lack the settings added since (src/config/since.py). The same command run
again on such a folder, or a sweep resumed on such a study, is the same experiment, not another
config. tests/fixtures/older_785bc73/config.yaml is the config.yaml `python -m src.train
experiment=smoke` wrote at commit 785bc73, tests/fixtures/older_90672a3/config.yaml the one it wrote at
90672a3 (November: optim.name, no dataset.cache, dataset.jpeg_draft or dataset.ood). And a finished run's record rotted into something that
is not a file: the folder is refused, never trained over."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import optuna
import pytest
import yaml

from src.config import ConfigError, RunConfig
from src.config.since import ADDED
from src.record.digest import signed
from src.record.io import read_json_object
from src.search.study import _flatten, open_study, study_identity
from src.training import checkpoint
from src.training.run import RunDirTaken, run

OLDER = Path(__file__).parent / "fixtures" / "older_785bc73" / "config.yaml"
NOVEMBER = Path(__file__).parent / "fixtures" / "older_90672a3" / "config.yaml"
# the settings `experiment=smoke` makes, as that version's config.yaml holds them
SMOKE = {"dataset": {"image_size": 32, "train_per_class": 5}, "trainer": {"epochs": 1, "drift_probe": 0},
         "logger": {"kind": "none"}}


def _without_added(config: dict) -> dict:
    for key in ADDED:
        section, name = key.split(".")
        config[section].pop(name, None)
    return config


def test_an_older_config_yaml_is_the_same_config_and_a_changed_setting_still_differs():
    older = yaml.safe_load(OLDER.read_text())
    assert not {"trainer.dry_run", "trainer.feature_cache_max_mb"} & set(_flatten(older))  # a file without them
    now = RunConfig.from_dict(SMOKE)
    assert checkpoint.config_changes(older, now) == []
    # what an older run ran with is compared: a value of today's that differs from it still differs
    capped = RunConfig.from_dict(SMOKE | {"trainer": SMOKE["trainer"] | {"feature_cache_max_mb": 100.0}})
    assert checkpoint.config_changes(older, capped) == ["trainer.feature_cache_max_mb: 4096.0 -> 100.0"]
    assert checkpoint.config_changes(older, RunConfig.from_dict(SMOKE | {"seed": 3})) == ["seed: 0 -> 3"]
    # a setting lost from a file that is not one listed as added since still reads as a change
    del older["trainer"]["epochs"]
    assert checkpoint.config_changes(older, now) == [
        "trainer.epochs: (no trainer.epochs in that config: an older version?) -> 1"]


def test_the_same_command_on_an_older_finished_run_keeps_it(tiny_config, tmp_path):
    cfg = tiny_config(trainer={"epochs": 1, "drift_probe": 0})
    run(cfg, tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(_without_added(yaml.safe_load(config.read_text()))))
    older = read_json_object(tmp_path / "result.json")  # and its record, written before config_sha256 was
    (tmp_path / "result.json").write_text(json.dumps(signed({k: v for k, v in older.items() if k != "config_sha256"})))
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    # kept, not refused: the record as readers get it (its digest checked and left out)
    assert run(cfg, tmp_path) == read_json_object(tmp_path / "result.json")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files
    with pytest.raises(RunDirTaken, match=r"another config \(seed: 0 -> 3\)"):
        run(tiny_config(trainer={"epochs": 1, "drift_probe": 0}, seed=3), tmp_path)


def test_a_study_an_older_version_made_resumes_and_one_of_other_settings_is_refused(tmp_path):
    space = {"optim.lr": {"interval": [1e-4, 1e-3]}}
    now = study_identity(RunConfig.from_dict(SMOKE), space, ["val_acc"])
    older = json.loads(json.dumps(now))
    assert set(ADDED) <= set(older["config"])  # an identity's config is flat: trainer.dry_run
    older["config"] = {k: v for k, v in older["config"].items() if k not in ADDED}
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    storage = optuna.storages.RDBStorage(url)
    open_study(storage, "s", ["maximize"], older, None, url)
    open_study(storage, "s", ["maximize"], now, None, url)  # resumes
    epochs = study_identity(RunConfig.from_dict(SMOKE | {"trainer": SMOKE["trainer"] | {"epochs": 2}}),
                            space, ["val_acc"])
    with pytest.raises(ConfigError, match=r"measures something else \(trainer.epochs: 1 -> 2\)"):
        open_study(storage, "s", ["maximize"], epochs, None, url)


# what the refusal says of each setting added at acf16a4 that today's default does not redo
UNREAD = [r"dataset.cache: \(no dataset.cache in that config: added at acf16a4; runs before it decoded into memory "
          r"every run.*\) -> 'auto'",
          r"dataset.jpeg_draft: \(no dataset.jpeg_draft in that config: added at acf16a4; runs before it decoded "
          r"each JPEG at full size.*\) -> True"]


@pytest.mark.parametrize("optim", ["adamw", "sgd"])
def test_a_november_config_yaml_differs_only_in_the_settings_whose_old_behaviour_is_not_todays(optim):
    """Seen: 9 changes, among them optim.name -> (none) and optim.optimizer._target_: (none) ->
    'torch.optim.AdamW', each 'an older version?'. optim.name's layout is read as the optimizer it
    built, dataset.ood as the none it evaluated; dataset.cache and dataset.jpeg_draft stay refused,
    saying why."""
    older = yaml.safe_load(NOVEMBER.read_text())
    assert "name" in older["optim"] and "ood" not in older["dataset"]  # the fixture is that layout
    if optim == "sgd":  # what that version's conf/optim/sgd.yaml set
        older["optim"] |= {"name": "sgd", "lr": 0.01, "weight_decay": 1e-4}
    today = SMOKE | {"optim": {"optimizer": {"_target_": "torch.optim.SGD"}, "lr": 0.01, "weight_decay": 1e-4}
                     if optim == "sgd" else {}}
    changes = checkpoint.config_changes(older, RunConfig.from_dict(today))
    assert len(changes) == 2 and all(re.fullmatch(p, c) for p, c in zip(UNREAD, changes)), changes
    # a knob of today's optimizer that differs from the one that version built still differs
    knob = {"nesterov": False} if optim == "sgd" else {"betas": [0.9, 0.99]}
    today["optim"] = today.get("optim", {}) | {"optimizer": today.get("optim", {}).get("optimizer", {}) | knob}
    changes = checkpoint.config_changes(older, RunConfig.from_dict(today))
    assert changes[2:] == (["optim.optimizer.nesterov: True -> False"] if optim == "sgd"
                           else ["optim.optimizer.betas: [0.9, 0.999] -> [0.9, 0.99]"])


def test_a_study_a_november_version_made_is_refused_naming_why(tmp_path):
    space = {"optim.lr": {"interval": [1e-4, 1e-3]}}
    now = study_identity(RunConfig.from_dict(SMOKE), space, ["val_acc"])
    older = json.loads(json.dumps(now))
    # that version's identity: its config.yaml flat, less the searched key
    older["config"] = {k: v for k, v in _flatten(yaml.safe_load(NOVEMBER.read_text())).items()
                       if k in {*now["config"], "optim.name", "optim.momentum", "optim.betas"} - {"optim.lr"}}
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    storage = optuna.storages.RDBStorage(url)
    open_study(storage, "s", ["maximize"], older, None, url)
    with pytest.raises(ConfigError, match=r"measures something else \(dataset.cache: \(unset: added at acf16a4; "
                                          r"runs before it decoded into memory every run.*; dataset.jpeg_draft: \(unset: added at acf16a4"):
        open_study(storage, "s", ["maximize"], now, None, url)
    with pytest.raises(ConfigError) as refused:
        open_study(storage, "s", ["maximize"], now, None, url)
    assert "optim" not in str(refused.value) and "dataset.ood" not in str(refused.value)


@pytest.mark.parametrize("entry", ["folder", "loop", "dangling"])
def test_a_result_json_that_is_not_a_file_refuses_the_folder_and_keeps_its_model(tiny_config, tmp_path, entry):
    """Seen: a folder at result.json beside a finished run's model_best.pt; the same command trained
    again over model_best.pt, then failed writing its record (IsADirectoryError)."""
    cfg = tiny_config(trainer={"epochs": 1, "drift_probe": 0})
    run(cfg, tmp_path)
    record = tmp_path / "result.json"
    record.unlink()
    {"folder": record.mkdir, "loop": lambda: record.symlink_to(record.name),
     "dangling": lambda: record.symlink_to("gone.json")}[entry]()
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(RunDirTaken, match=r"holds a result.json that is (a folder|a link that leads to no file), not a file"):
        run(cfg, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == files
    assert os.path.lexists(record) and not list(tmp_path.glob("checkpoint_*"))
