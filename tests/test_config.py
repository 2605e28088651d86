"""Every config group composes into a valid RunConfig; bad input gives one line naming the key, the
same from Hydra's composition (the schemas src.gate registers) as from RunConfig.from_dict."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from src import config as C
from src.gate import check_overrides, compose_train, register, to_run_config

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
    # The schema gives every field, so every key can be overridden on the command line without '+'.
    section = C.STRATEGY_CONFIGS[option] if group == "strategy" else SECTIONS[group]
    assert set(cfg[group].keys()) == {f.name for f in dataclasses.fields(section)}
    run_cfg = to_run_config(cfg)
    assert dataclasses.asdict(getattr(run_cfg, group))


def test_defaults_are_the_documented_study():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = to_run_config(compose("config"))
    assert cfg.model.name == "tf_efficientnet_lite0"
    assert cfg.dataset.kind == "digits"
    assert cfg.strategy.name == "layerwise" and cfg.strategy.lr_decay == 2.6
    assert to_run_config(compose_train(["strategy=full"])).strategy.backbone_lr_scale == 0.1


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


@pytest.mark.parametrize("override,message", [
    ("trainer.bogus=1", "unknown key 'trainer.bogus' (allowed in trainer: amp, batch_size, channels_last,"),
    ("+trainer.bogus=1", "unknown key 'trainer.bogus' (allowed in trainer: amp, batch_size, channels_last,"),
    ("bogus=1", "unknown key 'bogus' (allowed in config: dataset, logger, model, optim, paths, seed, strategy, trainer)"),
    ("optim.betas.x=1", "unknown key 'optim.betas.x' (optim.betas has no sub-keys)"),
    ("strategy=bogus", "strategy=bogus is not allowed (options: bitfit, frozen, full, l2sp, layerwise, lpft, surgical)"),
    ("trainer.epochs=six", "trainer.epochs='six': expected an integer"),
    ("optim.lr=fast", "optim.lr='fast': expected a number"),
    ("dataset.train_per_class=[1]", "dataset.train_per_class=[1]: expected an integer or null"),
    ("trainer.device=gpu", "trainer.device='gpu' is not allowed (expected 'auto' | 'cpu' | 'cuda')"),
    ("strategy.unfreeze_depth=most", "strategy.unfreeze_depth='most' is not allowed (expected int | 'all')"),
    ("optim.betas=[0.9]", "optim.betas=[0.9]: expected a list of 2 values"),
    ("optim.lr=nan", "optim.lr=nan: expected a finite number"),
])
def test_hydra_composition_refuses_in_one_line(override, message):
    with pytest.raises(C.ConfigError) as err:
        check_overrides([override])
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_a_strategy_knob_belongs_to_its_strategy_only():
    assert to_run_config(check_overrides(["strategy=lpft", "strategy.probe_epochs=1"])).strategy.probe_epochs == 1
    with pytest.raises(C.ConfigError, match=r"^unknown key 'strategy.probe_epochs' \(allowed in strategy: frozen_bn, granularity, name"):
        check_overrides(["strategy=frozen", "strategy.probe_epochs=1"])


def test_a_strategy_registered_later_is_composed_and_built(monkeypatch):
    # A strategy defined after src.gate was imported (as a test's toy strategy is) gets its schema
    # registered at the next composition, and the gate builds its own config class.
    @dataclasses.dataclass(frozen=True)
    class ToyConfig(C.StrategyConfig):
        name: str = "toy"
        spin: float = 0.5

    monkeypatch.setitem(C.STRATEGY_CONFIGS, "toy", ToyConfig)
    register()
    cfg = to_run_config(compose_train(["strategy=base_toy", "strategy.spin=0.25"]))
    assert type(cfg.strategy) is ToyConfig and cfg.strategy.spin == 0.25 and cfg.strategy.frozen_bn == "all"
    with pytest.raises(C.ConfigError, match=r"^strategy.spin='fast': expected a number$"):
        check_overrides(["strategy=base_toy", "strategy.spin=fast"])


def test_schema_is_the_dataclasses():
    # One place per key: the schema Hydra checks is derived from the frozen dataclasses, with the
    # types OmegaConf knows (a Literal as its values' type, int | 'all' as Any, a tuple as a list).
    import typing

    hints = typing.get_type_hints(C.schema(C.TrainerConfig))
    assert hints["device"] is str and hints["num_threads"] == typing.Optional[int]
    assert typing.get_type_hints(C.schema(C.OptimConfig))["betas"] == typing.List[float]
    layerwise = C.schema(C.STRATEGY_CONFIGS["layerwise"])
    assert issubclass(layerwise, C.schema(C.StrategyConfig))
    assert typing.get_type_hints(layerwise)["unfreeze_depth"] is typing.Any
    assert C.schema(C.RunConfig)().trainer.epochs == C.TrainerConfig().epochs
