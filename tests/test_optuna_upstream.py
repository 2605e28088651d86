"""hydra/sweeper=optuna for any Hydra app, case by case against hydra-optuna-sweeper 1.3's own test suite
(facebookresearch/hydra, plugins/hydra_optuna_sweeper/tests/ and example/ at tag v1.3.2), on Optuna 5.

Each `test_upstream_<case>` checks what the upstream case of that name checks, with tiny apps of our own
(tests/apps/). The apps run in this process (Hydra's basic launcher), a few trials each. Deliberate
differences from 1.3 are said where they show (docs/sweeps.md lists them all).
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hydra_plugins.ft_optuna_sweeper._search import space_from_config
from hydra_plugins.ft_optuna_sweeper.optuna_sweeper import OptunaSweeper
from hydra_plugins.ft_optuna_sweeper.space import distribution, param_spec, spec_from_config, split_space
from tests.test_sweep import postgres_url  # noqa: F401  (a fixture: a throw-away PostgreSQL server)

APPS = Path(__file__).parent / "apps"


def multirun(monkeypatch, app: str, *args: str) -> int:
    """`python <app> -m <args>` in this process; its exit code (Hydra ends a failed run with SystemExit(1))."""
    main = getattr(importlib.import_module(f"tests.apps.{app}"), _MAIN[app])
    monkeypatch.setattr(sys, "argv", [app, "-m", *args])
    try:
        main()
    except SystemExit as err:
        return int(err.code or 0)
    return 0


_MAIN = {"sphere.sphere": "sphere", "pareto.binh_korn": "binh_korn", "custom_space.app": "sphere4",
         "epochs.app": "train", "hparams.train": "train", "returns.app": "main", "typed.app": "main",
         "reports.app": "main", "values.app": "main"}


def results(sweep_dir: Path) -> dict:
    return OmegaConf.to_container(OmegaConf.load(sweep_dir / "optimization_results.yaml"))


# --- discovery and distributions (upstream: test_discovery, test_create_optuna_distribution_from_*) ------

def test_upstream_discovery():
    # Hydra's scan executes the module again, so the class it finds is named alike, not the same object
    found = [f"{p.__module__}.{p.__name__}" for p in Plugins.instance().discover(Sweeper)]
    assert f"{OptunaSweeper.__module__}.OptunaSweeper" in found


@pytest.mark.parametrize("given, expected", [
    ({"type": "categorical", "choices": [1, 2, 3]}, CategoricalDistribution([1, 2, 3])),
    ({"type": "int", "low": 0, "high": 10}, IntDistribution(0, 10)),
    ({"type": "int", "low": 0, "high": 10, "step": 2}, IntDistribution(0, 10, step=2)),
    ({"type": "int", "low": 0, "high": 5}, IntDistribution(0, 5)),
    ({"type": "int", "low": 1, "high": 100, "log": True}, IntDistribution(1, 100, log=True)),
    ({"type": "float", "low": 0, "high": 1}, FloatDistribution(0, 1)),
    ({"type": "float", "low": 0, "high": 10, "step": 2}, FloatDistribution(0, 10, step=2)),
    ({"type": "float", "low": 1, "high": 100, "log": True}, FloatDistribution(1, 100, log=True)),
])
def test_upstream_create_optuna_distribution_from_config(given, expected):
    """1.3's IntUniform/IntLogUniform/Uniform/DiscreteUniform/LogUniform are Optuna 5's Int/FloatDistribution."""
    assert distribution(spec_from_config("key", given)) == expected


@pytest.mark.parametrize("text, expected", [
    ("key=choice(1,2)", CategoricalDistribution([1, 2])),
    ("key=choice(true, false)", CategoricalDistribution([True, False])),
    ("key=choice('hello', 'world')", CategoricalDistribution(["hello", "world"])),
    ("key=shuffle(range(1,3))", CategoricalDistribution([1, 2])),
    ("key=range(1,3)", IntDistribution(1, 3)),
    ("key=interval(1, 5)", FloatDistribution(1, 5)),
    ("key=int(interval(1, 5))", IntDistribution(1, 5)),
    ("key=tag(log, interval(1, 5))", FloatDistribution(1, 5, log=True)),
    ("key=tag(log, int(interval(1, 5)))", IntDistribution(1, 5, log=True)),
    ("key=range(0.5, 5.5, step=1)", FloatDistribution(0.5, 5.5, step=1)),
])
def test_upstream_create_optuna_distribution_from_override(text, expected):
    override = OverridesParser.create().parse_overrides([text])[0]
    actual = distribution(param_spec(override, text))
    if isinstance(expected, CategoricalDistribution):  # shuffle() may reorder the choices
        assert isinstance(actual, CategoricalDistribution) and set(actual.choices) == set(expected.choices)
    else:
        assert actual == expected


@pytest.mark.parametrize("given, swept, fixed", [
    (["key=choice(1,2)"], {"key": CategoricalDistribution([1, 2])}, []),
    (["key=5"], {}, ["key=5"]),
    (["key1=choice(1,2)", "key2=5"], {"key1": CategoricalDistribution([1, 2])}, ["key2=5"]),
    (["key1=choice(1,2)", "key2=5", "key3=range(1,3)"],
     {"key1": CategoricalDistribution([1, 2]), "key3": IntDistribution(1, 3)}, ["key2=5"]),
    # 1.3: a key both swept and fixed is fixed, in either order
    (["key=choice(1,2)", "key=5"], {}, ["key=5"]),
    (["key=5", "key=choice(1,2)"], {}, ["key=5"]),
])
def test_upstream_create_params_from_overrides(given, swept, fixed):
    params, got_fixed = split_space(given)
    assert {k: distribution(v) for k, v in params.items()} == swept and got_fixed == fixed


# --- the deprecated search_space (upstream: test_warnings, test_example_with_deprecated_search_space) ----

@pytest.mark.parametrize("search_space, params, says", [
    (None, None, None),
    ({}, {}, r"Both hydra.sweeper.params and hydra.sweeper.search_space are configured"),
    ({}, None, r"`hydra.sweeper.search_space` is deprecated and will be removed in the next major release"),
    (None, {}, None),
])
def test_upstream_warnings(search_space, params, says):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        space_from_config(search_space, params)
    said = [str(w.message) for w in seen if issubclass(w.category, UserWarning)]
    if says is None:
        assert said == []
    else:
        assert len(said) == 1 and pytest.importorskip("re").search(says, said[0])


def test_upstream_example_with_deprecated_search_space(tmp_path, monkeypatch):
    with pytest.warns(UserWarning, match="search_space` is deprecated"):
        code = multirun(monkeypatch, "sphere.sphere", f"--config-dir={APPS / 'sphere' / 'more'}",
                        "--config-name=old_space", f"hydra.sweep.dir={tmp_path}")
    found = results(tmp_path)
    assert code == 0 and found["name"] == "optuna"
    x = found["best_params"]["x"]
    assert -4.5 <= x <= 4.5 and (x * 2) == int(x * 2)  # on the step of 0.5
    assert found["best_value"] == pytest.approx(x * x + 1)  # y stays 1: only x is in the space


# --- the examples: sphere, grid, multi-objective, custom search space ------------------------------------

def test_upstream_launch_jobs(tmp_path, monkeypatch):
    """8 trials in batches of 3 (3, 3, 2) through the basic launcher; each job numbered by its trial."""
    code = multirun(monkeypatch, "sphere.sphere", "hydra/launcher=basic", "hydra.sweeper.n_trials=8",
                    "hydra.sweeper.n_jobs=3", f"hydra.sweep.dir={tmp_path}")
    assert code == 0
    assert sorted(int(p.name) for p in tmp_path.iterdir() if p.is_dir()) == list(range(8))
    assert results(tmp_path)["best_value"] is not None


# without the command line (8-10 s) with the slow tier: the fast one sweeps the same example from it
@pytest.mark.parametrize("with_commandline", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_upstream_optuna_example(tmp_path, monkeypatch, with_commandline):
    storage = f"sqlite:///{tmp_path / 'test.db'}"
    args = [f"hydra.sweep.dir={tmp_path / 'out'}", "hydra.job.chdir=True", "hydra.sweeper.n_trials=20",
            "hydra.sweeper.n_jobs=1", f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=example",
            "hydra/sweeper/sampler=tpe", "hydra.sweeper.sampler.seed=123", "~z"]
    if with_commandline:
        args += ["x=choice(0, 1, 2)", "y=0"]  # y fixed: it wins over hydra.sweeper.params' choice
    assert multirun(monkeypatch, "sphere.sphere", *args) == 0
    found = results(tmp_path / "out")
    best = optuna.load_study(study_name="example", storage=storage).best_trial
    assert found["name"] == "optuna" and found["best_params"]["x"] == best.params["x"]
    assert found["best_value"] == best.value
    if with_commandline:
        assert "y" not in found["best_params"] and "y" not in best.params and best.user_attrs["y"] == "0"
        assert found["best_value"] == 0.0  # x=0 is among 3 choices in 20 trials
    else:
        assert found["best_params"]["y"] == best.params["y"]
        assert found["best_value"] <= 2.27  # upstream's bound for TPE on this space


@pytest.mark.parametrize("n_trials", [20, 10, 1])
def test_upstream_example_with_grid_sampler(tmp_path, monkeypatch, n_trials):
    """Deliberate difference: a range's stop is on the grid (1.3 left it off: y in {-1, 0} there), so the
    grid is 2 x 3 x 2 = 12 points, and n_trials is cut to 12."""
    storage = f"sqlite:///{tmp_path / 'test.db'}"
    code = multirun(monkeypatch, "sphere.sphere", f"--config-dir={APPS / 'sphere' / 'more'}", "--config-name=grid",
                    f"hydra.sweep.dir={tmp_path / 'out'}", f"hydra.sweeper.n_trials={n_trials}",
                    f"hydra.sweeper.storage={storage}")
    assert code == 0
    found = results(tmp_path / "out")
    best = found["best_params"]
    trials = optuna.load_study(study_name="grid", storage=storage).trials
    assert len(trials) == min(n_trials, 12)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == len(trials)  # no grid point twice
    if n_trials >= 10:  # 10 of 12 points miss at most 2 of the 4 with y=0
        assert found["best_value"] == 1 and abs(best["x"]) == 1 and best["y"] == 0
    else:
        assert best["x"] in (-1, 1) and best["y"] in (-1.0, 0.0, 1.0)
    assert best["z"] in ("a", "b")


@pytest.mark.parametrize("with_commandline", [True, False])
def test_upstream_optuna_multi_objective_example(tmp_path, monkeypatch, with_commandline):
    args = [f"hydra.sweep.dir={tmp_path}", "hydra.job.chdir=True", "hydra/sweeper/sampler=random",
            "hydra.sweeper.sampler.seed=123"]
    if with_commandline:
        args += ["x=range(0, 5)", "y=range(0, 3)"]
    assert multirun(monkeypatch, "pareto.binh_korn", *args) == 0
    found = results(tmp_path)
    assert found["name"] == "optuna" and found["solutions"]
    step = 1 if with_commandline else 0.5
    for a in found["solutions"]:
        assert a["params"]["x"] % step == 0 and a["params"]["y"] % step == 0
        assert len(a["values"]) == 2
        for b in found["solutions"]:  # no solution dominates another
            assert not (all(u <= v for u, v in zip(a["values"], b["values"])) and a["values"] != b["values"])


def test_nsgaii_with_its_optuna_5_settings_sweeps_two_objectives(tmp_path, monkeypatch):
    assert multirun(monkeypatch, "pareto.binh_korn", f"hydra.sweep.dir={tmp_path}", "hydra.sweeper.n_trials=12",
                    "hydra.sweeper.sampler.population_size=4", "hydra.sweeper.sampler.crossover_prob=0.8") == 0
    assert results(tmp_path)["solutions"]


def test_upstream_optuna_custom_search_space_example(tmp_path, monkeypatch):
    assert multirun(monkeypatch, "custom_space.app", f"hydra.sweep.dir={tmp_path}", "hydra.job.chdir=True",
                    "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=123", "max_gap=0.3") == 0
    best = results(tmp_path)["best_params"]
    assert abs(best["x"] - best["z"]) <= 0.3 and 0 <= best["+w"] <= 1


# --- failures (upstream: test_failure_rate) ----------------------------------------------------------------

@pytest.mark.parametrize("max_failure_rate", [0.5, 1.0])
def test_upstream_failure_rate(tmp_path, monkeypatch, capsys, max_failure_rate):
    storage = f"sqlite:///{tmp_path / 'test.db'}"
    code = multirun(monkeypatch, "sphere.sphere", f"hydra.sweep.dir={tmp_path / 'out'}", "hydra.sweeper.n_trials=6",
                    "hydra.sweeper.n_jobs=2", "hydra/sweeper/sampler=random", f"hydra.sweeper.storage={storage}",
                    f"hydra.sweeper.max_failure_rate={max_failure_rate}", "fail=true")
    says = "RuntimeError: the sphere app was told to fail"
    states = [t.state.name for t in optuna.load_study(study_name="sphere", storage=storage).trials]
    if max_failure_rate < 1.0:  # the first batch fails whole: the sweep stops with the job's own error
        assert code == 1 and says in capsys.readouterr().err and states == ["FAIL", "FAIL"]
    else:
        assert code == 0 and says not in capsys.readouterr().err and states == ["FAIL"] * 6
        assert results(tmp_path / "out")["best_value"] is None  # 1.3 crashed here on study.best_trial



@pytest.mark.parametrize("returns, directions, says", [
    ("dict", "[minimize,minimize]", "the task returned {'loss': 1.0, 'cost': 2.0}, not a sequence of 2 numbers "
                                    "(hydra.sweeper.direction has 2 directions)"),
    ("number", "[minimize,maximize]", "the task returned 1.0, not a sequence of 2 numbers"),
    ("pair", "minimize", "the task returned (1.0, 2.0), not a number (hydra.sweeper.direction has one direction)"),
    ("three", "[minimize,minimize]", "the task returned 3 values, not a sequence of 2 numbers"),
    ("none", "minimize", "the task returned None, not a number"),
    ("a_nan", "minimize", "the task returned nan: NaN is no objective value"),
])
def test_a_return_value_that_is_no_objective_fails_the_trial_and_ends_the_sweep_in_a_line(
        tmp_path, monkeypatch, capsys, returns, directions, says):
    """A job that ended well but returned no objective for the directions. Before: the sweep ended in a
    traceback whose last line, `RuntimeError: trial failed: [overrides]`, said not why; and a NaN was
    recorded FAIL by Optuna unsaid, never counted against max_failure_rate, the sweep exit 0."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    storage = f"sqlite:///{tmp_path / 'r.db'}"
    code = multirun(monkeypatch, "returns.app", "hydra/sweeper=optuna", f"hydra.sweep.dir={tmp_path / 'out'}",
                    f"+returns={returns}",
                    "+x=interval(0,1)", f"hydra.sweeper.direction={directions}", "hydra.sweeper.n_trials=2",
                    "hydra.sweeper.n_jobs=1", f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=r")
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and not line.startswith("[")]
    assert code == 2 and len(err) == 1 and err[0].startswith("error: trial 0 (+x=") and says in err[0], err
    assert [t.state.name for t in optuna.load_study(study_name="r", storage=storage).trials] == ["FAIL"]


