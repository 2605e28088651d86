"""The sweeper's own settings (`hydra.sweeper.*`, its sampler's included) are checked before a storage
is opened or a trial trains, each problem one line naming the key: keys added with `+`, the sampler's
keyword arguments against each sampler class Optuna has, seeds, counts, and the re-run seeds. In
process (the checks are plain functions), on the configs Hydra composes."""

from __future__ import annotations

import optuna
import pytest
from omegaconf import OmegaConf

from hydra_plugins.ft_optuna_sweeper import settings
from hydra_plugins.ft_optuna_sweeper.errors import SettingError
from hydra_plugins.ft_optuna_sweeper.optuna_sweeper import OptunaSweeper
from src.search.rerun_settings import check_rerun, search_seeds
from src.sweep_driver import ProjectSweep
from src.gate import compose_train

SAMPLERS = ["tpe", "random", "nsgaii", "motpe", "cmaes", "qmc"]


def _sampler(name: str, *overrides: str) -> dict:
    from omegaconf import OmegaConf

    cfg = compose_train(["hydra/sweeper=optuna", f"hydra/sweeper/sampler={name}", *overrides], return_hydra_config=True)
    return OmegaConf.to_container(cfg.hydra.sweeper.sampler, resolve=True)


def _check(sampler: dict, objectives: list[str] | None = None) -> None:
    settings.check_sampler(sampler, len(objectives or ["val_acc"]))


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_refuses_an_unknown_key_naming_it_and_its_class(name):
    if name == "cmaes":
        pytest.importorskip("cmaes")
    with pytest.raises(SettingError, match=r"^hydra\.sweeper\.sampler\.bogus is not a setting of \w+Sampler \(allowed: .*seed"):
        _check(_sampler(name, "+hydra.sweeper.sampler.bogus=1"))


@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.parametrize("seed, says", [(-1, "must be in 0..4294967295"), (2**32, "must be in 0..4294967295"),
                                        (True, "must be int or null"), (1.5, "must be int or null"),
                                        ("abc", "must be int or null")])
def test_every_sampler_refuses_a_seed_numpy_cannot_take(name, seed, says):
    if name == "cmaes":
        pytest.importorskip("cmaes")
    sampler = _sampler(name) | {"seed": seed}
    with pytest.raises(SettingError, match=rf"^hydra\.sweeper\.sampler\.seed={seed!r}".replace("(", r"\(") + ".*" + says):
        _check(sampler)


@pytest.mark.parametrize("name", ["tpe", "random", "nsgaii", "motpe", "qmc"])
def test_every_sampler_config_as_composed_is_accepted_and_built(name):
    sampler = _sampler(name, "hydra.sweeper.sampler.seed=4294967295")
    _check(sampler, ["val_acc", "train_flops"])


@pytest.mark.parametrize("name, key, value, says", [
    ("tpe", "n_startup_trials", -1, "must be >= 0"),
    ("tpe", "n_ei_candidates", 0, "must be >= 1"),
    ("tpe", "prior_weight", "abc", "must be float or null"),
    ("tpe", "prior_weight", 0.0, "must be > 0"),
    ("tpe", "multivariate", "yes", "must be bool or null"),
    ("tpe", "gamma", "abc", "a config gives as a mapping with _target_"),
    ("motpe", "n_ei_candidates", True, "must be int"),
    ("nsgaii", "population_size", 1, "must be >= 2"),
    ("nsgaii", "crossover_prob", 1.5, r"must be in \[0, 1\]"),
    ("nsgaii", "mutation_prob", -0.1, r"must be in \[0, 1\]"),
    ("nsgaii", "crossover", "uniform", "a config gives as a mapping with _target_"),
])
def test_bad_sampler_values_are_one_line_naming_the_key(name, key, value, says):
    with pytest.raises(SettingError, match=rf"^hydra\.sweeper\.sampler\.{key}.*{says}"):
        _check(_sampler(name) | {key: value})


def test_a_sampler_object_given_by_its_own_target_is_built():
    sampler = _sampler("nsgaii") | {"crossover": {"_target_": "optuna.samplers.nsgaii.BLXAlphaCrossover"}}
    _check(sampler, ["val_acc", "train_flops"])


