"""OSV advisory records for the PyPI ecosystem: reading an export, and matching versions.

An export is what operators point ``advisories.source`` at: a zip of OSV JSON records (the
per-ecosystem archive OSV publishes), or a directory of OSV JSON or YAML records such as a
checkout of the PyPA advisory database (zips found in the directory are read too). The data
comes from outside and is large, so reading is forgiving: a corrupt archive, a file that is not
a record, a record with a version that does not parse, or a record that names no PyPI package
is skipped and counted in :class:`ReadStats`, and reading goes on with the next one.

Matching follows the OSV schema's definition for ``ECOSYSTEM`` ranges, with versions compared
as PEP 440 versions by ``packaging``: the events of a range are sorted by version and walked in
order; ``introduced`` starts an affected span (``"0"`` means "from the first version"),
``fixed`` ends it before that version and ``last_affected`` ends it after that version. A
version listed in ``versions`` is affected whatever the ranges say. ``GIT`` ranges (commits)
and ``SEMVER`` ranges (not how Python versions compare) say nothing about PyPI versions and are
left out. Package names are compared normalized (PEP 503).
"""

from __future__ import annotations

__all__ = [
    "ECOSYSTEM",
    "AffectedPackage",
    "Advisory",
    "BadRecord",
    "NotPyPI",
    "RangeEvent",
    "ReadStats",
    "parse_record",
    "read_export",
    "VersionKey",
    "normalize_version",
    "version_key",
]

import json
import logging
import zipfile
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from packaging.utils import NormalizedName, canonicalize_name, canonicalize_version
from packaging.version import InvalidVersion, Version

try:
    from yaml import CSafeLoader as _YamlLoader
except ImportError:  # PyYAML built without libyaml
    from yaml import SafeLoader as _YamlLoader  # type: ignore[assignment]

logger = logging.getLogger(__name__)

#: The ecosystem name OSV gives PyPI packages.
ECOSYSTEM = "PyPI"

EventKind = Literal["introduced", "fixed", "last_affected"]
#: A version as matching compares it (see :func:`version_key`).
VersionKey = tuple[str, Version | None]
_EVENT_KINDS: tuple[EventKind, ...] = ("introduced", "fixed", "last_affected")
_RECORD_SUFFIXES = (".json", ".yaml", ".yml")
#: A record bigger than this is not an advisory (the largest real ones are tens of KiB).
_MAX_RECORD_BYTES = 4 * 1024**2


class BadRecord(ValueError):
    """A record that does not follow the OSV schema where the mirror relies on it."""


class NotPyPI(BadRecord):
    """A well-formed record about packages of other ecosystems only."""


@dataclass(frozen=True, slots=True)
class RangeEvent:
    """One event of an ``ECOSYSTEM`` range; ``version`` None is ``introduced: "0"`` (the beginning)."""

    kind: EventKind
    version: Version | None

    def sort_key(self) -> tuple[int, Version | None]:
        # The beginning sorts before every version; "0" itself is not the lowest PEP 440 version.
        return (0, None) if self.version is None else (1, self.version)


@dataclass(frozen=True, slots=True)
class AffectedPackage:
    """What one record says about one PyPI project: its ranges (events sorted) and listed versions.

    ``versions`` holds each listed version normalized (:func:`normalize_version`), so ``1.0``
    and ``1.0.0`` match alike.
    """

    name: NormalizedName
    ranges: tuple[tuple[RangeEvent, ...], ...] = ()
    versions: frozenset[str] = frozenset()

    def affects(self, version: str) -> bool:
        """Whether ``version`` (as a project's page names it) is affected."""
        return self.affects_key(version_key(version))

    def affects_key(self, key: VersionKey) -> bool:
        """:meth:`affects` for a version already read by :func:`version_key` (one parse for many records)."""
        normalized, parsed = key
        if normalized in self.versions:
            return True
        return parsed is not None and any(_in_range(parsed, events) for events in self.ranges)

    def to_json(self) -> dict[str, Any]:
        """The ranges and versions as stored in the database (read back by :meth:`from_json`)."""
        return {
            "ranges": [
                [[event.kind, "0" if event.version is None else str(event.version)] for event in events]
                for events in self.ranges
            ],
            "versions": sorted(self.versions),
        }

    @classmethod
    def from_json(cls, name: str, data: Mapping[str, Any]) -> AffectedPackage:
        ranges = tuple(
            tuple(_make_event(kind, text) for kind, text in events) for events in data.get("ranges", ())
        )
        return cls(canonicalize_name(name), ranges, frozenset(data.get("versions", ())))


