"""hydra/sweeper=optuna as a drop-in for hydra-optuna-sweeper 1.3 in a foreign app, where the environment
holds only what the plugin's distribution depends on (hydra-core, omegaconf, optuna): what a sampler needs
beyond them, what a task receives for each swept value, and what a resumed seeded study proposes."""

from __future__ import annotations

import sys

import optuna
import pytest

from tests.test_optuna_upstream import multirun


def _error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip() and not line.startswith("[")]


def test_a_sampler_whose_optional_package_is_missing_is_one_line_before_any_trial(tmp_path, monkeypatch, capsys):
    """QMCSampler imports scipy (no dependency of optuna's, nor of the plugin's) when it first samples.
    Before: the study was made, the first trial failed with a 40-line traceback ending in
    `ModuleNotFoundError: No module named 'scipy'`, exit 1, and a stored study kept that failed trial."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setitem(sys.modules, "scipy.stats.qmc", None)  # as in an environment without scipy
    storage = f"sqlite:///{tmp_path / 's.db'}"
    code = multirun(monkeypatch, "sphere.sphere", f"hydra.sweep.dir={tmp_path / 'out'}", "hydra/sweeper/sampler=qmc",
                    f"hydra.sweeper.storage={storage}", "hydra.sweeper.n_trials=2")
    err = _error_lines(capsys)
    assert code == 2 and err == ["error: hydra.sweeper.sampler (QMCSampler) needs the scipy package (pip install scipy)"]
    assert not (tmp_path / "s.db").exists()  # checked before the study was opened


def test_each_choice_reaches_the_task_as_the_value_it_was_written_as(tmp_path, monkeypatch):
    """Hydra's parser hands a choice's strings over without their quotes, and the override was written
    back as `key=value`. Before: `choice("c,d", ...)` was refused as a sweep that does not compose, and
    once past that, "true" reached the task as True, "1" as 1, and "a=b" did not parse; a string from a
    custom_search_space hook the same."""
    from tests.apps.values.app import SEEN

    SEEN.clear()
    code = multirun(monkeypatch, "values.app", "hydra/sweeper=optuna", "hydra/sweeper/sampler=random",
                    "hydra.sweeper.sampler.seed=4", f"hydra.sweep.dir={tmp_path}",
                    "hydra.sweeper.custom_search_space=tests.apps.values.app.hook",
                    '+s=choice("c,d", "true", "1", "a=b", "q\'r", abc, [3,4], 2.5)', "hydra.sweeper.n_trials=20",
                    "hydra.sweeper.n_jobs=1")
    assert code == 0 and len(SEEN) == 20
    written = ["c,d", "true", "1", "a=b", "q'r", "abc", [3, 4], 2.5]
    assert sorted({repr(job["s"]) for job in SEEN}) == sorted(repr(v) for v in written)  # each, as written
    assert sorted({repr(job["t"]) for job in SEEN}) == ["'x,y'", "None"]


def test_a_resumed_seeded_study_goes_on_with_new_trials_and_a_new_one_keeps_its_seed(tmp_path, monkeypatch):
    """The same command run again on a stored study, as docs/sweeps.md says to resume. Before: the
    sampler was built again with the same seed and proposed the very trials it had proposed before, so a
    resumed study ran its first trials once more (src.train's driver moved its seed on; any app's did not)."""
    from tests.apps.values.app import SEEN

    def sweep(db: str) -> list[float]:
        SEEN.clear()
        assert multirun(monkeypatch, "values.app", "hydra/sweeper=optuna", "hydra/sweeper/sampler=random",
                        "hydra.sweeper.sampler.seed=5", f"hydra.sweeper.storage=sqlite:///{tmp_path / db}",
                        "hydra.sweeper.study_name=s", f"hydra.sweep.dir={tmp_path / db}.out", "+x=interval(0,1)",
                        "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=1") == 0
        return [job["x"] for job in SEEN]

    first, resumed = sweep("a.db"), sweep("a.db")
    assert len(set(first + resumed)) == 6  # six trials, none run twice
    assert sweep("b.db") == first  # a new study: the seed as given, the same trials
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'a.db'}")
    assert [t.params["+x"] for t in study.trials] == first + resumed


def test_a_stopped_study_without_a_name_says_which_name_resumes_it(tmp_path):
    """hydra.sweeper.study_name=null (1.3's default) with a storage: Optuna makes a name up, a new one
    each run. Before: Ctrl-C said "run the same command to resume", which started another study."""
    import signal

    from tests.test_optuna_upstream import _signalled_in_trial_1

    proc, _, err = _signalled_in_trial_1(tmp_path, signal.SIGINT, "hydra.sweeper.study_name=null")
    (name,) = optuna.get_all_study_names(f"sqlite:///{tmp_path / 'r1.db'}")
    said = [line for line in err.splitlines() if line.strip() and not line.startswith("[")]
    assert proc.returncode == 130 and len(said) == 1, err
    assert said[0].endswith(f"; resume with the same command and hydra.sweeper.study_name={name}"), said
    assert "run the same command to resume" not in said[0]


def test_a_grid_with_a_custom_search_space_is_one_line_before_any_trial(tmp_path, monkeypatch, capsys):
    """A grid lists its points from the params before any trial; a hook's parameters are on no grid.
    Before: each trial failed in Optuna's GridSampler ("The parameter name, +t, is not found in the given
    grid"), a traceback, exit 1, and the stored study kept the failed trials."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    storage = f"sqlite:///{tmp_path / 's.db'}"
    code = multirun(monkeypatch, "values.app", "hydra/sweeper=optuna", "hydra/sweeper/sampler=grid",
                    f"hydra.sweep.dir={tmp_path / 'out'}", "hydra.sweeper.custom_search_space=tests.apps.values.app.hook",
                    "+s=choice(1,2)", f"hydra.sweeper.storage={storage}")
    err = _error_lines(capsys)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: hydra.sweeper.custom_search_space=tests.apps.values.app.hook: "
                             "hydra/sweeper/sampler=grid lists its points from hydra.sweeper.params"), err
    assert not (tmp_path / "s.db").exists()


