"""File names and library errors as messages show them, and the names that image folders leave out.

Every loader message that names a file goes through `shown`, and every library error it quotes
through `one_line`, so that a file name holding a newline (legal on Linux) or a library's multi-line
message cannot split a one-line error or a log line in two, nor a terminal escape reach the screen. And one rule, `hidden`, says which entries of an image folder are not data: names starting
with a dot (`.git`, `.ipynb_checkpoints`, macOS's `._photo.jpg` resource files), whether a class
folder, a folder inside one, or a file.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath


def shown(path: str | PurePath) -> str:
    """`path` as text for a one-line message: as it is when every character is printable, else
    Python's repr (quoted, `\\n` and `\\x1b` escaped, undecodable bytes as `\\udcff`), which cannot
    be mistaken for a plain name because of its quotes."""
    text = str(path)
    return text if text.isprintable() else repr(text)


def one_line(err: BaseException) -> str:
    """`Type: message` on one line: library messages (torchvision's download errors, Pillow's)
    can span several lines, and a user error is one line on stderr. Other control characters (a
    file name's escape sequence quoted in the message) are escaped, as `shown` does."""
    text = " ".join(str(err).split())
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def hidden(name: str) -> bool:
    """A file or folder name that image folders skip: one starting with a dot."""
    return name.startswith(".")


def hidden_below(path: Path, top: Path) -> bool:
    """Whether any part of `path` below `top` is hidden (a file in `.ipynb_checkpoints/`, a
    `._x.jpg`)."""
    return any(hidden(part) for part in path.relative_to(top).parts)


def absolute(path: str | PurePath) -> Path:
    """`path` made absolute without following links, for its name: `.` and `..` (a folder given from
    inside it) have their folder's own name, where Path('.').name is '' (a dataset or OOD set named
    nothing in result.json); a link keeps its own name."""
    return Path(os.path.abspath(path))
