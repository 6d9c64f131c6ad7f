"""Turning a lockfile into the exact files it needs: ``read_lockfile(path) -> Lockfile``.

Why: a pinned set is a list of files (filename and sha256), but users hold lockfiles of four
kinds: ``uv.lock``, PEP 751 ``pylock.toml``, ``poetry.lock`` and pip requirements. This module
detects the kind by name and content and reads each into the same values (``lockmodel``). It
promises: nothing is fetched; a URL only gives a filename (its last segment, percent-decoded),
so a lockfile made against this mirror, the upstream or any other index reads the same; a file
that cannot be read at all is one ``LockfileError`` line naming it and where it broke; an entry
that cannot be used is a ``LockfileProblem`` and the rest still reads; entries that name no
index file (VCS, paths, the locked project itself) are listed as skipped with the reason.
"""

from __future__ import annotations

__all__ = ["detect_kind_by_name", "filename_from_location", "read_lockfile"]

import logging
import re
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from packaging.markers import InvalidMarker
from packaging.utils import NormalizedName, canonicalize_name

from .errors import LockfileError
from .lockmodel import FileEntry, LockEntry, Lockfile, LockfileKind, LockfileProblem, SkippedEntry
from .pinselect import marker_may_apply, parse_platforms, parse_pythons
from .requirementslock import first_line, parse_requirements, read_text

logger = logging.getLogger(__name__)

_PYLOCK_NAME = re.compile(r"^pylock\.([^.]+\.)?toml$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_TOML_POSITION = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)$")
_TOML_KINDS: tuple[LockfileKind, ...] = ("uv.lock", "pylock.toml", "poetry.lock")
# uv.lock source kinds that are not an index (a ``registry`` is one).
_UV_LOCAL_SOURCES = {
    "git": "a git checkout",
    "path": "a local path",
    "directory": "a local directory",
    "editable": "an editable local project",
    "virtual": "the locked project itself (virtual)",
    "url": "an archive from a direct URL",
}
# Newest major format versions this reader understands.
_UV_LOCK_VERSION = 1
_PYLOCK_MAJOR = 1
_POETRY_MAJOR = 2


def detect_kind_by_name(name: str) -> LockfileKind | None:
    """The kind a file name announces, or None when only the content can tell."""
    if name == "uv.lock":
        return "uv.lock"
    if name == "poetry.lock":
        return "poetry.lock"
    if _PYLOCK_NAME.match(name):
        return "pylock.toml"
    if name.endswith((".txt", ".in")):
        return "requirements.txt"
    return None


def _detect_kind_by_content(document: dict[str, object]) -> LockfileKind | None:
    metadata = document.get("metadata")
    if "lock-version" in document and ("packages" in document or "created-by" in document):
        return "pylock.toml"
    if isinstance(metadata, dict) and "content-hash" in metadata and "package" in document:
        return "poetry.lock"
    if isinstance(document.get("version"), int) and ("package" in document or "requires-python" in document):
        return "uv.lock"
    return None


def _parse_toml(text: str, shown: str) -> dict[str, object]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        position = _TOML_POSITION.search(message)
        where = "end of file"
        if position is not None and position.group(1) is not None:
            where = f"line {position.group(1)}"
        reason = _TOML_POSITION.sub("", message) if position is not None else message
        raise LockfileError(shown, where, f"not valid TOML: {reason}") from exc


def filename_from_location(location: str) -> str | None:
    """The last segment of a URL's path or of a file path, percent-decoded; None if empty."""
    if "://" in location:
        segment = unquote(urlsplit(location).path.rsplit("/", 1)[-1])
    else:
        segment = re.split(r"[/\\]", location)[-1]
    return segment or None


@dataclass
class _Collector:
    """Gathers one TOML lockfile's results; ``problem`` records an entry that cannot be used."""

    shown: str
    platforms: Sequence[str]
    pythons: Sequence[str]
    entries: list[LockEntry] = field(default_factory=list)
    skipped: list[SkippedEntry] = field(default_factory=list)
    problems: list[LockfileProblem] = field(default_factory=list)

    def problem(self, where: str, reason: str) -> None:
        self.problems.append(LockfileProblem(self.shown, where, reason))

    def marker_excludes(self, marker: object, project: NormalizedName, where: str) -> bool:
        """True (and the package listed as skipped) when its marker fits no requested target."""
        if not isinstance(marker, str):
            return False
        try:
            applies = marker_may_apply(marker, self.platforms, self.pythons)
        except InvalidMarker as exc:
            self.problem(where, f"bad marker {marker!r}: {first_line(exc)}")
            return True
        if not applies:
            self.skipped.append(SkippedEntry(project, f"marker {marker!r} excludes every requested Python/platform",
                                             where))
        return not applies

    def add_file(self, project: NormalizedName, version: str | None, where: str, kind: str,
                 filename: str | None, url: str | None, digests: dict[str, str] | None) -> None:
        """One file of a package: ``digests`` maps algorithm to digest (None: no hash given)."""
        label = f"{where}: {kind} {filename!r}" if filename else f"{where}: {kind}"
        if filename is None:
            self.problem(label, "no url, path or name to take a filename from")
        elif not digests:
            self.problem(label, "no hash; files are identified by sha256")
        elif "sha256" not in digests:
            self.problem(label, f"only {', '.join(sorted(digests))} hashes; files are identified by sha256")
        elif not isinstance(digests["sha256"], str) or not _SHA256.match(digests["sha256"]):
            self.problem(label, f"sha256 {digests['sha256']!r} is not 64 hex digits")
        else:
            self.entries.append(FileEntry(project, version, filename, digests["sha256"].lower(), url,
                                          f"{self.shown}: {label}"))