def test_fixed_values_in_hydra_sweeper_params_reach_the_task_as_the_yaml_says(tmp_path, monkeypatch):
    """`z: null` in hydra.sweeper.params fixes z to null. Before: each entry was written back as
    f"{key}={value}", Python's text, so z reached the task as the string 'None', a list's null as 'None'
    and its "a,b" as two items; a mapping `{a: null}` did not compose at all."""
    from tests.apps.values.app import APP_DIR, SEEN

    SEEN.clear()
    assert multirun(monkeypatch, "values.app", "-cd", str(APP_DIR / "conf"), "-cn", "fixed",
                    f"hydra.sweep.dir={tmp_path}") == 0
    (job,) = SEEN
    assert job["z"] is None and job["l"] == [1, None, "a,b"] and job["m"] == {"a": None}


@pytest.mark.slow  # 9 s on a busy 2-core machine: the base config's preflight builds the model
def test_src_train_reads_a_null_in_its_preset_params_as_null(tmp_path):
    """The same for src.train's own driver: `dataset.cache_dir: null` in a preset's hydra.sweeper.params
    (null: the user's cache folder). Before: 'dataset.cache_dir=None', a cache folder named None."""
    from omegaconf import OmegaConf

    from hydra_plugins.ft_optuna_sweeper.optuna_sweeper import OptunaSweeper
    from src.sweep_driver import ProjectSweep, outside_hydra
    from tests.test_hydra_sweeper import TINY

    params = OmegaConf.create({"strategy.lr_decay": "interval(1,10)", "dataset.cache_dir": None})  # as Hydra hands it
    sweeper = OptunaSweeper(sampler=None, objectives=["val_acc"], study_name="x", n_trials=1, n_jobs=1, max_failed=0,
                            params=params)
    sweeper.sweep_dir = tmp_path
    with outside_hydra():
        space = ProjectSweep(sweeper)._space(TINY)
    assert "dataset.cache_dir=null" in space.fixed and space.base.dataset.cache_dir is None


def test_a_1_3_motpe_config_runs_unchanged(tmp_path, monkeypatch):
    """1.3's motpe schema had `n_ehvi_candidates` and `_target_: optuna.samplers.MOTPESampler` (gone since
    Optuna 4.0, which folded it into TPESampler). Before: `hydra.sweeper.sampler.n_ehvi_candidates=5` was
    Hydra's several-line error that the key is not in the schema, and the _target_ a line that it cannot be
    imported."""
    for given in (["hydra/sweeper/sampler=motpe", "hydra.sweeper.sampler.n_ehvi_candidates=5"],
                  ["hydra/sweeper/sampler=motpe", "hydra.sweeper.sampler._target_=optuna.samplers.MOTPESampler"]):
        assert multirun(monkeypatch, "values.app", "hydra/sweeper=optuna", *given, f"hydra.sweep.dir={tmp_path}",
                        "+x=interval(0,1)", "hydra.sweeper.n_trials=2") == 0, given
    from hydra_plugins.ft_optuna_sweeper.settings import sampler_config

    assert sampler_config({"_target_": "optuna.samplers.MOTPESampler", "n_ehvi_candidates": 5, "n_ei_candidates": 24,
                           "seed": 1}) == {"_target_": "optuna.samplers.TPESampler", "n_ei_candidates": 5, "seed": 1}


def test_a_float_range_on_a_grid_stays_inside_its_bounds_and_on_its_step(tmp_path, monkeypatch):
    """range(0.5, 2.0, step=0.4): the step does not divide the range. Before: the grid's count was rounded
    up, so 2.1 (past the stop the user gave) was a grid point and ran, and 0.5 + 3 * 0.4 ran as
    1.7000000000000002, which Optuna warned is out of its distribution's range."""
    from hydra_plugins.ft_optuna_sweeper.space import grid_choices
    from tests.apps.values.app import SEEN

    SEEN.clear()
    assert multirun(monkeypatch, "values.app", "hydra/sweeper=optuna", "hydra/sweeper/sampler=grid",
                    f"hydra.sweep.dir={tmp_path}", "+s=range(0.5,2.0,step=0.4)", "hydra.sweeper.n_jobs=1") == 0
    assert sorted(job["s"] for job in SEEN) == [0.5, 0.9, 1.3, 1.7]
    assert grid_choices("x", {"type": "float", "low": -1.0, "high": 1.0, "step": 1}) == [-1.0, 0.0, 1.0]


@pytest.mark.parametrize("override, says", [
    ("x=tag(lg, interval(1,4))", "x=tag(lg, interval(1,4)): tag 'lg' means nothing to this sweeper"),
    ("x=tag(log, range(1,4))", "x=tag(log, range(1,4)): only an interval is sampled on a log scale"),
    ("y=tag(log, choice(1,2,4))", "y=tag(log, choice(1,2,4)): only an interval is sampled on a log scale"),
])
def test_a_tag_the_sweeper_does_not_read_is_one_line_not_a_linear_scale(tmp_path, monkeypatch, capsys, override, says):
    """Hydra's tag() takes any word; 1.3 read `log` on an interval only. Before: a misspelt tag, or log on
    a range or a choice, swept on a linear scale without a word."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    code = multirun(monkeypatch, "sphere.sphere", f"hydra.sweep.dir={tmp_path / 'out'}", override)
    err = _error_lines(capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: {says}"), err
    assert not (tmp_path / "out").exists()
