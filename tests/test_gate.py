"""The config gate uses public Hydra APIs only, does nothing at import time, and its one adapter (the
command-line flags of `@hydra.main`) stays Hydra's."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.cli import python_c

GATE = Path(__file__).resolve().parents[1] / "src" / "gate.py"


def test_the_gate_reaches_into_no_private_hydra_module():
    tree = ast.parse(GATE.read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert any(m.startswith("hydra") for m in imported)
    assert [m for m in imported if "._internal" in m or ".storages._" in m] == []


def test_importing_the_gate_registers_nothing():
    code = ("from hydra.core.config_store import ConfigStore; from omegaconf import OmegaConf; import src.gate; "
            "print(OmegaConf.has_resolver('unique_dir'), 'base_config.yaml' in ConfigStore.instance().repo); "
            "src.gate.install(); print(OmegaConf.has_resolver('unique_dir'), 'base_config.yaml' in ConfigStore.instance().repo)")
    assert python_c(code) == ["False", "False", "True", "True"]


def test_the_flag_adapter_knows_every_flag_of_hydras_parser():
    # Pinned: a Hydra that adds or renames a flag fails here, not in a user's precheck.
    from hydra._internal.utils import get_args_parser

    from src.gate import hydra_args

    def flags(parser):
        return {(tuple(sorted(a.option_strings)), a.nargs) for a in parser._actions if a.option_strings}

    ours = flags(hydra_args())
    assert {f for f, _ in ours} == {f for f, _ in flags(get_args_parser())}
    takes = {f: n for f, n in flags(get_args_parser()) if f not in {("--version",)}}
    assert all(takes[f] == n or (n is None and takes[f] is None) or f == ("--help", "-h") for f, n in ours if f in takes)


@pytest.mark.parametrize("argv", [
    ["-m", "seed=0,1", "strategy=frozen", "--config-name", "config"],
    ["--cfg", "job", "-p", "trainer", "seed=1"],
    ["seed=3", "--info", "defaults"],
])
def test_the_flag_adapter_reads_a_command_line_as_hydra_does(argv):
    from hydra._internal.utils import get_args_parser

    from src.gate import hydra_args

    theirs = vars(get_args_parser().parse_known_args(argv)[0])
    ours = vars(hydra_args().parse_known_args(argv)[0])
    assert {k: ours[k] for k in theirs if k != "version"} == {k: v for k, v in theirs.items() if k != "version"}


def test_the_basic_sweepers_grid_is_hydras():
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from src.gate import grid

    overrides = OverridesParser.create().parse_overrides(
        ["seed=0,1", "strategy=frozen,full,lpft", "optim.lr=1e-3", "seed=4,5", "dataset.root=null", "+x=[1,2]"])
    assert grid(overrides) == BasicSweeper.split_arguments(overrides, None)[0]


@pytest.mark.parametrize("sweep", ["trainer.epochs=range(1,1)", "seed=range(3,0)"])
def test_a_command_line_sweep_with_no_values_is_one_line_not_zero_jobs(sweep, tmp_path):
    # Hydra's basic sweeper launched 0 jobs for an empty range and the multirun exited 0.
    from src.config import ConfigError
    from src.gate import precheck

    with pytest.raises(ConfigError) as err:
        precheck(["-m", "experiment=smoke", sweep, f"hydra.sweep.dir={tmp_path / 'm'}"])
    assert str(err.value) == f"{sweep}: no values, so no job would run (the basic sweeper's range(a,b) stops before b)"
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("layout, message", [
    (["a.png", "b.png"], "dataset.root='{root}': no class folders (expected {root}/<class>/<images>)"),
    (["train/a.png", "val/cat/b.png"], "dataset.root='{root}': no class folders (expected {root}/train/<class>/<images>)"),
    (["cat/a.png", "cat/b.png"], "dataset data: train has a single class (0 ('cat')); a classifier needs at least 2"),
])
def test_an_image_folder_that_cannot_train_is_refused_before_any_run_folder(layout, message, tmp_path):
    # These were found only when the run loaded its data: a run folder with a failed result.json was
    # left behind, and a multirun's later jobs were checked only after job 0 had started.
    from PIL import Image

    from src.config import ConfigError
    from src.gate import precheck

    root = tmp_path / "data"
    for name in layout:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(root / name)
    with pytest.raises(ConfigError) as err:
        precheck(["-m", "experiment=smoke", "dataset=imagefolder", f"dataset.root={root}",
                  f"paths.output_dir={tmp_path / 'out'}", "seed=0,1"])
    assert str(err.value) == "job 0 of 2 (seed=0): " + message.format(root=root)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("arrays, message", [
    (None, "not a .npz archive (no zip signature at its start)"),
    ({"x": [1, 2]}, "missing array 'train_images' (MedMNIST layout)"),
    ({"train_labels": [[0, 1], [1, 0]]}, "multi-label targets (2, 2) are not supported"),
    ({"train_labels": [3, 3, 3]}, "single class (3); a classifier needs at least 2"),
])
def test_a_npz_that_cannot_train_is_refused_before_any_run_folder(arrays, message, tmp_path):
    # The gate only checked that the file existed: each of these made a run folder with a failed
    # result.json. It reads the archive's directory and the train labels, not the images.
    import numpy as np

    from src.config import ConfigError
    from src.gate import precheck

    path = tmp_path / "set.npz"
    if arrays is None:
        path.write_text("not an archive")
    else:
        full = {f"{s}_{k}": np.zeros((3, 8, 8), np.uint8) if k == "images" else np.array([0, 1, 0])
                for s in ("train", "val", "test") for k in ("images", "labels")} if "x" not in arrays else {}
        np.savez(path, **(full | {k: np.array(v) for k, v in arrays.items()}))
    with pytest.raises(ConfigError) as err:
        precheck(["experiment=smoke", "dataset=medmnist", f"dataset.root={path}", f"paths.output_dir={tmp_path / 'out'}"])
    assert str(err.value).endswith(message) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_a_config_dir_whose_config_the_projects_own_shadows_is_refused_not_run_as_the_defaults(tmp_path):
    # Seen: `python -m src.train --config-dir RUN --config-name config` (to run a kept run's config.yaml
    # again) ran conf/config.yaml, the defaults: Hydra searches a --config-dir after the app's own conf/.
    import subprocess
    import sys

    from tests.cli import REPO, env

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("seed: 7\n")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "src.train", "--config-dir", str(run), "--config-name", "config",
                           "trainer.dry_run=true", f"hydra.run.dir={out}"],
                          cwd=REPO, env=env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert f"--config-path {run}" in done.stderr and "--config-dir" in done.stderr
    assert not out.exists()


def test_a_config_dir_that_adds_configs_of_its_own_is_read_as_hydra_reads_it(tmp_path):
    from src.gate import precheck

    (tmp_path / "strategy").mkdir()
    (tmp_path / "strategy" / "mine.yaml").write_text("defaults:\n  - base_frozen\n")
    assert precheck(["--config-dir", str(tmp_path), "strategy=mine", f"paths.output_dir={tmp_path}"]) == 1


@pytest.mark.parametrize("argv, line", [
    (["optim.lr=-1"], "optim.lr=-1.0 must be > 0"),
    (["-m", "trainer.batch_size=16,1"], "job 1 of 2 (trainer.batch_size=1): trainer.batch_size=1 must be >= 2"),
    (["strategy.lr_decay=0.5"], "strategy.lr_decay=0.5 must be >= 1"),  # a value the user's own YAML set is checked too
    (["experiment=mine", "hydra.searchpath=[file:///nowhere]", "trainer.bogus=1"], "unknown key 'trainer.bogus'"),
])
def test_a_config_dir_command_is_checked_before_any_folder_as_any_other(tmp_path, argv, line):
    # Seen: `--config-dir DIR experiment=mine optim.lr=-1` made outputs/DATE/TIME with a failed result.json, and a
    # multirun's bad job 1 was found after job 0 had trained: the checks skipped every --config-dir command.
    from src.config import ConfigError
    from src.gate import precheck

    mine = tmp_path / "mine"
    (mine / "strategy").mkdir(parents=True)
    (mine / "experiment").mkdir()
    (mine / "strategy" / "steep.yaml").write_text("defaults:\n  - base_layerwise\n  - _self_\nlr_decay: 4.0\n")
    (mine / "experiment" / "mine.yaml").write_text("# @package _global_\ndefaults:\n  - override /strategy: steep\n")
    if "strategy.lr_decay=0.5" in argv:
        (mine / "strategy" / "steep.yaml").write_text("defaults:\n  - base_layerwise\n  - _self_\nlr_decay: 0.5\n")
        argv = ["experiment=mine"]
    with pytest.raises(ConfigError) as err:
        precheck(["--config-dir", str(mine), *argv, f"paths.output_dir={tmp_path / 'out'}"])
    assert line in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_a_config_dir_that_is_not_there_is_one_line_naming_it(tmp_path):
    from src.config import ConfigError
    from src.gate import precheck

    with pytest.raises(ConfigError) as err:
        precheck(["--config-dir", str(tmp_path / "nope"), "--cfg", "job"])
    assert str(err.value) == f"--config-dir {tmp_path / 'nope'}: no such folder ({tmp_path / 'nope'})"


@pytest.mark.parametrize("override, line", [
    ("trainer.batch_size=1", "trainer.batch_size=1 must be >= 2"),
    ("trainer.bogus=1", "unknown key 'trainer.bogus' (trainer has no such key)"),
])
def test_a_runs_config_given_with_config_path_is_checked_before_any_folder(tmp_path, monkeypatch, override, line):
    # The way to run a kept run's config.yaml again (--config-path RUN --config-name config): a bad value made
    # a run folder with a failed result.json, an unknown key Hydra's 6-line error; the gate had skipped it.
    from omegaconf import OmegaConf

    from src.config import ConfigError
    from src.gate import check_overrides, precheck

    run = tmp_path / "run"
    run.mkdir()
    OmegaConf.save(check_overrides(["model.name=test_efficientnet", "model.pretrained=false"]), run / "config.yaml")
    monkeypatch.chdir(tmp_path)
    argv = ["--config-path", str(run), "--config-name", "config", f"hydra.run.dir={tmp_path / 'out'}"]
    assert precheck(argv) == 1
    with pytest.raises(ConfigError) as err:
        precheck([*argv, override])
    assert str(err.value) == line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_relative_config_path_hydra_would_not_find_is_one_line_naming_the_whole_path(tmp_path, monkeypatch):
    # `--config-path RUN` from the folder that holds RUN: Hydra looked in src/RUN, 3 lines, exit 1.
    from src.config import ConfigError
    from src.gate import precheck

    (tmp_path / "run").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        precheck(["--config-path", "run", "--config-name", "config"])
    assert str(err.value).startswith("--config-path run: Hydra reads a relative path against ")
    assert str(err.value).endswith(f"give it whole: --config-path {tmp_path / 'run'}")


@pytest.mark.parametrize("package, first", [(None, "# @package hydra"), ("hydra.run", "# @package hydra.run")])
def test_cfg_hydra_resolve_prints_the_resolved_hydra_node_not_a_traceback(tmp_path, package, first):
    # Seen: `--cfg hydra --resolve` was a 40-line InterpolationKeyError: Hydra resolves the hydra node cut from
    # the config, and hydra.run.dir reads ${paths.output_dir}.
    import subprocess
    import sys

    from tests.cli import env

    argv = ["--cfg", "hydra", "--resolve", *(["-p", package] if package else []), "paths.output_dir=runs"]
    done = subprocess.run([sys.executable, "-m", "src.train", *argv], cwd=tmp_path, env=env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[0] == first and "dir: runs/outputs/" in done.stdout and "${" not in done.stdout
    assert list(tmp_path.iterdir()) == []  # the folder it resolved is released, as Hydra's --cfg all --resolve's


def test_the_flag_adapter_keeps_every_other_command_line_as_it_is():
    from src.cli_args import resolvable_cfg

    for argv in (["--cfg", "hydra"], ["--cfg", "job", "--resolve"], ["-m", "seed=0,1"], ["--cfg", "hydra", "--resolve", "-p", "trainer"]):
        assert resolvable_cfg(argv) == argv
    assert resolvable_cfg(["seed=1", "-c", "hydra", "--resolve", "-cn", "config"]) == \
        ["--config-name", "config", "--cfg", "all", "--resolve", "--package", "hydra", "seed=1"]


@pytest.mark.parametrize("argv, line", [
    (["-m", "--cfg", "job", "seed=0,1"], "--multirun and --cfg: give only one of"),
    (["--info", "--cfg", "job"], "--cfg and --info: give only one of"),
    (["-r", "-m"], "--run and --multirun: give only one of"),
])
def test_two_hydra_commands_are_one_line_not_hydras_traceback(argv, line):
    from src.config import ConfigError
    from src.gate import precheck

    with pytest.raises(ConfigError) as err:
        precheck(argv)
    assert str(err.value).startswith(line) and "\n" not in str(err.value)


def test_a_glob_over_a_config_group_is_expanded_and_checked_as_hydras_sweeper_does(tmp_path):
    # Seen: `-m 'strategy=glob(f*)'` was refused, "error: ConfigLoader is not set": the gate parsed the
    # sweep without the config loader through which glob() lists a group's options.
    from src.config import ConfigError
    from src.gate import precheck

    out = f"paths.output_dir={tmp_path}"
    assert precheck(["-m", "strategy=glob(f*)", out]) == 2
    with pytest.raises(ConfigError) as err:
        precheck(["-m", "strategy=glob(f*)", "trainer.batch_size=16,1", out])
    assert str(err.value) == "job 1 of 4 (strategy=frozen trainer.batch_size=1): trainer.batch_size=1 must be >= 2"


@pytest.mark.parametrize("argv", [["hydra.run.dir="], ["-m", "seed=0,1", "hydra.sweep.dir=''"]])
def test_an_empty_run_or_sweep_folder_is_refused_not_the_current_folder(tmp_path, monkeypatch, argv):
    # Seen: `hydra.run.dir="$UNSET"` (an unset variable) ran, and wrote estimate.json and train.log into the current folder.
    from src.config import ConfigError
    from src.gate import precheck

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        precheck([*argv, "trainer.dry_run=true"])
    key = "hydra.sweep.dir" if "-m" in argv else "hydra.run.dir"
    assert str(err.value) == f"{key}='': expected a folder ('.' for the current one)"
    assert list(tmp_path.iterdir()) == []


def test_hydra_mode_multirun_is_checked_as_a_multirun_as_hydra_runs_it(tmp_path):
    # Seen: `hydra.mode=MULTIRUN seed=0,1` (Hydra's other way to say -m; a preset may set it) was refused,
    # "error: Ambiguous value for argument 'seed=0,1'": the checks took it for one run.
    from src.config import ConfigError
    from src.gate import precheck

    out = f"paths.output_dir={tmp_path}"
    assert precheck(["hydra.mode=MULTIRUN", "seed=0,1", out]) == 2
    with pytest.raises(ConfigError) as err:
        precheck(["hydra.mode=MULTIRUN", "seed=0,1", "trainer.batch_size=1", out])
    assert str(err.value) == "job 0 of 2 (seed=0): trainer.batch_size=1 must be >= 2"
    with pytest.raises(ConfigError, match="Ambiguous value for argument 'seed=0,1'"):
        precheck(["seed=0,1", out])  # without it (or -m), Hydra's own refusal, as before


def test_a_parent_another_process_released_between_the_two_mkdirs_is_made_again(tmp_path, monkeypatch):
    # Two commands at once: B finds multirun/DATE made by A, A releases it (empty, its own) before B's
    # folder is made in it. B's mkdir then failed with FileNotFoundError, a traceback before any run.
    from src import gate

    base = tmp_path / "multirun" / "D" / "T"
    real_mkdir, released = Path.mkdir, []

    def racing(self, *args, **kwargs):
        if self == base and not released:  # the other process's release runs now
            released.append(True)
            base.parent.rmdir()
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", racing)
    assert gate.unique_dir(str(base)) == str(base) and base.is_dir() and released
    gate.release_unused_dirs()
    assert not (tmp_path / "multirun").exists()  # the parents it made are released again