@dataclass(frozen=True, slots=True)
class Advisory:
    """One OSV record, reduced to what the mirror stores and matches, plus the record itself.

    Times are RFC 3339 texts in UTC with microseconds (``2024-05-01T12:00:00.000000Z``), so
    they compare as text. ``record`` is the record as read, which the OSV API answers with.
    """

    id: str
    aliases: tuple[str, ...]
    summary: str
    severity: tuple[Mapping[str, Any], ...]
    published: str | None
    modified: str
    withdrawn: str | None
    affected: tuple[AffectedPackage, ...]
    record: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def is_malicious(self) -> bool:
        """OSV gives records of malicious packages IDs starting with ``MAL-``."""
        return self.id.startswith("MAL-")

    def affects(self, name: str, version: str) -> bool:
        """Whether this record, unless withdrawn, applies to ``version`` of project ``name``."""
        if self.withdrawn is not None:
            return False
        wanted = canonicalize_name(name)
        return any(package.name == wanted and package.affects(version) for package in self.affected)


@dataclass(slots=True)
class ReadStats:
    """What reading an export found; everything but ``records`` was skipped."""

    records: int = 0
    #: Files that are not a record: unreadable, not JSON/YAML, not an object, too large.
    unreadable: int = 0
    #: Records that break the schema where we rely on it (no id, a version that does not parse...).
    bad_records: int = 0
    #: Records that name no PyPI package.
    other_ecosystem: int = 0
    #: Zip files that could not be opened.
    corrupt_archives: int = 0

    @property
    def skipped(self) -> int:
        return self.unreadable + self.bad_records + self.other_ecosystem + self.corrupt_archives


def version_key(text: str) -> VersionKey:
    """``text`` as matching compares it: normalized (:func:`normalize_version`) and parsed (None
    for a legacy version, which lies in no range)."""
    try:
        parsed = Version(text)
    except InvalidVersion:
        return text.strip(), None
    return canonicalize_version(parsed, strip_trailing_zero=True), parsed


def normalize_version(text: str) -> str:
    """``text`` in a form equal for equal PEP 440 versions (``1.0`` and ``1.0.0`` alike).

    Text that is not a PEP 440 version is kept as written, so a listed legacy version still
    matches itself.
    """
    return canonicalize_version(text.strip(), strip_trailing_zero=True)


def _in_range(version: Version, events: Sequence[RangeEvent]) -> bool:
    """The OSV evaluation of one range: the last event at or below ``version`` decides."""
    affected = False
    for event in events:
        if event.kind == "introduced":
            if event.version is None or version >= event.version:
                affected = True
        elif event.version is not None:
            if event.kind == "fixed" and version >= event.version:
                affected = False
            elif event.kind == "last_affected" and version > event.version:
                affected = False
    return affected


def _make_event(kind: str, text: str) -> RangeEvent:
    known = next((event_kind for event_kind in _EVENT_KINDS if event_kind == kind), None)
    if known is None:
        raise BadRecord(f"unknown range event {kind!r}")
    if known == "introduced" and text == "0":
        return RangeEvent(known, None)
    try:
        return RangeEvent(known, Version(text))
    except InvalidVersion:
        raise BadRecord(f"{kind} version {text!r} is not a PEP 440 version") from None


# --------------------------------------------------------------------------- one record


def parse_record(data: object) -> Advisory:
    """An :class:`Advisory` from a decoded OSV record.

    Raises :class:`BadRecord` for what breaks the schema, and its subclass :class:`NotPyPI`
    for a record that names no PyPI package.
    """
    if not isinstance(data, Mapping):
        raise BadRecord("a record is a JSON object")
    advisory_id = data.get("id")
    if not isinstance(advisory_id, str) or not advisory_id.strip():
        raise BadRecord("the record has no id")
    modified = _timestamp(data, "modified", required=True)
    assert modified is not None
    affected = _merged(_parse_affected(entry) for entry in _list(data, "affected") if _is_pypi(entry))
    if not affected:
        raise NotPyPI(f"no PyPI package in {advisory_id}")
    summary = data.get("summary") or data.get("details") or ""
    return Advisory(
        id=advisory_id.strip(),
        aliases=tuple(str(alias) for alias in _list(data, "aliases")),
        summary=" ".join(str(summary).split())[:500],
        severity=tuple(entry for entry in _list(data, "severity") if isinstance(entry, Mapping)),
        published=_timestamp(data, "published"),
        modified=modified,
        withdrawn=_timestamp(data, "withdrawn"),
        affected=affected,
        record=data,
    )


def _list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRecord(f"{key} is not a list")
    return value


def _is_pypi(entry: object) -> bool:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("package"), Mapping):
        raise BadRecord("an affected entry has no package")
    return bool(entry["package"].get("ecosystem") == ECOSYSTEM)