def _tables(document: dict[str, object], key: str, shown: str) -> list[dict[str, object]]:
    value = document.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise LockfileError(shown, key, "is not an array of tables")
    return value


def _packages(document: dict[str, object], key: str,
              collector: _Collector) -> Iterator[tuple[dict[str, object], NormalizedName, str | None, str]]:
    """Each package table under ``key`` with its (project, version, where); a table without a
    name is reported as a problem and left out."""
    for number, package in enumerate(_tables(document, key, collector.shown), start=1):
        name, version = package.get("name"), package.get("version")
        if not isinstance(name, str) or not name:
            collector.problem(f"{key} #{number}", "no name")
            continue
        version = version if isinstance(version, str) else None
        where = f"package {name!r}" + (f" {version}" if version else "")
        yield package, canonicalize_name(name), version, where


def _split_hash(value: object) -> dict[str, str] | None:
    """``"sha256:abc"`` → ``{"sha256": "abc"}``, as uv and poetry write a hash."""
    if not isinstance(value, str) or ":" not in value:
        return None
    algorithm, digest = value.split(":", 1)
    return {algorithm.lower(): digest}


def _read_uv(document: dict[str, object], collector: _Collector) -> None:
    version = document.get("version")
    if isinstance(version, int) and version > _UV_LOCK_VERSION:
        raise LockfileError(collector.shown, "version", f"uv.lock version {version} is newer than this reader "
                            f"understands ({_UV_LOCK_VERSION})")
    for package, project, release, where in _packages(document, "package", collector):
        source = package.get("source")
        local = next((reason for kind, reason in _UV_LOCAL_SOURCES.items()
                      if isinstance(source, dict) and kind in source), None)
        if local is not None:
            collector.skipped.append(SkippedEntry(project, f"{local}, not an index file", f"{collector.shown}: {where}"))
            continue
        _add_distributions(collector, package, (project, release, where), name_key="filename",
                           digests_of=lambda item: _split_hash(item.get("hash")), missing="no sdist or wheels listed")


def _add_distributions(
    collector: _Collector,
    package: dict[str, object],
    head: tuple[NormalizedName, str | None, str],
    *,
    name_key: str,
    digests_of: Callable[[dict[str, object]], dict[str, str] | None],
    missing: str,
) -> None:
    """Add a locked package's ``sdist`` and ``wheels`` entries (uv.lock and pylock.toml share
    that shape; they differ in the key of a file's name and in how hashes are written)."""
    project, release, where = head
    sdist, wheels = package.get("sdist"), package.get("wheels", [])
    files: list[tuple[str, object]] = [("sdist", sdist)] if sdist is not None else []
    if isinstance(wheels, list):
        files += [("wheel", wheel) for wheel in wheels]
    else:
        files.append(("wheels", wheels))
    if not files:
        collector.problem(where, missing)
    for kind, item in files:
        if not isinstance(item, dict):
            collector.problem(f"{where}: {kind}", "is not a table")
            continue
        url, filename = _url_and_filename(item, name_key)
        collector.add_file(project, release, where, kind, filename, url, digests_of(item))


def _url_and_filename(item: dict[str, object], name_key: str) -> tuple[str | None, str | None]:
    """A file entry's URL (if given) and file name: its ``name_key``, else its URL's or path's last part."""
    given = item.get("url")
    url = given if isinstance(given, str) else None
    location = url or item.get("path")
    named = item.get(name_key)
    filename = named if isinstance(named, str) else None
    return url, filename or (filename_from_location(location) if isinstance(location, str) else None)


def _check_major(value: object, newest: int, collector: _Collector, key: str, what: str) -> None:
    major = str(value).split(".", 1)[0]
    if major.isdigit() and int(major) > newest:
        raise LockfileError(collector.shown, key, f"{what} {value} is newer than this reader understands ({newest}.x)")


def _read_pylock(document: dict[str, object], collector: _Collector) -> None:
    _check_major(document.get("lock-version"), _PYLOCK_MAJOR, collector, "lock-version", "lock-version")
    for package, project, release, where in _packages(document, "packages", collector):
        located = f"{collector.shown}: {where}"
        if collector.marker_excludes(package.get("marker"), project, located):
            continue
        local = next((reason for key, reason in (("vcs", "a VCS checkout"), ("directory", "a local directory"),
                                                 ("archive", "an archive from a direct URL or path"))
                      if key in package), None)
        if local is not None:
            collector.skipped.append(SkippedEntry(project, f"{local}, not an index file", located))
            continue
        _add_distributions(collector, package, (project, release, where), name_key="name",
                           digests_of=_pylock_hashes, missing="no sdist, wheels, archive, directory or vcs")


