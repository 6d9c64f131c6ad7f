"""What a lockfile asks for, as values: the files it names, the versions it pins, what it skips.

Why a module of its own: every lockfile format (uv, PEP 751, poetry, requirements) reads into
these same frozen values, so whatever pins them later sees one shape, never a format's dict.
A file is identified by its filename and sha256 only; where a lockfile found it (this mirror,
the upstream, another index) does not matter, so URLs are kept for messages, never trusted.
"""

from __future__ import annotations

__all__ = [
    "FileEntry",
    "LockEntry",
    "Lockfile",
    "LockfileKind",
    "LockfileProblem",
    "SkippedEntry",
    "VersionPin",
]

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from packaging.utils import NormalizedName

from .errors import LockfileError

LockfileKind = Literal["uv.lock", "pylock.toml", "poetry.lock", "requirements.txt"]


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One distribution file the lockfile needs, found later on the project's stored page.

    ``filename`` is None only for a requirements ``--hash``, which names a digest and no
    file; then the sha256 alone identifies the file among the version's files.
    """

    project: NormalizedName
    version: str | None
    filename: str | None
    sha256: str | None
    url: str | None
    where: str


@dataclass(frozen=True, slots=True)
class VersionPin:
    """``name==version`` without hashes: every file of that version, narrowed by platform/Python.

    ``marker`` is the environment marker as written (None when there is none).
    """

    project: NormalizedName
    version: str
    marker: str | None
    where: str


LockEntry = FileEntry | VersionPin


@dataclass(frozen=True, slots=True)
class SkippedEntry:
    """A lockfile entry that names no index file (a path, a VCS checkout, the project itself)."""

    project: NormalizedName | None
    reason: str
    where: str


@dataclass(frozen=True, slots=True)
class LockfileProblem:
    """An entry that cannot be used as written; the rest of the lockfile still reads."""

    path: str
    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.where}: {self.reason}"

    def to_error(self) -> LockfileError:
        return LockfileError(self.path, self.where, self.reason)


@dataclass(frozen=True, slots=True)
class Lockfile:
    """Everything read from one lockfile (and, for requirements, the files it includes).

    ``notes`` are options that were read and deliberately ignored (index URLs, for instance).
    """

    path: Path
    kind: LockfileKind
    entries: tuple[LockEntry, ...]
    skipped: tuple[SkippedEntry, ...] = ()
    problems: tuple[LockfileProblem, ...] = ()
    notes: tuple[str, ...] = ()

    def raise_for_problems(self) -> None:
        """Raise the first problem as a ``LockfileError`` (saying how many more there are)."""
        if not self.problems:
            return
        first = self.problems[0]
        more = len(self.problems) - 1
        reason = first.reason + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")
        raise LockfileError(first.path, first.where, reason)
