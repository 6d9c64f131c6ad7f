"""Finding a lockfile's entries on the stored pages: which package paths a pinned set holds.

Why: a lockfile names files by filename and sha256 (or, for a bare ``name==version``, a release),
but the cache keeps package paths the stored pages list. Each entry is looked up on the page of
its project, by filename and sha256 only, so a lockfile made against this mirror, the upstream
or any other index resolves the same; an entry no page lists, or whose sha256 differs from the
page's, is reported as :class:`Unpinned` (naming the lockfile and the entry) and left out.
Reads the pages from disk: blocking.
"""

from __future__ import annotations

__all__ = ["Resolution", "Unpinned", "resolve_lockfiles"]

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packaging.utils import NormalizedName
from packaging.version import InvalidVersion, Version

from pypimirror.distfilename import parse_dist_filename
from pypimirror.listedfiles import ListedFile, read_listed_files
from pypimirror.lockmodel import FileEntry, Lockfile, VersionPin
from pypimirror.pinqueries import PinnedFile
from pypimirror.pinselect import select_files_for_pin
from pypimirror.storage import RepoLayout


@dataclass(frozen=True, slots=True)
class Unpinned:
    """A lockfile entry that is not pinned: ``where`` names the lockfile and the entry."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass(slots=True)
class Resolution:
    """The files the lockfiles need (by package path, each once) and the entries left out."""

    files: dict[str, PinnedFile] = field(default_factory=dict)
    unpinned: list[Unpinned] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files.values())


@dataclass(slots=True)
class _Pages:
    """Each project's stored page (its files by filename), read once for all the lockfiles' entries."""

    layout: RepoLayout
    prefix: str
    read: dict[NormalizedName, dict[str, ListedFile]] = field(default_factory=dict)

    def files(self, project: NormalizedName) -> dict[str, ListedFile]:
        if project not in self.read:
            listed = read_listed_files(self.layout, project, self.prefix).values()
            self.read[project] = {f.path.rpartition("/")[2]: f for f in listed}
        return self.read[project]


def resolve_lockfiles(
    lockfiles: Iterable[Lockfile],
    repo_path: Path,
    prefix: str,
    *,
    platforms: Sequence[str] = (),
    pythons: Sequence[str] = (),
) -> Resolution:
    """The package paths ``lockfiles`` need, found on the pages stored under ``repo_path``.

    A lockfile's own problems (an entry without a sha256, say) are carried over as unpinned
    entries; ``platforms``/``pythons`` narrow ``name==version`` pins without hashes.
    """
    pages = _Pages(RepoLayout(repo_path), prefix)
    resolution = Resolution()
    for lockfile in lockfiles:
        resolution.unpinned.extend(Unpinned(f"{p.path}: {p.where}", p.reason) for p in lockfile.problems)
        for entry in lockfile.entries:
            listed = pages.files(entry.project)
            if not listed:
                resolution.unpinned.append(Unpinned(entry.where, f"no stored page lists project {entry.project!r} "
                                                    "(not on the index this mirror syncs, or not synced yet)"))
                continue
            found = _find_file(entry, listed) if isinstance(entry, FileEntry) else \
                _find_release(entry, listed, platforms, pythons)
            if isinstance(found, str):
                resolution.unpinned.append(Unpinned(entry.where, found))
                continue
            for file in found:
                assert file.sha256 is not None  # only files with a sha256 are ever found
                resolution.files[file.path] = PinnedFile(file.path, file.size, file.sha256)
    return resolution


def _find_file(entry: FileEntry, listed: dict[str, ListedFile]) -> list[ListedFile] | str:
    """The page's file with the entry's filename and sha256, or why there is none."""
    if entry.filename is None:  # a requirements --hash: the digest alone, among the pinned version's files
        version = _parsed(entry.version)
        of_version = [f for name, f in listed.items() if _version_of(name) == version]
        match = [f for f in of_version if f.sha256 == entry.sha256]
        if match:
            return match[:1]
        return (f"no file of {entry.project} {entry.version} on the stored page has sha256 {entry.sha256}"
                if of_version else f"the stored page lists no file of {entry.project} {entry.version}")
    named = listed.get(entry.filename)
    if named is None:
        return f"{entry.filename} is not listed on the stored page of {entry.project}"
    if named.sha256 is None:
        return f"the stored page lists no sha256 for {entry.filename}, so it cannot be verified"
    if named.sha256 != entry.sha256:
        return f"sha256 {entry.sha256} differs from the stored page's {named.sha256} for {entry.filename}"
    return [named]


def _find_release(pin: VersionPin, listed: dict[str, ListedFile], platforms: Sequence[str],
                  pythons: Sequence[str]) -> list[ListedFile] | str:
    """The files of a ``name==version`` pin, narrowed by platform and Python, or why there are none."""
    verifiable = [(name, f.sha256) for name, f in listed.items() if f.sha256 is not None]
    chosen = select_files_for_pin(pin, verifiable, platforms, pythons)
    if chosen:
        return [listed[name] for name, _ in chosen]
    narrowed = " for the given platforms and Pythons" if platforms or pythons else ""
    return f"the stored page lists no file of {pin.project}=={pin.version} with a sha256{narrowed}"


def _parsed(version: str | None) -> Version | None:
    try:
        return Version(version) if version is not None else None
    except InvalidVersion:
        return None


def _version_of(filename: str) -> Version | None:
    """The version a wheel or sdist filename names (None for a name packaging cannot read)."""
    parsed = parse_dist_filename(filename)
    return None if parsed is None else parsed.version
