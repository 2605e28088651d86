"""House rules that keep the code base in shape."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_hydra_stops_at_the_entrypoint():
    """Only the entrypoints (train.py, sweep.py) import hydra or omegaconf; the rest takes typed arguments."""
    offenders = [p.name for p in SRC.glob("*.py") if p.name not in ("train.py", "sweep.py") and _imports(p) & {"hydra", "omegaconf"}]
    assert offenders == []


def test_no_path_hacks():
    for path in list(SRC.glob("*.py")) + list(SRC.parent.joinpath("tests").glob("*.py")):
        if path.name == "test_layout.py":
            continue
        assert "sys.path" not in path.read_text(), path
