"""The mirror's files on disk, and how they change.

Every file pypimirror writes appears atomically: a reader sees the old bytes or the new, never
a mix, and a crash at any point leaves at most a temp file, which :func:`sweep_temp_files`
removes on the next run. Temp files carry :data:`TEMP_MARKER` in their name so a sweep can
tell them from real content without guessing.
"""

from __future__ import annotations

__all__ = [
    "MAX_PROJECT_NAME_LENGTH",
    "PAGE_FILES",
    "TEMP_MARKER",
    "RepoLayout",
    "atomic_write",
    "atomic_writer",
    "is_normalized_project_name",
    "is_temp_name",
    "remove_path",
    "sweep_temp_files",
]

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from packaging.utils import NormalizedName

from pypimirror.errors import UnsafePathError

logger = logging.getLogger(__name__)

TEMP_MARKER = ".pypimirror-tmp-"

#: The file name of each page variant inside a project (or the root) directory.
PAGE_FILES = ("index.html", "index.v1_html", "index.v1_json")


def is_temp_name(name: str) -> bool:
    """True for a name that :func:`atomic_write` (or a download) uses while writing."""
    return TEMP_MARKER in name


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that it appears whole or not at all.

    The bytes go to a temp file in the same directory (same filesystem, so the rename is
    atomic), are fsynced, and replace the target. On any failure the temp file is removed
    and the old content of ``path`` stays untouched.
    """
    with atomic_writer(path) as handle:
        handle.write(data)


@contextmanager
def atomic_writer(path: Path) -> Iterator[BinaryIO]:
    """:func:`atomic_write` for content written in pieces (a file too large to hold in memory):
    what the block writes replaces ``path`` once the block ends without an error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARKER}", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp_name, 0o644)  # mkstemp's 0600 would hide the file from the other users
        os.replace(temp_name, path)
    except BaseException:
        try:
            os.unlink(temp_name)
        except FileNotFoundError:
            pass
        raise


def remove_path(path: Path) -> bool:
    """Remove a file or a whole directory tree; True if something was there."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        return False
    return True


def sweep_temp_files(root: Path) -> int:
    """Delete temp files left under ``root`` by an interrupted run; returns how many.

    Call it only while no writer is active on ``root`` (at the start of a sync that holds
    the lease), or it may remove a file that is being written.
    """
    removed = 0
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
            elif is_temp_name(entry.name):
                try:
                    os.unlink(entry.path)
                    removed += 1
                except FileNotFoundError:
                    pass
    if removed:
        logger.info("removed %d leftover temp files under %s", removed, root)
    return removed


@dataclass(frozen=True, slots=True)
class RepoLayout:
    """Where each kind of index file lives under ``repo_path`` (the layout the README describes)."""

    root: Path

    @property
    def simple_dir(self) -> Path:
        return self.root / "simple"

    @property
    def json_dir(self) -> Path:
        return self.root / "json"

    def project_dir(self, name: NormalizedName) -> Path:
        return self.simple_dir / _checked(name)

    def project_page(self, name: NormalizedName, variant: str) -> Path:
        """``variant`` is one of :data:`PAGE_FILES`."""
        return self.project_dir(name) / variant

    def root_page(self, variant: str) -> Path:
        return self.simple_dir / variant

    def json_document(self, name: NormalizedName) -> Path:
        return self.json_dir / _checked(name)


#: The longest project name the mirror keeps or serves. A name is one directory entry (its page
#: directory, its JSON-API document) and :func:`atomic_write` writes the document first under
#: ``.{name}.pypimirror-tmp-XXXXXXXX``: 25 more bytes, within the 255 every common filesystem
#: allows for an entry. The standards set no limit; this one is far beyond the names projects
#: use, and a longer name could not be stored anyway. So the sync skips such a name from a
#: listing, and a request for one is a 404 before the name is even normalized or looked up.
MAX_PROJECT_NAME_LENGTH = 230

_NORMALIZED_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")


def is_normalized_project_name(name: str) -> bool:
    """True for a valid, already normalized project name, short enough to be stored (safe as one
    path segment)."""
    return len(name) <= MAX_PROJECT_NAME_LENGTH and _NORMALIZED_NAME.fullmatch(name) is not None


def _checked(name: str) -> str:
    """Refuse a name that is not a normalized project name before it becomes a path."""
    if not is_normalized_project_name(name):
        raise UnsafePathError(name, "not a normalized project name")
    return name