def test_whatever_optuna_refuses_when_built_is_one_line_naming_the_sampler():
    # QMCSampler checks qmc_type only when built: the message is Optuna's, the key ours
    sampler = {"_target_": "optuna.samplers.QMCSampler", "qmc_type": "nosuch"}
    with pytest.raises(SettingError, match=r"^hydra\.sweeper\.sampler \(QMCSampler\): .*nosuch"):
        _check(sampler)


@pytest.mark.parametrize("target, says", [
    ("optuna.samplers.NoSuchSampler", "cannot be imported"),
    ("optuna.pruners.MedianPruner", "is not an Optuna sampler"),
    ("nosuchmodule.Sampler", "cannot be imported"),
    (None, "must name an Optuna sampler class"),
])
def test_a_target_that_is_no_sampler_is_refused(target, says):
    with pytest.raises(SettingError, match=rf"^hydra\.sweeper\.sampler\._target_=.*{says}"):
        _check({"_target_": target})


def test_grid_is_checked_like_any_sampler_and_cmaes_is_refused_by_name():
    _check(_sampler("grid"))  # built later, from the space; src.train's driver refuses it (test_hydra_sweeper)
    with pytest.raises(SettingError, match=r"^hydra\.sweeper\.sampler\.search_space is not a setting of GridSampler"):
        _check(_sampler("grid") | {"search_space": {"x": [1]}})
    with pytest.raises(SettingError, match="hydra/sweeper/sampler=cmaes (optimises one objective|needs the cmaes package)"):
        _check(_sampler("cmaes"), ["val_acc", "train_flops"])


def test_unknown_sweeper_keys_and_bad_counts_are_named():
    with pytest.raises(SettingError, match=r"^hydra\.sweeper\.bogus is not a setting of hydra/sweeper=optuna \(allowed: .*n_trials"):
        settings.check_unknown({"bogus": 1}, ["n_trials", "storage"])
    good = {"n_trials": 2, "n_jobs": 1, "max_failed": 0, "heartbeat_s": 1, "grace_s": 2}
    settings.check_numbers(good)
    for key, value, says in (("n_trials", True, "must be an integer"), ("n_jobs", 1.5, "must be an integer"),
                             ("n_trials", 0, "must be >= 1"), ("max_failed", -1, "must be >= 0"),
                             ("grace_s", 1, "must be longer than hydra.sweeper.heartbeat_s=1")):
        with pytest.raises(SettingError, match=rf"^hydra\.sweeper\.{key}={value!r}.*{says}"):
            settings.check_numbers(good | {key: value})
    for key in ("storage", "study_name"):
        for value in ("", "  ", 5):
            with pytest.raises(SettingError, match=rf"^hydra\.sweeper\.{key}={value!r} must be a non-empty string"):
                settings.check_names(**{"storage": None, "study_name": None, key: value})


@pytest.mark.parametrize("seeds, says", [
    ([1, 2, 1], "seed 1 is given twice"),
    ([-1], "-1 is not a seed"),
    ([2**32], f"{2**32} is not a seed"),
    ([True], "True is not a seed"),
    ([1.0], "1.0 is not a seed"),
    (["1"], "'1' is not a seed"),
    (5, "must be a list of seeds"),
    ([3, 0], "seed 0 is the seed the search trained with"),
])
def test_rerun_seeds_that_cannot_give_independent_runs_are_refused(seeds, says):
    with pytest.raises(SettingError, match=r"^hydra\.sweeper\.rerun_seeds" + ".*" + says.replace("(", r"\(")):
        check_rerun(seeds, [], {0}, ["optim.lr"])