def _pylock_hashes(item: dict[str, object]) -> dict[str, str] | None:
    hashes = item.get("hashes")
    return {str(k).lower(): v for k, v in hashes.items()} if isinstance(hashes, dict) else None


def _read_poetry(document: dict[str, object], collector: _Collector) -> None:
    metadata = document.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    _check_major(metadata.get("lock-version"), _POETRY_MAJOR, collector, "metadata.lock-version", "lock-version")
    # Before lock-version 2.0 poetry kept the files apart, in [metadata.files] by package name.
    old_files = metadata.get("files")
    old_files = {canonicalize_name(str(k)): v for k, v in old_files.items()} if isinstance(old_files, dict) else {}
    for package, project, release, where in _packages(document, "package", collector):
        located = f"{collector.shown}: {where}"
        source = package.get("source")
        source_type = source.get("type") if isinstance(source, dict) else None
        if source_type not in (None, "legacy", "pypi"):
            collector.skipped.append(SkippedEntry(project, f"a {source_type} source, not an index file", located))
            continue
        if collector.marker_excludes(package.get("markers"), project, located):
            continue
        files = package.get("files", old_files.get(project, []))
        if not isinstance(files, list) or not files:
            collector.problem(where, "no files listed")
            continue
        for item in files:
            if not isinstance(item, dict):
                collector.problem(f"{where}: file", "is not a table")
                continue
            filename = item.get("file") if isinstance(item.get("file"), str) else None
            collector.add_file(project, release, where, "file", filename, None, _split_hash(item.get("hash")))


_TOML_READERS: dict[LockfileKind, Callable[[dict[str, object], _Collector], None]] = {
    "uv.lock": _read_uv,
    "pylock.toml": _read_pylock,
    "poetry.lock": _read_poetry,
}


def _not_a_lockfile(document: dict[str, object]) -> str:
    if "project" in document or "build-system" in document or "tool" in document:
        return "not a lockfile (a pyproject.toml?): none of uv.lock, pylock.toml (PEP 751) or poetry.lock"
    return "not a lockfile: a TOML file that is none of uv.lock, pylock.toml (PEP 751) or poetry.lock"


def read_lockfile(path: Path, *, platforms: Sequence[str] = (), pythons: Sequence[str] = ()) -> Lockfile:
    """Read ``path`` as whichever lockfile it is (by name, then content).

    ``platforms``/``pythons`` narrow only entries with environment markers (requirements lines,
    PEP 751 ``marker``, poetry ``markers``); file entries are kept as the lockfile lists them.
    Blocking (reads files): async callers run it in a worker thread. Raises ``LockfileError``
    for a file that cannot be read as a lockfile, ``PinTargetError`` for a malformed target.
    """
    parse_platforms(platforms)  # checked here, so a bad target fails even without any marker
    parse_pythons(pythons)
    shown = str(path)
    text = read_text(path, shown)
    by_name = detect_kind_by_name(path.name)
    if by_name == "requirements.txt":
        return _read_requirements_lockfile(path, text, platforms, pythons, required=True)
    try:
        document = _parse_toml(text, shown)
    except LockfileError:
        if by_name is not None or path.suffix in (".toml", ".lock"):
            raise
        return _read_requirements_lockfile(path, text, platforms, pythons, required=False)
    if not document and by_name is None:
        return _read_requirements_lockfile(path, text, platforms, pythons, required=False)
    by_content = _detect_kind_by_content(document)
    if by_content is None:
        raise LockfileError(shown, "", _not_a_lockfile(document))
    if by_name is not None and by_content != by_name:
        raise LockfileError(shown, "", f"named like a {by_name} but its content is a {by_content}")
    collector = _Collector(shown, platforms, pythons)
    _TOML_READERS[by_content](document, collector)
    logger.debug("read %s as %s: %d entries, %d skipped, %d problems", shown, by_content,
                 len(collector.entries), len(collector.skipped), len(collector.problems))
    return Lockfile(path, by_content, tuple(collector.entries), tuple(collector.skipped), tuple(collector.problems))


def _read_requirements_lockfile(path: Path, text: str, platforms: Sequence[str], pythons: Sequence[str],
                                *, required: bool) -> Lockfile:
    entries, skipped, problems, notes = parse_requirements(path, text, platforms=platforms, pythons=pythons)
    if not entries and not skipped and not problems:
        reason = "no requirements in it" if required else \
            "not a lockfile: neither uv.lock, pylock.toml, poetry.lock nor requirement lines"
        raise LockfileError(str(path), "", reason)
    if not required and not entries and not skipped:
        raise LockfileError(str(path), "", "not a lockfile: neither uv.lock, pylock.toml, poetry.lock nor "
                            f"requirement lines ({problems[0].where}: {problems[0].reason})")
    return Lockfile(path, "requirements.txt", entries, skipped, problems, notes)
