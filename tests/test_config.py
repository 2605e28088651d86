"""Every config group composes into a valid RunConfig; bad input gives one line naming the key, the
same from Hydra's composition (the schemas src.gate registers) as from RunConfig.from_dict."""

from __future__ import annotations

import dataclasses
from pathlib import Path


import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from src import config as C
from src.gate import check_overrides, compose_train, install, register, to_run_config
from src.strategies.registry import STRATEGIES, config_class
from tests.cli import python_c

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
    install()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"{group}={option}", *NEEDS.get((group, option), [])])
    # The schema gives every field, so every key can be overridden on the command line without '+'.
    section = config_class(option) if group == "strategy" else SECTIONS[group]
    assert set(cfg[group].keys()) == {f.name for f in dataclasses.fields(section)}
    run_cfg = to_run_config(cfg)
    assert dataclasses.asdict(getattr(run_cfg, group))


def test_defaults_are_the_documented_study():
    install()
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
    ("optim.optimizer.betas.x=1", "unknown key 'optim.optimizer.betas.x' (optim.optimizer.betas has no sub-keys)"),
    ("optim.betas=[0.9,0.9]", "unknown key 'optim.betas' (allowed in optim: join_warmup_epochs, lr, min_lr_ratio, optimizer,"),
    ("optim.optimizer.momentum=0.5", "unknown key 'optim.optimizer.momentum' (allowed in optim.optimizer: _partial_, _target_, betas)"),
    ("trainer.amp=maybe", "trainer.amp='maybe' is not allowed (expected 'auto' | 'on' | 'off')"),
    ("dataset.augment=sideways", "dataset.augment='sideways' is not allowed (expected 'none' | 'shift' | 'standard' |"),
    ("strategy=bogus", "strategy=bogus is not allowed (options: bitfit, frozen, full, l2sp, layerwise, lpft, surgical)"),
    ("trainer.epochs=six", "trainer.epochs='six': expected an integer"),
    ("optim.lr=fast", "optim.lr='fast': expected a number"),
    ("dataset.train_per_class=[1]", "dataset.train_per_class=[1]: expected an integer or null"),
    ("trainer.device=gpu", "trainer.device='gpu' is not allowed (expected 'auto' | 'cpu' | 'cuda')"),
    ("strategy.unfreeze_depth=most", "strategy.unfreeze_depth='most' is not allowed (expected int | 'all')"),
    ("optim.optimizer.betas=[0.9]", "optim.optimizer.betas=[0.9]: expected a list of 2 values"),
    ("optim.lr=nan", "optim.lr=nan: expected a finite number"),
    # a single OOD folder given bare: the line shows the list syntax Hydra needs, not just "a list"
    ("dataset.ood=/data/art", "dataset.ood='/data/art': expected a list ([a,b] on the command line, e.g. "
                              "dataset.ood=[/data/art])"),
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
    from src.strategies import Strategy

    @dataclasses.dataclass(frozen=True)
    class ToyConfig(C.StrategyConfig):
        name: str = "toy"
        spin: float = 0.5

    class Toy(Strategy):
        name = "toy"
        Config = ToyConfig

    monkeypatch.setitem(STRATEGIES, "toy", Toy)
    register()
    cfg = to_run_config(compose_train(["strategy=base_toy", "strategy.spin=0.25"]))
    assert type(cfg.strategy) is ToyConfig and cfg.strategy.spin == 0.25 and cfg.strategy.frozen_bn == "all"
    with pytest.raises(C.ConfigError, match=r"^strategy.spin='fast': expected a number$"):
        check_overrides(["strategy=base_toy", "strategy.spin=fast"])


def test_the_dataclasses_are_the_schema_with_enums_omegaconf_checks():
    # One place per key: OmegaConf reads the frozen dataclasses themselves; a fixed set of values is
    # an enum whose members are the strings (so results and comparisons see plain strings).
    node = C.structured(C.RunConfig)
    assert OmegaConf.get_type(node, "trainer") is C.TrainerConfig and OmegaConf.get_type(node, "strategy") is C.StrategyConfig
    node.trainer.device = "cpu"  # writable for Hydra's merges, though the dataclasses are frozen
    with pytest.raises(ValidationError):
        node.trainer.device = "gpu"
    cfg = C.RunConfig.from_dict({"trainer": {"device": "cpu"}})
    assert cfg.trainer.device is C.Device.cpu and cfg.trainer.device == "cpu" and repr(cfg.trainer.device) == "'cpu'"
    assert cfg.to_dict()["trainer"]["device"] == "cpu" and type(cfg.to_dict()["trainer"]["device"]) is str
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.trainer.epochs = 3  # type: ignore[misc]