def test_a_nan_counts_against_max_failure_rate_like_any_failed_trial(tmp_path, monkeypatch, capsys):
    code = multirun(monkeypatch, "returns.app", "hydra/sweeper=optuna", f"hydra.sweep.dir={tmp_path}", "+returns=a_nan",
                    "+x=interval(0,1)",
                    "hydra.sweeper.n_trials=2", "hydra.sweeper.max_failure_rate=1.0")
    assert code == 0 and results(tmp_path)["best_value"] is None
    assert "trial 1 failed: the task returned nan: NaN is no objective value" in capsys.readouterr().out


@pytest.mark.parametrize("override, says", [
    ("hydra.sweeper.direction=maximize", "hydra.sweeper.direction=maximize: study sphere in sqlite:///"),
    ("x=choice(1,2)", "x: study sphere in sqlite:///"),
    ("y=interval(-4,4)", "y: study sphere in sqlite:///"),
    ("x=tag(log,interval(0.5,4.5))", "Cannot set different log configuration"),
])
def test_a_stored_study_resumed_to_measure_something_else_is_refused_in_one_line(tmp_path, monkeypatch, capsys,
                                                                                override, says):
    """The same storage and study name, resumed with the other direction or a key swept as another kind.
    Before: a direction was ignored unsaid (Optuna keeps the study's; "best" was the other end) and a
    key's other kind was a traceback when the first trial asked for it, leaving failed trials in the study."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    storage = f"sqlite:///{tmp_path / 's.db'}"
    common = [f"hydra.sweeper.storage={storage}", "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={tmp_path / 'out'}"]
    assert multirun(monkeypatch, "sphere.sphere", *common) == 0
    capsys.readouterr()
    code = multirun(monkeypatch, "sphere.sphere", *common, override)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and not line.startswith("[")]
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and says in err[0], err
    assert "hydra.sweeper.study_name" in err[0]
    study = optuna.load_study(study_name="sphere", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 2 and study.direction.name == "MINIMIZE"
    assert multirun(monkeypatch, "sphere.sphere", *common, "x=range(-2,2,step=0.5)") == 0  # new bounds, same kind


@pytest.mark.parametrize("override, says", [
    ("missing=interval(0,1)", "Could not override 'missing'; To append to your config use +missing=0.0; Key 'missing' not in 'Config'"),
    ("optim.steps=interval(1.5,9)", "Error merging override optim.steps=1.5; Value '1.5' of type 'float' could not be converted to Integer"),
    ("optim.steps=choice(2,many)", "Value 'many' of type 'str' could not be converted to Integer"),
    ("model=choice(small,nope)", "Could not find 'model/nope'; Available options in 'model'; big; small"),
    ("hydra.sweeper.params.model='choice(small,huge)'", "Could not find 'model/huge'"),
])
def test_a_search_space_that_does_not_compose_with_the_app_s_config_is_one_line_before_any_trial(
        tmp_path, monkeypatch, capsys, override, says):
    """A key the config lacks, a value its schema's type refuses, a config group option that does not
    exist: each end of a range and each choice is composed first. Before: trials started, each failed
    at compose with Hydra's several lines and exit 1, and a stored study kept the failed trials."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    code = multirun(monkeypatch, "typed.app", f"hydra.sweep.dir={tmp_path / 'out'}", override,
                    f"hydra.sweeper.storage=sqlite:///{tmp_path / 's.db'}")
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and not line.startswith("[")]
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: the search space does not compose with this app's config at ") and says in err[0], err
    assert not (tmp_path / "out").exists() and not (tmp_path / "s.db").exists()  # no trial, no study


