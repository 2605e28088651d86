"""House rules that keep the code base in shape: where Hydra stops, which way imports point, how long
a function may grow."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PLUGINS = SRC.parent / "hydra_plugins"
# Issue 24's limits: a module a newcomer can read through, a function that fits on a screen.
MODULE_LINES = 400
FUNCTION_LINES = 60
ENTRYPOINTS = {"src.train", "src.report", "src.predict"}
# The layers, top to bottom: a module may import only from its own layer or the ones below it.
LAYERS = [
    ENTRYPOINTS,
    {"src.sweep_driver", "src.multirun_stop"},  # src.train's side of the sweeper plugin: the plugin hands it the sweep; a stopped multirun's line
    {"src.exits", "src.completion"},  # how the process ends (src.train and the sweeper plugin raise to it); shell completion
    {"src.search"},
    {"src.gate"},
    {"src.training"},
    {"src.measurement"},
    {"src.strategies", "src.data", "src.reporting"},
    {"src.models"},
    {"src.record", "src.machine", "src.cli_args"},  # run files, a .pt file's checksums (src.models checks a checkpoint_path's)
    {"src.config"},
]
# Upward imports allowed inside a function body only (never at import time): (importer, imported).
# src/config/ checks `dataset.kind` against the data readers' registry, which lists reader modules
# without importing them and itself imports nothing of the project but src.config.
# Likewise the strategies' registry, which imports the strategy modules itself when asked for one.
LAZY_UPWARD = {("src.config.checks", "src.data.registry"), ("src.config.sections", "src.strategies.registry")}


def _module(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _names(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Import):
        return {a.name for a in node.names}
    if isinstance(node, ast.ImportFrom) and node.module:
        return {f"{node.module}.{a.name}" if node.module == "src" else node.module for a in node.names}
    return set()


def _imports(path: Path) -> set[str]:
    """Every module `path` imports (absolute names), wherever in the file."""
    return set().union(*(_names(node) for node in ast.walk(ast.parse(path.read_text()))))


def _function_imports(path: Path) -> set[str]:
    """The modules `path` imports only inside functions, not at import time."""
    tree = ast.parse(path.read_text())
    inner = set().union(*(_names(node) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                          for node in ast.walk(fn)))
    outer = set().union(*(_names(node) for node in ast.walk(tree))) - inner
    return inner - outer


def _sources() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_hydra_stops_at_the_entry_side():
    """Only the entrypoints, the config gate, the search space's checks (which compose trial configs) and the
    optimizer's instantiation import hydra; src/config/ uses omegaconf as the schema checker of the typed
    config; everything else takes typed arguments."""
    # src.training.optim calls hydra.utils.instantiate only: the optimizer's `_partial_` node is bound
    # to its param groups where they exist (lightning-hydra-template's and torchtune's way).
    # src.sweep_driver is the sweep driver the house style names: Hydra's sweeper hands it the sweep.
    hydra_side = {"src.train", "src.sweep_driver", "src.gate", "src.search.space", "src.training.optim"}
    offenders = [_module(p) for p in _sources() if _module(p) not in hydra_side
                 and any(n.split(".")[0] == "hydra" or (n.split(".")[0] == "omegaconf" and _unit(_module(p)) != "src.config")
                         for n in _imports(p))]
    assert offenders == []


def test_imports_point_down_and_no_module_imports_an_entrypoint():
    rank = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}
    units = {_unit(_module(p)) for p in _sources()} - {"src"}
    assert units <= set(rank), f"a package missing from LAYERS: {sorted(units - set(rank))}"
    upward = []
    for path in _sources():
        mine = _unit(_module(path))
        lazy = {name for name in _function_imports(path) if (_module(path), name) in LAZY_UPWARD}
        for name in _imports(path) - lazy:
            if name.startswith("src.") and _unit(name) != mine and rank.get(_unit(name), 99) <= rank.get(mine, -1):
                upward.append(f"{_module(path)} -> {name}")
    assert upward == []


def test_a_lazy_upward_import_brings_nothing_else_up():
    """What src/config/ may import lazily imports nothing of the project but config at import time."""
    for _, name in LAZY_UPWARD:
        path = SRC.parent.joinpath(*name.split(".")).with_suffix(".py")
        top = set().union(*(_names(node) for node in ast.parse(path.read_text()).body))
        assert {n for n in top if n.startswith("src.")} <= {"src.config"}, (name, top)


def test_every_package_opens_with_what_it_is_for():
    for init in SRC.rglob("__init__.py"):
        if init.parent == SRC:
            continue
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc.splitlines()[0]) > 20, init


def test_subprocesses_import_this_checkout_and_say_so_when_they_would_not(tmp_path, monkeypatch):
    """Subprocess tests add nothing to PYTHONPATH (tests/cli.py): they rely on the install, and
    check it once; a `src` found elsewhere first stops them with both folders named."""
    import os

    from tests.cli import REPO, check_subprocesses_import_this_checkout, env

    assert env() == os.environ | {"HF_HUB_OFFLINE": "1"}  # the caller's PYTHONPATH, if any, and nothing added
    check_subprocesses_import_this_checkout.__wrapped__()  # this checkout's code, as the tests ran it
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "__init__.py").write_text("")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with pytest.raises(RuntimeError) as err:
        check_subprocesses_import_this_checkout.__wrapped__()
    assert str(err.value).startswith(f"a subprocess imports src from {tmp_path / 'src' / '__init__.py'}, not from "
                                     f"{REPO / 'src'}")


def test_no_path_hacks():
    for path in _sources() + list(SRC.parent.joinpath("tests").glob("*.py")):
        if path.name == "test_layout.py":
            continue
        assert "sys.path" not in path.read_text(), path


def test_no_module_over_400_lines_and_no_function_over_60():
    too_long = []
    for path in sorted([*SRC.rglob("*.py"), *PLUGINS.rglob("*.py")]):
        text = path.read_text()
        where = path.relative_to(SRC.parent)
        if (lines := len(text.splitlines())) > MODULE_LINES:
            too_long.append(f"module {where}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if (lines := node.end_lineno - node.lineno + 1) > FUNCTION_LINES:
                    too_long.append(f"function {where}:{node.lineno} {node.name}: {lines} lines")
    assert not too_long, f"over {MODULE_LINES} lines a module or {FUNCTION_LINES} a function:\n" + "\n".join(too_long)


def test_hydra_is_not_imported_below_the_entrypoint():
    """Hydra composes the config at the entrypoint (src.train, the sweeper's side); what trains,
    reports and predicts is plain Python on the typed config. build_optimizer called Hydra's
    `instantiate` for the optimizer, so a run imported hydra where it trained."""
    import subprocess
    import sys

    code = ("import sys; import src.training.run, src.reporting.cli, src.predict; "
            "print(sorted(m for m in sys.modules if m == 'hydra' or m.startswith('hydra.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=SRC.parent, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
