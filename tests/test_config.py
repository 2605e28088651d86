"""Every config group composes into a valid RunConfig; bad input gives one line naming the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from src import config as C
from src.train import to_run_config

CONF = Path(__file__).resolve().parents[1] / "conf"
SECTIONS = {
    "model": C.ModelConfig,
    "dataset": C.DataConfig,
    "strategy": C.StrategyConfig,
    "optim": C.OptimConfig,
    "trainer": C.TrainerConfig,
    "logger": C.LoggerConfig,
}
# Options that need a path to be valid.
NEEDS = {("dataset", "medmnist"): ["dataset.root=x.npz"], ("dataset", "imagefolder"): ["dataset.root=x"]}


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in SECTIONS for o in _options(g)])
def test_every_group_option_composes_with_every_key(group, option):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"{group}={option}", *NEEDS.get((group, option), [])])
    # YAML lists every field, so every key can be overridden on the command line without '+'.
    assert set(cfg[group].keys()) == {f.name for f in dataclasses.fields(SECTIONS[group])}
    run_cfg = to_run_config(cfg)
    assert dataclasses.asdict(getattr(run_cfg, group))


def test_defaults_are_the_documented_study():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = to_run_config(compose("config"))
    assert cfg.model.name == "tf_efficientnet_lite0"
    assert cfg.dataset.kind == "digits"
    assert cfg.strategy.lr_decay == 2.6
    assert cfg.strategy.backbone_lr_scale == 0.1


@pytest.mark.parametrize(
    "override,key",
    [
        ({"trainer": {"epochz": 3}}, "trainer.epochz"),
        ({"strategy": {"name": "sideways"}}, "strategy.name"),
        ({"strategy": {"lr_decay": 0}}, "strategy.lr_decay"),
        ({"strategy": {"lr_decay": -2.0}}, "strategy.lr_decay"),
        ({"strategy": {"unfreeze_depth": "most"}}, "strategy.unfreeze_depth"),
        ({"strategy": {"unfreeze_depth": -1}}, "strategy.unfreeze_depth"),
        ({"optim": {"lr": 0}}, "optim.lr"),
        ({"optim": {"lr": "fast"}}, "optim.lr"),
        ({"trainer": {"epochs": 0}}, "trainer.epochs"),
        ({"trainer": {"batch_size": -4}}, "trainer.batch_size"),
        ({"dataset": {"image_size": 4}}, "dataset.image_size"),
        ({"dataset": {"kind": "medmnist", "root": None}}, "dataset.root"),
        ({"dataset": {"kind": "pictures"}}, "dataset.kind"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_values_name_the_key(tiny_config, override, key):
    with pytest.raises(C.ConfigError) as err:
        tiny_config(**override)
    message = str(err.value)
    assert key in message and "\n" not in message


def test_int_or_all_depth_accepted(tiny_config):
    assert tiny_config(strategy={"unfreeze_depth": 3}).strategy.unfreeze_depth == 3
    assert tiny_config(strategy={"unfreeze_depth": "all"}).strategy.unfreeze_depth == "all"