def test_a_typed_app_with_a_config_group_swept_runs(tmp_path, monkeypatch):
    assert multirun(monkeypatch, "typed.app", f"hydra.sweep.dir={tmp_path}", "optim.steps=range(1,3)") == 0
    assert results(tmp_path)["best_params"]["model"] in ("small", "big")


@pytest.mark.parametrize("hook, says", [
    ("tests.apps.custom_space.app.nope", "=tests.apps.custom_space.app.nope: no such function"),
    ("tests.apps.nowhere.near_x", "=tests.apps.nowhere.near_x: no such function"),
    ("tests.apps.custom_space.app.sphere4", "=tests.apps.custom_space.app.sphere4 must take (cfg, trial), not "),
])
def test_a_custom_search_space_that_cannot_be_called_is_one_line_before_any_trial(tmp_path, monkeypatch, capsys,
                                                                                 hook, says):
    """Before: Hydra's get_method failed when the first trial was asked, a 45-line traceback and exit 1
    (and its own error logged besides); a function of the wrong arity failed every trial."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    code = multirun(monkeypatch, "custom_space.app", f"hydra.sweep.dir={tmp_path}",
                    f"hydra.sweeper.custom_search_space={hook}")
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if line.strip() and not line.startswith("[")]
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: hydra.sweeper.custom_search_space{says}"), err
    assert "Error getting callable" not in captured.out
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]  # no trial ran


@pytest.mark.parametrize("storage", ["sqlite:///${hydra.sweep.dir}/optuna.db", "journal:${hydra.sweep.dir}/studies/s.log"])
def test_a_storage_in_the_sweep_folder_is_made_with_it(tmp_path, monkeypatch, storage):
    """The study beside its trials, as src.train keeps it. Before: refused, 'folder .../out does not
    exist', since the sweep folder is made only once the sweep starts. A folder elsewhere is still
    refused (test_a_bad_setting_for_any_app_...)."""
    assert multirun(monkeypatch, "sphere.sphere", f"hydra.sweep.dir={tmp_path / 'out'}", f"hydra.sweeper.storage={storage}",
                    "hydra.sweeper.n_trials=2") == 0
    url = storage.replace("${hydra.sweep.dir}", str(tmp_path / "out"))
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        url = optuna.storages.JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    assert [t.state.name for t in optuna.load_study(study_name="sphere", storage=url).trials] == ["COMPLETE"] * 2


def test_the_results_file_is_written_whole_as_a_new_file(tmp_path, monkeypatch):
    """optimization_results.yaml was rewritten in place: two workers of one study ending in one sweep
    folder wrote into the same open file, and a hard link to the last sweep's file (a `cp -al` or
    rsync --link-dest snapshot) was overwritten with it. Now a temp file renamed over it, as
    optuna_study.yaml is: the snapshot keeps its version, the folder gets the new one, no temp is left."""
    out = tmp_path / "out"
    args = [f"hydra.sweep.dir={out}", "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage=sqlite:///{tmp_path / 's.db'}"]
    assert multirun(monkeypatch, "sphere.sphere", *args) == 0
    before = (out / "optimization_results.yaml").read_text()
    os.link(out / "optimization_results.yaml", tmp_path / "snapshot.yaml")
    assert multirun(monkeypatch, "sphere.sphere", *args, "hydra.sweeper.n_trials=3") == 0
    assert (tmp_path / "snapshot.yaml").read_text() == before
    assert results(out)["best_value"] == min(t.value for t in optuna.load_study(
        study_name="sphere", storage=f"sqlite:///{tmp_path / 's.db'}").trials)
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == ["optimization_results.yaml", "optuna_study.yaml"]


def test_a_database_password_is_not_logged(tmp_path, monkeypatch, capsys, postgres_url):
    """Before: the sweeper's first line, `study NAME (minimize) in <storage>`, printed hydra.sweeper.storage
    whole, password included, where every other line of the plugin leaves it out."""
    url = postgres_url.replace("postgres@", "postgres:s3cret-pw@")  # trust: any password
    assert multirun(monkeypatch, "sphere.sphere", f"hydra.sweep.dir={tmp_path}", f"hydra.sweeper.storage={url}",
                    "hydra.sweeper.n_trials=2", "hydra.sweeper.study_name=pw") == 0
    said = capsys.readouterr()
    # the URL as Optuna's own readers open it, less its password (libpq reads PGPASSWORD or ~/.pgpass)
    assert f"study pw (minimize) in {postgres_url.split('@')[0]}@127.0.0.1:" in said.out
    assert "s3cret-pw" not in said.out + said.err


def test_glob_sweeps_a_config_group_s_options_as_hydra_s_basic_sweeper_lists_them(tmp_path, monkeypatch, capsys):
    """`model=glob(*)`, Hydra's way to sweep every option of a config group. Before: a traceback,
    'HydraException: ConfigLoader is not set', exit 1 (1.3: NotImplementedError)."""
    storage = f"sqlite:///{tmp_path / 'g.db'}"
    assert multirun(monkeypatch, "typed.app", f"hydra.sweep.dir={tmp_path / 'out'}", "model=glob(*)",
                    "hydra.sweeper.n_trials=6", "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=0",
                    f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=g") == 0
    trials = optuna.load_study(study_name="g", storage=storage).trials
    assert trials[0].distributions["model"] == CategoricalDistribution(["big", "small"])
    assert {t.params["model"] for t in trials} == {"big", "small"}
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    capsys.readouterr()
    assert multirun(monkeypatch, "typed.app", f"hydra.sweep.dir={tmp_path / 'no'}", "model=glob(x*)") == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: model=glob(x*): model needs at least one choice"


def test_a_resumed_grid_runs_only_the_points_it_has_not_run(tmp_path, monkeypatch):
    """Before: a stored grid study run again was given n_trials = the grid's size once more, and Optuna's
    GridSampler, its grid exhausted, re-ran finished points (a second invocation of a 4-point grid ran
    4 duplicates). Now a resumed grid runs the points it lacks, and nothing once all are done."""
    storage = f"sqlite:///{tmp_path / 'g.db'}"
    args = ["hydra/sweeper/sampler=grid", "x=choice(1,2)", "y=choice(0,4)", f"hydra.sweeper.storage={storage}",
            f"hydra.sweep.dir={tmp_path / 'out'}"]
    counts = []
    for n_trials in (3, 20, 20):
        assert multirun(monkeypatch, "sphere.sphere", *args, f"hydra.sweeper.n_trials={n_trials}") == 0
        counts.append(len(optuna.load_study(study_name="sphere", storage=storage).trials))
    trials = optuna.load_study(study_name="sphere", storage=storage).trials
    assert counts == [3, 4, 4] and len({tuple(sorted(t.params.items())) for t in trials}) == 4

# --- settings refused in one line ---------------------------------------------------------------------

@pytest.mark.parametrize("override, says", [
    ("+hydra.sweeper.objectives=[val_acc]", "hydra.sweeper.objectives is not a setting for this app"),
    ("hydra.sweeper.worker_index=1", "hydra.sweeper.worker_index is not a setting for this app"),
    ("+hydra.sweeper.bogus=1", "hydra.sweeper.bogus is not a setting of hydra/sweeper=optuna"),
    ("hydra.sweeper.direction=upward", "hydra.sweeper.direction='upward': each must be minimize or maximize"),
    ("hydra.sweeper.direction=[minimize,maximise]", "hydra.sweeper.direction=['minimize', 'maximise']: each must be"),
    ("hydra.sweeper.max_failure_rate=1.5", "hydra.sweeper.max_failure_rate=1.5 must be a number in [0, 1]"),
    ("hydra.sweeper.n_trials=-1", "hydra.sweeper.n_trials=-1 must be an integer >= 1"),
    ("hydra.sweeper.n_jobs=0", "hydra.sweeper.n_jobs=0 must be an integer >= 1"),
    # the sampler changed by its _target_ alone: the group option's keys stay, and the line says where they came from
    ("hydra.sweeper.sampler._target_=optuna.samplers.RandomSampler", "it comes with hydra/sweeper/sampler=nsgaii: select "
     "the sampler as hydra/sweeper/sampler=random, not by its _target_"),
    ("hydra.sweeper.pruner.name=bogus", "hydra.sweeper.pruner.name='bogus' is not allowed"),
    ("hydra.sweeper.pruner.name=median", "hydra.sweeper.pruner.name=median judges one objective, not 2"),
    ("hydra.sweeper.pruner.name=hyperband", "hydra.sweeper.pruner.name=hyperband judges one objective, not 2"),
    ("hydra/sweeper/sampler=cmaes", "cmaes"),
    ("hydra.sweeper.storage=bogus://x", "hydra.sweeper.storage=bogus://x: NoSuchModuleError"),
    ("hydra.sweeper.storage=sqlite:////nonexist/x.db", "hydra.sweeper.storage=sqlite:////nonexist/x.db: folder /nonexist does not exist"),
    ("hydra.sweeper.storage=journal:/nonexist/x.log", "hydra.sweeper.storage=journal:/nonexist/x.log: folder /nonexist"),
    # the search space: Optuna's own "`low <= high` must hold" names no key, and a step of 0 ran as 1
    ("x=interval(5,-5)", "x=interval(5,-5): x's low=5.0 is above its high=-5.0"),
    ("x=range(5,1)", "x=range(5,1): x's low=5 is above its high=1"),
    ("x=tag(log,interval(0,5))", "x on a log scale needs low > 0 (low=0.0)"),
    ("x=range(0,5,0)", "x=range(0,5,0): x's step=0 must be > 0"),
    ("x=shuffle(range(5,1))", "x needs at least one choice"),
    ("hydra.sweeper.params.x='choice()'", "x=choice(): ValueError while evaluating 'choice()': empty choice is not legal"),
])
def test_a_bad_setting_for_any_app_ends_the_sweep_with_a_line_naming_the_key(tmp_path, monkeypatch, capsys, override, says):
    """Before any trial: `error: <the line>` alone on stderr and exit 2, as src.train ends (src/exits.py)."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    code = multirun(monkeypatch, "pareto.binh_korn", f"hydra.sweep.dir={tmp_path}", override)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and not line.startswith("[")]
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and says in err[0], err
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]  # no trial ran