def test_rerun_seeds_against_a_searched_seed_and_rerun_overrides_that_would_be_ignored():
    searched = search_seeds(0, {"seed": {"type": "int", "low": 10, "high": 20, "step": 5}})
    assert list(searched) == [10, 15, 20]
    assert check_rerun([0, 11], [], searched, ["seed"]) == [0, 11]
    with pytest.raises(SettingError, match="seed 15 is the seed the search trained with"):
        check_rerun([15], [], searched, ["seed"])
    assert search_seeds(7, {"seed": {"type": "categorical", "choices": [1, 2]}}) == {1, 2}
    with pytest.raises(SettingError, match=r"^hydra\.sweeper\.rerun_overrides: seed=3: .*hydra\.sweeper\.rerun_seeds"):
        check_rerun([1], ["seed=3"], {0}, [])
    with pytest.raises(SettingError, match=r"^hydra\.sweeper\.rerun_overrides: optim\.lr=0\.1: optim\.lr is searched"):
        check_rerun([1], ["trainer.epochs=3", "optim.lr=0.1"], {0}, ["optim.lr"])
    with pytest.raises(SettingError, match=r"^hydra\.sweeper\.rerun_overrides=.*must be a list"):
        check_rerun([1], "trainer.epochs=3", {0}, [])


def test_a_seeded_sampler_moved_on_by_the_trials_stays_in_numpy_s_range():
    study = optuna.create_study()
    for _ in range(3):
        study.tell(study.ask(), 1.0)
    sweeper = ProjectSweep(OptunaSweeper(sampler=None, direction=None, objectives=["val_acc"], storage=None, study_name=None,
                                         n_trials=1, n_jobs=1, max_failed=0, heartbeat_s=1, grace_s=2, pruner=None, params=None))
    seeded = sweeper._seeded({"_target_": "optuna.samplers.TPESampler", "seed": 2**32 - 1}, study)
    assert seeded["seed"] == 2  # (2**32 - 1 + 3) mod 2**32
    optuna.samplers.TPESampler(seed=seeded["seed"])


def test_an_override_hydra_cannot_parse_is_named(tmp_path, monkeypatch):
    """Hydra's grammar error alone ("no viable alternative at input '[seed='") names no key."""
    from src.gate import precheck

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SettingError, match=r"^hydra\.sweeper\.rerun_overrides=\[seed=3\]: no viable alternative"):
        precheck(["-m", "sweep=default", "hydra.sweeper.rerun_overrides=[seed=3]"])


def test_unquoted_rerun_overrides_are_refused_with_the_quoted_form_that_works(tmp_path, monkeypatch):
    """`rerun_overrides=[trainer.epochs=3]` (as the docs once showed) cannot be parsed: the line says how to quote it,
    and the form it shows is accepted."""
    from src.gate import precheck

    monkeypatch.chdir(tmp_path)
    works = '\'hydra.sweeper.rerun_overrides=["trainer.epochs=3","optim.warmup_epochs=0"]\''
    with pytest.raises(SettingError) as err:
        precheck(["-m", "sweep=default", "hydra.sweeper.rerun_overrides=[trainer.epochs=3,optim.warmup_epochs=0]"])
    assert str(err.value).endswith(f"; quote each override, and the whole argument for the shell: {works}")
    precheck(["-m", "sweep=default", works.strip("'")])


def test_groups_in_a_command_line_range_is_refused_saying_where_it_is_read(tmp_path, monkeypatch):
    """README once showed `strategy.unfreeze_depth=range(0,groups)` on the command line, which Hydra's
    grammar cannot evaluate: the line says to give the number there; the number works."""
    from src.gate import precheck

    monkeypatch.chdir(tmp_path)
    for value in ("range(0,groups)", "interval(1, groups)"):
        with pytest.raises(SettingError) as err:
            precheck(["-m", "hydra/sweeper=optuna", f"strategy.unfreeze_depth={value}"])
        line = str(err.value)
        assert "\n" not in line and "read only in a preset's hydra.sweeper.params" in line and "range(0,8)" in line
    precheck(["-m", "hydra/sweeper=optuna", "strategy.unfreeze_depth=range(0,8)"])


SWEEP = ["sweep=default", "dataset=digits"]


@pytest.mark.parametrize("key,value", [("strategy.lr_decay", 1.05), ("strategy.lr_decay", 4), ("optim.lr", 3e-3),
                                       ("strategy.unfreeze_depth", 8), ("strategy.unfreeze_every", 2),
                                       ("dataset.image_size", 96), ("trainer.epochs", 3), ("seed", 7)])
