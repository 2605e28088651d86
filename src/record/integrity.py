"""A torch.save file's bytes checked against the CRC-32 stored with each entry of its zip.

torch.load reads past that check, so a flipped bit in a weight (a rotting disk, a bad copy) loaded
silently: a resumed run continued from it, `src.predict` served NaN or other classes (exit 0), and a
`model.checkpoint_path` started a run from weights no one saved. Every reader of a .pt file calls
`check_crc` first; here, below src.models and src.training, so both can.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

# A run's kept (selected) weights: src.training.checkpoint writes them; src.models and src.predict name them.
BEST_FILE = "model_best.pt"


# The first bytes of a zip (its first local file header), as torch.save writes one.
_ZIP_START = b"PK\x03\x04"


class DamagedFile(ValueError):
    """A .pt file whose bytes are not the ones written: the message says which entry."""


def check_crc(path: Path) -> None:
    """DamagedFile if an entry of `path`'s zip does not match its CRC-32 or cannot be read. A file
    that is not a zip (.safetensors, torch's legacy format) carries no checksum: nothing to check,
    and its own loader says what it is."""
    if not zipfile.is_zipfile(path):
        # A torch.save zip cut short (a copy or a write that never finished, a disk that filled) has
        # lost its central directory, where is_zipfile looks: it read as "not a zip", and its readers
        # said "not this run's weights" of the run's own file. Its first bytes still say what it was.
        with open(path, "rb") as f:
            head = f.read(4)
        if not head:
            raise DamagedFile("it is empty (0 bytes): cut short, as a write that never finished leaves it")
        if head == _ZIP_START:
            raise DamagedFile("it is cut short: a zip whose end is missing (a copy or write that never finished)")
        return
    with zipfile.ZipFile(path) as archive:
        try:
            bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as err:  # a header torn past the directory
            raise DamagedFile(f"its zip entries cannot be read ({err})") from None
    if bad is not None:
        raise DamagedFile(f"entry {bad} does not match the CRC-32 written with it (bytes changed since it was saved)")


def config_sha256(text: str) -> str:
    """The digest result.json keeps of the config.yaml its run wrote (`RunRecord.config_sha256`)."""
    return hashlib.sha256(text.encode()).hexdigest()


def config_edited(config_path: Path, recorded: str | None) -> str | None:
    """Why a finished run's config.yaml is not the one it wrote (None when it is, or when the record,
    written before the digest, cannot say). Edited by hand, the report grouped the run under settings
    it never trained with (trainer.batch_size 16 read as 8), and a rerun kept it as the new config's."""
    if not recorded:
        return None
    try:
        found = hashlib.sha256(config_path.read_bytes()).hexdigest()
    except OSError:
        return None  # missing or unreadable: each reader already says so in its own words
    if found == recorded:
        return None
    return (f"edited since the run wrote it (its SHA-256 is not result.json's config_sha256), so it no longer says "
            "what the run trained with: restore it (from a copy)")
