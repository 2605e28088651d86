"""Reading named arrays from a .npz archive (MedMNIST files, `.npz` OOD sets) without running code:
anything that is not such an archive is a one-line ConfigError naming the file."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from src.config import ConfigError
from src.data.paths import one_line


def read_npz(path: Path, names: list[str], where: str, load: list[str] | None = None) -> dict[str, np.ndarray]:
    """The named arrays of a .npz archive (only those in `load`, when given, though every one of
    `names` must be there); anything that is not one (random bytes, text, a .npy, a truncated zip,
    an object array that would need pickle) is a one-line ConfigError."""
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as err:
        raise ConfigError(f"{where}: cannot be read ({one_line(err)})") from None
    if magic.startswith(b"\x93NUMPY"):
        raise ConfigError(f"{where}: a single .npy array, not a .npz archive of named arrays")
    if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        raise ConfigError(f"{where}: not a .npz archive (no zip signature at its start)")
    try:
        # allow_pickle=False: a dataset file must not run code when it is read.
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ConfigError(f"{where}: corrupt .npz archive ({one_line(err)})") from None
    arrays = {}
    with npz:
        for name in names:
            if name not in npz.files:
                raise ConfigError(f"{where}: missing array '{name}' (MedMNIST layout)")
        for name in names if load is None else load:
            try:
                arrays[name] = npz[name]
            # Object arrays raise ValueError under allow_pickle=False; a damaged member raises
            # BadZipFile, zlib.error, EOFError, NotImplementedError (unknown compression) and more.
            except Exception as err:
                raise ConfigError(f"{where}: array '{name}' cannot be read ({one_line(err)})") from None
    return arrays