def test_a_searched_number_set_on_the_composed_base_is_the_config_composing_gives(key, value):
    """check_space sets each end of a numeric range on the base composition instead of composing
    again: the training config must be exactly the one `key=value` composes to."""
    from src.gate import check_overrides, to_run_config
    from src.search.space import with_value

    base = check_overrides(SWEEP)
    before = OmegaConf.to_yaml(base)
    assert to_run_config(with_value(base, key, value)) == to_run_config(check_overrides(SWEEP + [f"{key}={value}"]))
    assert OmegaConf.to_yaml(base) == before  # set on a copy


@pytest.mark.parametrize("key,value", [("strategy", 1), ("optim.lrr", 0.1), ("optim", 0.1), ("optim.lr", "0.1"),
                                       ("trainer.count_flops", True), ("strategy.unfreeze_depth", 1.5)])
def test_what_is_not_a_number_at_a_known_value_is_composed(key, value):
    from src.gate import check_overrides
    from src.search.space import with_value

    assert with_value(check_overrides(SWEEP), key, value) is None


def test_a_bad_end_of_a_numeric_range_is_refused_in_the_words_composing_gives():
    from src.config import ConfigError
    from src.gate import check_overrides, to_run_config
    from src.search.space import with_value, check_space

    space = {"strategy.lr_decay": {"type": "float", "low": -1.0, "high": 2.0}}
    with pytest.raises(ConfigError) as composed:
        check_space(space, SWEEP, 8)
    with pytest.raises(ConfigError) as set_on_base:
        check_space(space, SWEEP, 8, check_overrides(SWEEP))
    assert str(set_on_base.value) == str(composed.value)
    assert str(composed.value).startswith("hydra.sweeper.params.strategy.lr_decay: strategy.lr_decay=-1.0 must be")
    with pytest.raises(ConfigError):
        to_run_config(with_value(check_overrides(SWEEP), "strategy.lr_decay", -1.0))


@pytest.mark.parametrize("override, line", [
    ("hydra.sweeper.params.optim.lr=interval(0.001,0.1)", "hydra.sweeper.params.optim.lr=interval(0.001,0.1): Hydra cannot "
     "sweep over its own hydra.* settings: give the searched key itself, 'optim.lr=interval(0.001,0.1)'"),
    ("+hydra.sweeper.params.seed=choice(0,1)", "+hydra.sweeper.params.seed=choice(0,1): Hydra cannot sweep over its own "
     "hydra.* settings: give the searched key itself, 'seed=choice(0,1)'"),
    ("hydra.verbose=true,false", "hydra.verbose=true,false: Hydra cannot sweep over its own hydra.* settings"),
])
def test_a_sweep_over_a_hydra_key_is_one_line_before_anything(override, line, tmp_path):
    # Hydra refused it only after the gate, in 3 lines ("Sweeping over Hydra's configuration is not
    # supported"), exit 1.
    from src.config import ConfigError
    from src.gate import precheck

    with pytest.raises(ConfigError) as err:
        precheck(["-m", "sweep=default", "experiment=smoke", override, f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    assert str(err.value) == line and not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("storage", ["nosuchdb://host/db", "journal:{tmp}/no such folder/study.log"])
def test_a_storage_that_cannot_be_opened_leaves_no_empty_sweep_folder(storage, tmp_path, monkeypatch, capsys):
    # The sweep folder was made for the default storage before the given one was opened: a refused
    # storage left an empty hydra.sweep.dir (or sweeps-out/STUDY) behind.
    import sys

    from src import train

    out = tmp_path / "sweep"
    argv = ["-m", "sweep=default", "experiment=smoke", "hydra.sweeper.n_trials=1", f"hydra.sweep.dir={out}",
            f"hydra.sweeper.storage={storage.format(tmp=tmp_path)}"]
    monkeypatch.setattr(sys, "argv", ["src.train", *argv])
    with pytest.raises(SystemExit) as stop:
        train.cli(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and err[0].startswith("error: hydra.sweeper.storage="), err
    assert not out.exists()
