"""Directories that really refuse writes, for the tests of what the jobs do on a read-only disk.

A normal user gets mode 0555 on every directory of the tree. Root ignores modes, so for root
every directory gets the immutable attribute (``chattr +i``), which the kernel enforces for
root too: creating, renaming and deleting entries fail with EPERM, as on a read-only mount.
"""

from __future__ import annotations

__all__ = ["read_only"]

import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def read_only(root: Path) -> Iterator[None]:
    """Make the directory tree at ``root`` unwritable for this process until the block ends."""
    dirs = [root, *(path for path in root.rglob("*") if path.is_dir() and not path.is_symlink())]
    if os.geteuid() != 0:
        modes = {path: stat.S_IMODE(path.stat().st_mode) for path in dirs}
        for path in dirs:
            path.chmod(0o555)
        try:
            yield
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
        return
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.skip("running as root without chattr: no way to make a directory read-only for root")
    done = subprocess.run([chattr, "+i", *map(str, dirs)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        subprocess.run([chattr, "-i", *map(str, dirs)], capture_output=True, check=False)
        pytest.skip(f"running as root and this filesystem refuses chattr +i: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", *map(str, dirs)], check=True)