def test_a_config_built_in_code_is_checked_too():
    cfg = dataclasses.replace(C.RunConfig(), trainer=C.TrainerConfig(device="gpu"))  # type: ignore[arg-type]
    with pytest.raises(C.ConfigError, match=r"^trainer.device='gpu' is not allowed \(expected 'auto' \| 'cpu' \| 'cuda'\)$"):
        C.validate(cfg)


def test_the_default_run_config_needs_no_import_of_the_strategies():
    # The registry imports the strategy modules itself: no import order to get right.
    code = ("import sys; from src.config import RunConfig; c = RunConfig(); "
            "print(type(c.strategy).__name__, RunConfig.from_dict({'strategy': {'name': 'lpft'}}).strategy.probe_epochs, "
            "'torch' in sys.modules)")
    assert python_c(code) == ["LayerwiseConfig", "2", "False"]


def _yaml_keys(data: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in data.items():
        if key == "defaults":
            continue
        if isinstance(value, dict):
            flat |= _yaml_keys(value, f"{prefix}{key}.")
        else:
            flat[prefix + key] = value
    return flat


def _default(cls: type, dotted: str) -> object:
    for part in dotted.split("."):
        f = next(f for f in dataclasses.fields(cls) if f.name == part)
        cls = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return cls


@pytest.mark.parametrize("path", sorted(p.relative_to(CONF).as_posix() for p in CONF.glob("*/*.yaml")
                                        if p.parent.name in SECTIONS) + ["config.yaml"])
def test_defaults_live_in_the_dataclasses_only(path):
    """A YAML under conf/ sets only what differs from the dataclasses' defaults: a repeated default
    could drift from the dataclass unnoticed (RunConfig() and from_dict would then differ from Hydra)."""
    data = yaml.safe_load((CONF / path).read_text()) or {}
    group = path.split("/")[0]
    if group == "config.yaml":
        owner: type = C.EntryConfig
        data = {k: v for k, v in data.items() if k != "hydra"}
    elif group == "strategy":
        owner = config_class(Path(path).stem)
    elif group == "optim":
        owner = C.OptimConfig
    else:
        owner = SECTIONS[group]
    repeated = []
    for key, value in _yaml_keys(data).items():
        default = _default(owner, key)
        default = list(default) if isinstance(default, tuple) else default
        if value == default and type(value) is type(default if not isinstance(default, C.Choice) else default.value):
            repeated.append(f"{key}: {value!r}")
    assert repeated == [], f"conf/{path} repeats the dataclass default of {repeated}"


def test_each_optimizer_yaml_holds_its_own_knobs_and_builds_it():
    sgd = to_run_config(compose_train(["optim=sgd"])).optim
    assert type(sgd.optimizer) is C.SGDConfig and sgd.name == "sgd" and sgd.lr == 1e-2 and sgd.weight_decay == 1e-4
    adamw = to_run_config(compose_train([])).optim
    assert type(adamw.optimizer) is C.AdamWConfig and adamw.name == "adamw" and adamw.optimizer.betas == (0.9, 0.999)
    assert not hasattr(sgd.optimizer, "betas") and not hasattr(adamw.optimizer, "momentum")
    assert C.RunConfig().optim == adamw  # the dataclass default is the YAML default, as every key's


@pytest.mark.parametrize("option,kind,own", [("adamw", "AdamW", {"betas": [0.8, 0.9]}),
                                             ("sgd", "SGD", {"momentum": 0.5, "nesterov": True})])
def test_the_optimizer_is_instantiated_from_its_yaml_with_each_groups_real_lr(option, kind, own):
    import torch

    from src.training.optim import build_optimizer

    knobs = [f"optim.optimizer.{k}={str(v).replace(' ', '')}" for k, v in own.items() if k != "nesterov"]
    cfg = to_run_config(compose_train([f"optim={option}", *knobs])).optim
    groups = [{"params": [torch.zeros(2, requires_grad=True)], "lr": 0.25, "weight_decay": 0.0},
              {"params": [torch.zeros(2, requires_grad=True)], "lr": 0.5, "weight_decay": 0.125}]
    opt = build_optimizer(cfg, groups)
    assert type(opt).__name__ == kind
    assert [(g["lr"], g["weight_decay"]) for g in opt.param_groups] == [(0.25, 0.0), (0.5, 0.125)]
    for key, value in own.items():
        assert all(list(g[key]) == value if isinstance(value, list) else g[key] == value for g in opt.param_groups)


@pytest.mark.parametrize("override, message", [
    # every seed reaches numpy (sklearn's random_state, default_rng): 0..2**32-1, as `seed`
    ("dataset.split_seed=-1", "dataset.split_seed=-1 must be in 0..4294967295"),
    ("dataset.split_seed=4294967296", "dataset.split_seed=4294967296 must be in 0..4294967295"),
    ("seed=4294967296", "seed=4294967296 must be in 0..4294967295"),
    # 30 GB a decoded image: the OOM killer took a decoding worker, with no message
    ("dataset.image_size=100000", "dataset.image_size=100000 must be <= 4096"),
    # torch.set_num_threads takes a C int: "ValueError: Overflow when unpacking long"
    ("trainer.num_threads=2147483648", "trainer.num_threads=2147483648 must be <= 4096"),
])
def test_values_a_library_takes_only_in_a_range_are_checked_before_any_folder(tmp_path, monkeypatch, override,
                                                                                message):
    from src.gate import precheck
    from tests.cli import TINY_OVERRIDES

    monkeypatch.chdir(tmp_path)
    with pytest.raises(C.ConfigError) as err:
        precheck([*TINY_OVERRIDES, override])
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    assert not list(tmp_path.iterdir())  # refused before Hydra makes a run folder
    key, _, value = override.partition("=")
    section, _, name = key.rpartition(".")
    with pytest.raises(C.ConfigError, match=f"^{message}"):  # a config built in code, the same
        C.RunConfig.from_dict({section: {name: int(value)}} if section else {name: int(value)})


@pytest.mark.parametrize("override", ["dataset.split_seed=4294967295", "dataset.image_size=4096",
                                      "trainer.num_threads=4096"])
def test_the_ends_of_those_ranges_are_allowed(override):
    check_overrides([override])


@pytest.mark.parametrize("override, line", [
    # an unset variable: '' was "no file", and the run trained from the bundled weights, exit 0
    ("model.checkpoint_path=", "model.checkpoint_path='' is an empty path (an unset variable?): give the weights "
                               "file, or null for none"),
    # OmegaConf let these into a list of strings; the tags failed inside W&B's init, after the folder was made
    ("logger.tags=[a,[b]]", "logger.tags[1]=['b']: expected a string (each item of logger.tags)"),
    ("logger.tags=[a,{x:1}]", "logger.tags[1]={'x': 1}: expected a string (each item of logger.tags)"),
    ("dataset.ood=[[a]]", "dataset.ood[0]=['a']: expected a string (each item of dataset.ood)"),
])
def test_an_empty_weights_path_and_a_non_string_list_item_are_one_line(override, line):
    with pytest.raises(C.ConfigError) as err:
        to_run_config(check_overrides([override]))
    assert str(err.value) == line
    with pytest.raises(C.ConfigError) as err:  # a config built in code is held to the same
        C.RunConfig.from_dict(OmegaConf.to_container(check_overrides([override])))
    assert str(err.value) == line


@pytest.mark.parametrize("override, line", [
    ("logger.project=a/b", "logger.project='a/b' contains /: W&B takes 1-128 characters without / \\ # ? % :"),
    ("logger.project='x:y?'", "logger.project='x:y?' contains : ?: W&B takes 1-128 characters without / \\ # ? % :"),
    ("logger.project=", "logger.project='' is empty: W&B takes 1-128 characters without / \\ # ? % :"),
    ("logger.project=" + "p" * 129, f"logger.project='{'p' * 129}' is over 128 characters: W&B takes 1-128 "
                                    "characters without / \\ # ? % :"),
    ("logger.tags=[ok,'']", "logger.tags[1]='' has 0 characters: W&B takes 1-64"),
    ("logger.tags=[" + "t" * 65 + "]", f"logger.tags[0]='{'t' * 65}' has 65 characters: W&B takes 1-64"),
])
def test_names_wandb_refuses_are_one_line_before_any_run_folder(override, line):
    # Each failed inside wandb.init, after the run folder was made; the run went on untracked, with a warning.
    with pytest.raises(C.ConfigError) as err:
        to_run_config(check_overrides(["logger=wandb", override]))
    assert str(err.value) == line
    to_run_config(check_overrides(["logger=none", override]))  # no W&B run: its names are not used


def test_a_wandb_project_from_the_environment_is_checked_as_logger_project_is(monkeypatch):
    # WANDB_PROJECT names the project where logger.project is unset; one W&B refuses failed inside
    # wandb.init, and every run went on untracked with three warnings.
    monkeypatch.setenv("WANDB_PROJECT", "team/exp")
    with pytest.raises(C.ConfigError) as err:
        to_run_config(check_overrides(["logger=wandb"]))
    assert str(err.value) == "WANDB_PROJECT='team/exp' contains /: W&B takes 1-128 characters without / \\ # ? % :"
    to_run_config(check_overrides(["logger=wandb", "logger.project=given"]))  # the config's own wins: not used
    to_run_config(check_overrides(["logger=none"]))


def test_names_wandb_takes_are_taken_as_they_are(tmp_path):
    from src.reporting.tracking import make_tracker

    cfg = to_run_config(check_overrides(["logger=wandb", "logger.mode=offline", "logger.project=" + "p" * 128,
                                         "logger.tags=[" + "t" * 64 + ",x]"])).logger
    tracker = make_tracker(cfg, tmp_path, "run", {}, "g")
    try:
        assert tracker.run.project == "p" * 128 and sorted(tracker.run.tags) == ["t" * 64, "x"]
    finally:
        tracker.finish()
    assert list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))  # a real offline run, not W&B's disabled one