def _stall(tmp_path: Path, *args: str) -> subprocess.Popen:
    """tests/apps/stall in a fresh process, its trials' start marks in tmp_path/marks."""
    from tests.cli import REPO, env

    (tmp_path / "marks").mkdir(exist_ok=True)
    return subprocess.Popen([sys.executable, str(APPS / "stall" / "app.py"), "-m", f"hydra.sweep.dir={tmp_path / 'out'}",
                             f"marks={tmp_path / 'marks'}", f"hydra.sweeper.storage=sqlite:///{tmp_path / 'r1.db'}",
                             "hydra.sweeper.study_name=r1", *args], cwd=REPO,
                            env={k: v for k, v in env().items() if k != "HYDRA_FULL_ERROR"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _signalled_in_trial_1(tmp_path: Path, signum: int, *args: str) -> tuple[subprocess.Popen, str, str]:
    """`_stall` stopped by `signum` once trial 1 has started: the process and its stdout and stderr."""
    proc = _stall(tmp_path, "stall_at=1", *args)
    deadline = time.monotonic() + 60
    while not (tmp_path / "marks" / "1").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    return proc, out, err


@pytest.mark.parametrize("signum, by, code", [(signal.SIGINT, "Ctrl-C", 130), (signal.SIGTERM, "SIGTERM", 143)])
def test_a_signal_during_a_trial_fails_it_as_interrupted_and_a_rerun_continues_the_study(tmp_path, signum, by, code):
    """Ctrl-C or SIGTERM during trial 1 of a stored study: one line and 128 + the signal, trial 1
    FAIL and marked `interrupted` as src.train marks it (not RUNNING for good); the same command
    again continues the study, trial 1's parameters first, and leaves nothing running."""
    proc, out, err = _signalled_in_trial_1(tmp_path, signum)
    said = [line for line in err.splitlines() if line.strip() and not line.startswith("[")]
    assert proc.returncode == code and len(said) == 1, err
    assert said[0].startswith(f"interrupted by {by}: 1 finished trial of study r1 recorded in sqlite:///"), said
    assert "trial 1 stopped, runs again first on resume" in said[0]
    storage = f"sqlite:///{tmp_path / 'r1.db'}"
    trials = optuna.load_study(study_name="r1", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL"] and trials[1].user_attrs["interrupted"] is True

    again = _stall(tmp_path, "hydra.sweeper.n_trials=2")
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    trials = optuna.load_study(study_name="r1", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]  # 1.3: n_trials more each time
    assert trials[2].user_attrs["retry_of"] == 1 and trials[2].params == trials[1].params


def test_a_stop_in_a_batch_keeps_the_trials_of_the_batch_that_ended(tmp_path):
    """n_jobs=2 (1.3's default) with Hydra's basic launcher, which runs a batch's jobs one after another:
    Ctrl-C in trial 1. Before: trial 0 had ended with its value, but the batch was told only once every
    job had ended, so trial 0 was recorded FAIL as interrupted too, its result lost and run again on
    resume. Now each job is told as it ends."""
    proc, out, err = _signalled_in_trial_1(tmp_path, signal.SIGINT, "hydra.sweeper.n_jobs=2")
    assert proc.returncode == 130, err
    trials = optuna.load_study(study_name="r1", storage=f"sqlite:///{tmp_path / 'r1.db'}").trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL"] and trials[0].value == trials[0].params["x"] ** 2
    assert "1 finished trial of study r1" in err and "trial 1 stopped" in err


def test_a_bad_setting_in_another_app_is_one_line_and_exit_2_in_a_fresh_process(tmp_path):
    """What the user sees, Hydra's own printing included (HYDRA_FULL_ERROR unset)."""
    proc = _stall(tmp_path, "x=interval(5,-5)")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and err.strip().splitlines() == ["error: x=interval(5,-5): x's low=5.0 is above its high=-5.0"], err


# --- a lightning-hydra-template `hparams_search` config, and the plugin without this project -------------

def test_a_lightning_hydra_template_hparams_search_config_sweeps_a_tiny_app(tmp_path, monkeypatch):
    """`python train.py hparams_search=sphere_optuna`: hydra.mode MULTIRUN in the config, no -m; the
    sweeper named by 1.3's class path and the sampler by its `_target_` with seed and n_startup_trials,
    as the template's configs do."""
    from tests.apps.hparams.train import train

    monkeypatch.setattr(sys, "argv", ["train.py", "hparams_search=sphere_optuna", f"hydra.sweep.dir={tmp_path}"])
    train()
    found = results(tmp_path)
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 8
    assert found["best_params"]["model.dropout"] == 0.0 and 0.0001 <= found["best_params"]["model.lr"] <= 0.1
    assert found["best_value"] == pytest.approx((found["best_params"]["model.lr"] - 0.01) ** 2)


def test_the_plugin_sweeps_an_app_with_this_project_s_code_out_of_reach(tmp_path):
    """What the distribution in packages/ ships: any app swept, pruned, with `src` unimportable."""
    import subprocess

    from tests.cli import REPO, env

    code = ("import sys; sys.modules['src'] = None\n"  # `import src` raises ImportError from here on
            "from tests.apps.epochs.app import train\n"
            f"sys.argv = ['app', '-m', 'hydra.sweep.dir={tmp_path}', 'hydra.sweeper.n_trials=4']\n"
            "train()\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert results(tmp_path)["best_value"] is not None
    # Hydra's scan reports this project's launcher plugins, which need src; never this plugin
    refused = [line.strip() for line in proc.stderr.splitlines() if line.strip().startswith("Error importing")]
    assert refused and not [line for line in refused if "ft_optuna_sweeper" in line], refused


def test_the_distribution_in_packages_builds_a_wheel_that_sweeps_an_app_alone(tmp_path):
    """packages/hydra-ft-optuna-sweeper: its wheel holds the plugin and nothing of this project, and
    an app swept with only the wheel's code (and hydra-core, omegaconf, optuna) runs, grid sampler included."""
    import shutil
    import subprocess
    import zipfile

    from tests.cli import REPO

    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                            str(tmp_path / "wheel"), str(REPO / "packages" / "hydra-ft-optuna-sweeper")],
                           capture_output=True, text=True, timeout=300)
    for left in ("build", "hydra_ft_optuna_sweeper.egg-info"):  # setuptools builds inside the source folder
        shutil.rmtree(REPO / "packages" / "hydra-ft-optuna-sweeper" / left, ignore_errors=True)
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if not n.startswith("hydra_ft_optuna_sweeper-")]
        z.extractall(tmp_path / "site")
    assert names and all(n.startswith(("hydra_plugins/ft_optuna_sweeper/", "hydra_plugins/hydra_optuna_sweeper/"))
                         for n in names)
    metadata = (tmp_path / "site" / f"{wheel.name.split('-')[0]}-0.1.0.dist-info" / "METADATA").read_text()
    assert sorted(line.split(":")[1].split(">")[0].split("<")[0].strip() for line in metadata.splitlines()
                  if line.startswith("Requires-Dist")) == ["hydra-core", "omegaconf", "optuna"]
    app = tmp_path / "app"
    shutil.copytree(APPS / "sphere", app)
    code = ("import sys; sys.modules['src'] = None\n"
            "import hydra_plugins.ft_optuna_sweeper as plugin\n"
            f"assert plugin.__file__.startswith({str(tmp_path / 'site')!r}), plugin.__file__\n"
            "import runpy\n"
            f"sys.argv = ['sphere.py', '-m', '--config-dir={app / 'more'}', '--config-name=grid', "
            f"'hydra.sweep.dir={tmp_path / 'out'}']\n"
            f"runpy.run_path({str(app / 'sphere.py')!r}, run_name='__main__')\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(tmp_path / "site")})
    assert run.returncode == 0, run.stderr
    assert results(tmp_path / "out")["best_value"] == 1


@pytest.mark.parametrize("sampler, app", [("tpe", "sphere.sphere"), ("random", "sphere.sphere"), ("qmc", "sphere.sphere"),
                                          ("cmaes", "sphere.sphere"), ("motpe", "pareto.binh_korn"),
                                          ("nsgaii", "pareto.binh_korn")])
def test_every_sampler_of_1_3_and_qmc_sweeps_an_app(tmp_path, monkeypatch, capsys, sampler, app):
    if sampler == "cmaes":
        pytest.importorskip("cmaes")
    storage = f"sqlite:///{tmp_path / 'test.db'}"
    assert multirun(monkeypatch, app, f"hydra/sweeper/sampler={sampler}", "hydra.sweeper.sampler.seed=1",
                    "hydra.sweeper.n_trials=4", f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=s",
                    f"hydra.sweep.dir={tmp_path / 'out'}") == 0
    study = optuna.load_study(study_name="s", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    built = {"tpe": "TPESampler", "random": "RandomSampler", "qmc": "QMCSampler", "cmaes": "CmaEsSampler",
             "motpe": "TPESampler", "nsgaii": "NSGAIISampler"}[sampler]  # motpe: Optuna 5's multi-objective TPE
    assert f"sampler {built}," in capsys.readouterr().out
    assert results(tmp_path / "out")["name"] == "optuna"
