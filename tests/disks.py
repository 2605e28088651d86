"""Small real filesystems for tests of what a full disk does: a tmpfs of a few hundred KiB, mounted
for the test and unmounted after it (skipped where mounting is not allowed), filled to a chosen
free space, and grown again (`mount -o remount,size=...`) to free space as a user would."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """`small_disk(kib)`: a new tmpfs of that size, as an empty folder."""
    mounted: list[Path] = []

    def mount(kib: int) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode})")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(disk: Path, leave_kib: int, name: str = "filler") -> Path:
    """A file that takes all of `disk`'s free space but `leave_kib` KiB."""
    path = disk / name
    size = shutil.disk_usage(disk).free - leave_kib * 1024
    assert size > 0, f"{disk} has less than {leave_kib} KiB free"
    with open(path, "wb") as f:
        f.write(b"\0" * size)
    return path


def fill_up(disk: Path, name: str = "filler") -> None:
    """Every byte of `disk` taken: written until the filesystem says it is full."""
    fd = os.open(disk / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    assert shutil.disk_usage(disk).free < 4096


def grow(disk: Path, kib: int) -> None:
    """The tmpfs made larger (room freed, as by deleting files elsewhere)."""
    subprocess.run(["mount", "-o", f"remount,size={kib}k", str(disk)], check=True)
    assert shutil.disk_usage(disk).free > 0


def free_kib(disk: Path) -> int:
    return shutil.disk_usage(disk).free // 1024


def flip_bit(path: Path, entry: str = "/data/0", bit: int = 0) -> None:
    """One bit of a zip's entry (a .pt file's first tensor by default) flipped in place, as a rotting
    disk or a bad copy leaves it: the zip still opens, only the entry's CRC-32 says it changed. Bit 0 of
    a float32's lowest byte: the weight moves by one unit in the last place, which nothing downstream notices."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(entry))
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    data[info.header_offset + 30 + name_len + extra_len] ^= 1 << bit
    path.write_bytes(bytes(data))


__all__ = ["small_disk", "fill", "fill_up", "grow", "free_kib", "flip_bit"]