@pytest.mark.parametrize("mode", ["ofline", "OFFLINE", ""])
def test_a_wandb_mode_from_the_environment_that_wandb_refuses_is_one_line(monkeypatch, mode):
    # WANDB_MODE=ofline failed inside wandb.init (even under logger.mode=offline: W&B reads it into its
    # settings) with a four-line pydantic error, and every run of the study went on untracked.
    # set but empty (`WANDB_MODE= python -m src.train`) fails in W&B the same way: it is not unset
    monkeypatch.setenv("WANDB_MODE", mode)
    for overrides in (["logger=wandb"], ["logger=wandb", "logger.mode=offline"]):
        with pytest.raises(C.ConfigError) as err:
            to_run_config(check_overrides(overrides))
        assert str(err.value) == (f"WANDB_MODE={mode!r} is not a W&B mode: W&B takes online, offline, disabled, "
                                  "shared, dryrun or run")
    to_run_config(check_overrides(["logger=none"]))  # no W&B run: not used


@pytest.mark.parametrize("mode", ["offline", "disabled", "dryrun"])
def test_the_wandb_modes_wandb_takes_are_taken(monkeypatch, mode):
    monkeypatch.setenv("WANDB_MODE", mode)
    to_run_config(check_overrides(["logger=wandb"]))


