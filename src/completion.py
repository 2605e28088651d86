"""Shell completion of `python -m src.train` (`-sc install=bash`): Hydra's completion, taught the
`python -m module` form."""

from __future__ import annotations

import re

# Hydra's completion knows `python app.py` and installed apps, not `python -m module`: the query is
# handed the line as if the module were an app, and the installed bash function learns `-m`.
_PYTHON_M = re.compile(r"^\s*\S*python[\d.]*\s+-m\s+(\S+)")


def completion_line(line: str) -> str:
    """COMP_LINE for Hydra's completion query: `python -m src.train strategy=` -> `src.train strategy=`."""
    return _PYTHON_M.sub(r"\1", line, count=1)


def completion_script(script: str) -> str:
    """Hydra's bash completion script, also completing `python -m <module> ...` (Hydra's own looks for
    a script file after `python` and gives up on `-m`)."""
    return script.replace(_SCRIPT_FILE, f'        if [ "${{words[1]}}" == "-m" ]; then\n            helper="${{words[0]}} -m '
                                        f'${{words[2]}}"\n        else\n{_SCRIPT_FILE}        fi\n', 1)


# The lines of Hydra 1.3's bash function that find the script after `python`.
_SCRIPT_FILE = """        file_path=$(pwd)/${words[1]}
        if [ ! -f "$file_path" ]; then
            return
        fi
        grep "@hydra.main" $file_path -q
        helper="${words[0]} ${words[1]}"
"""


def wants_completion(argv: list[str]) -> str | None:
    """`install=bash`, `query=bash`, ... when Hydra is asked for shell completion, else None."""
    for i, arg in enumerate(argv):
        if arg in ("-sc", "--shell-completion") and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--shell-completion="):
            return arg.split("=", 1)[1]
    return None