def _parse_affected(entry: Mapping[str, Any]) -> AffectedPackage:
    name = entry["package"].get("name")
    if not isinstance(name, str) or not name.strip():
        raise BadRecord("an affected PyPI package has no name")
    ranges = []
    for item in _list(entry, "ranges"):
        if not isinstance(item, Mapping):
            raise BadRecord("a range is not an object")
        if item.get("type") != "ECOSYSTEM":
            continue
        events = []
        for event in _list(item, "events"):
            if not isinstance(event, Mapping):
                raise BadRecord("a range event is not an object")
            kinds = [kind for kind in _EVENT_KINDS if kind in event]
            if "limit" in event and not kinds:
                continue  # only meaningful for GIT ranges
            if len(kinds) != 1:
                raise BadRecord(f"a range event has {len(kinds)} kinds")
            events.append(_make_event(kinds[0], str(event[kinds[0]])))
        if events:
            ranges.append(tuple(sorted(events, key=RangeEvent.sort_key)))
    versions = frozenset(normalize_version(str(version)) for version in _list(entry, "versions"))
    return AffectedPackage(canonicalize_name(name), tuple(ranges), versions)


def _merged(packages: Iterable[AffectedPackage]) -> tuple[AffectedPackage, ...]:
    """One entry per project: a record may list a project in several ``affected`` entries."""
    by_name: dict[NormalizedName, AffectedPackage] = {}
    for package in packages:
        known = by_name.get(package.name)
        if known is not None:
            package = AffectedPackage(package.name, known.ranges + package.ranges, known.versions | package.versions)
        by_name[package.name] = package
    return tuple(by_name.values())


def _timestamp(data: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    """An RFC 3339 time as fixed-width UTC text."""
    value = data.get(key)
    if value is None:
        if required:
            raise BadRecord(f"the record has no {key} time")
        return None
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        raise BadRecord(f"{key} {value!r} is not an RFC 3339 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --------------------------------------------------------------------------- an export


def read_export(source: Path, stats: ReadStats) -> Generator[Advisory, None, None]:
    """Every PyPI advisory of the export at ``source``, counting what is skipped in ``stats``.

    Blocking (it reads files): run it in a worker thread. Raises ``OSError`` only when
    ``source`` itself cannot be read; everything inside it that fails is counted and skipped.
    """
    if source.is_dir():
        for path in sorted(source.rglob("*")):
            if any(part.startswith(".") for part in path.relative_to(source).parts):
                continue  # .git and the like
            if path.suffix == ".zip" and path.is_file():
                yield from _read_zip(path, stats)
            elif path.suffix in _RECORD_SUFFIXES and path.is_file():
                yield from _parsed(path.name, partial(Path.read_bytes, path), stats)
    else:
        source.stat()  # a missing source is the caller's error, not a skipped archive
        yield from _read_zip(source, stats)


def _read_zip(path: Path, stats: ReadStats) -> Iterator[Advisory]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        logger.warning("advisories: skipping %s: not a readable zip (%s)", path, exc)
        stats.corrupt_archives += 1
        return
    with archive:
        for member in archive.infolist():
            if member.is_dir() or not member.filename.endswith(_RECORD_SUFFIXES):
                continue
            if member.file_size > _MAX_RECORD_BYTES:
                stats.unreadable += 1
                continue
            yield from _parsed(member.filename, partial(archive.read, member), stats)


def _parsed(name: str, read: Callable[[], bytes], stats: ReadStats) -> Iterator[Advisory]:
    """The advisory in one file, or nothing (counted) when it is not a usable PyPI record."""
    try:
        raw = read()
        if len(raw) > _MAX_RECORD_BYTES:
            raise ValueError("too large for a record")
        data = json.loads(raw) if name.endswith(".json") else _as_json(yaml.load(raw, Loader=_YamlLoader))
    except (OSError, ValueError, yaml.YAMLError, zipfile.BadZipFile, EOFError) as exc:
        logger.warning("advisories: skipping %s: %s", name, " ".join(str(exc).split())[:200])
        stats.unreadable += 1
        return
    try:
        advisory = parse_record(data)
    except NotPyPI:
        stats.other_ecosystem += 1
        return
    except BadRecord as exc:
        logger.warning("advisories: skipping %s: %s", name, exc)
        stats.bad_records += 1
        return
    stats.records += 1
    yield advisory


def _as_json(value: object) -> object:
    """A YAML document as JSON would have given it: YAML reads unquoted times as datetimes."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat().replace("+00:00", "Z")
    if isinstance(value, dict):
        return {str(key): _as_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_json(item) for item in value]
    return value