def test_a_huge_epoch_count_is_one_line_not_a_memory_error(tmp_path):
    # Seen: `trainer.epochs=99999999999` was a MemoryError traceback: the schedule lists each group's epochs.
    from src.gate import precheck

    with pytest.raises(C.ConfigError) as err:
        precheck(["trainer.epochs=99999999999", f"paths.output_dir={tmp_path}"])
    assert str(err.value) == "trainer.epochs=99999999999 must be <= 10000"
    assert precheck(["trainer.epochs=10000", "optim.warmup_epochs=0", f"paths.output_dir={tmp_path}"]) == 1


def test_hydras_compose_api_as_the_readme_shows_gives_the_typed_config():
    # README, "From Python or a notebook": Hydra's own compose, after src.gate.install(), then to_run_config.
    from hydra import compose, initialize_config_dir

    from src.gate import CONF, install, to_run_config

    install()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=smoke", "strategy=frozen"])
    run_cfg = to_run_config(cfg)
    assert (run_cfg.strategy.name, run_cfg.trainer.epochs, run_cfg.dataset.image_size) == ("frozen", 1, 32)


def test_an_unset_variable_in_a_group_choice_names_the_override_not_hydras_dummy_key(tmp_path, monkeypatch):
    # Seen: `model='${oc.env:MODEL}'` with MODEL unset said "error: _dummy_: KeyError ...", a key no config has.
    from src.gate import precheck

    monkeypatch.delenv("XAG_UNSET", raising=False)
    with pytest.raises(C.ConfigError) as err:
        precheck(["model=${oc.env:XAG_UNSET}", f"paths.output_dir={tmp_path}"])
    assert str(err.value).startswith("model=${oc.env:XAG_UNSET}: KeyError raised while resolving interpolation")
    assert "_dummy_" not in str(err.value) and "XAG_UNSET" in str(err.value).partition(": ")[2]
