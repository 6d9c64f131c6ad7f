"""What a project page says, and the one place upstream index JSON turns into it.

An upstream answer (a PEP 691 project page, or a ``/pypi/<name>/json`` document) is parsed
once, here, into frozen dataclasses; an answer without the shape the standards require raises
:class:`~pypimirror.errors.MalformedUpstreamError` naming the project and the field, so no
loosely typed dict travels further in. A :class:`ProjectPage` is canonical: files sorted by
(version, filename), versions sorted and unique, no files on a quarantined project. Equal
inputs therefore give equal pages, and equal pages render to equal bytes.
"""

from __future__ import annotations

__all__ = [
    "DistFile",
    "ProjectPage",
    "parse_json_api",
    "parse_simple_project_json",
]

import json
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Final
from urllib.parse import urlsplit

from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import InvalidVersion, Version

from pypimirror.distfilename import parse_dist_filename
from pypimirror.errors import MalformedUpstreamError

logger = logging.getLogger(__name__)

# [0-9] rather than \d: \d also matches non-ASCII digits, which no index may send.
_SHA256_HEX: Final = re.compile(r"[0-9a-fA-F]{64}")
_UPLOAD_TIME: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?Z")
_SERIAL_TEXT: Final = re.compile(r"[0-9]{1,19}")
_ZERO: Final = Version("0")
_UNKNOWN_PROJECT: Final = "<unknown project>"
_REPR_LIMIT: Final = 80
# Keys a PEP 691 file may use to announce a .metadata file, newest name first (PEP 714):
# readers take the new name and fall back to the old ones, as pip and uv do.
_CORE_METADATA_KEYS: Final = ("core-metadata", "data-dist-info-metadata", "dist-info-metadata")
# Versions longer than this are sorted without caching their key (real ones are far shorter).
_CACHEABLE_VERSION_LENGTH: Final = 128
# The schemes a file URL may have: "" is a URL relative to the page it is on.
_LINKABLE_SCHEMES: Final = frozenset({"", "http", "https"})


@dataclass(frozen=True, slots=True)
class DistFile:
    """One release file as an index lists it; ``url`` is the upstream URL, never rewritten here.

    ``yanked`` is ``False``, ``True`` or the yank reason. ``core_metadata`` is ``False`` (no
    ``.metadata`` file), ``True`` (one exists, digest unknown) or its sha256 hex digest.
    ``version`` is the release it belongs to, or ``None`` when that cannot be told.
    """

    filename: str
    url: str
    sha256: str | None
    requires_python: str | None
    size: int
    upload_time: str | None
    yanked: bool | str
    core_metadata: bool | str
    provenance: str | None
    version: str | None


@dataclass(frozen=True, slots=True)
class ProjectPage:
    """Everything a simple-index page of one project carries, in canonical order.

    Construction sorts ``files`` by (version, filename) and ``versions`` by PEP 440 (invalid
    versions last, by string), and drops the files of a quarantined project, which PEP 792
    says an index must not offer; so two pages built from the same facts compare equal.
    """

    name: NormalizedName
    display_name: str
    last_serial: int
    files: tuple[DistFile, ...]
    versions: tuple[str, ...]
    status: str | None = None
    status_reason: str | None = None

    def __post_init__(self) -> None:
        files = () if self.status == "quarantined" else _sort_files(self.files)
        object.__setattr__(self, "files", files)
        object.__setattr__(self, "versions", _sort_versions(self.versions))


def _version_key(version: str | None) -> tuple[int, Version, str]:
    """Sort PEP 440 versions by their meaning, then invalid ones by string, then unknown ones.

    Cached, as a project's versions are compared many times while its files are sorted; a
    version longer than any real one (an upstream's word) is keyed without being kept.
    """
    if version is not None and len(version) > _CACHEABLE_VERSION_LENGTH:
        return _compute_version_key(version)
    return _cached_version_key(version)


def _compute_version_key(version: str | None) -> tuple[int, Version, str]:
    if version is None:
        return (2, _ZERO, "")
    try:
        return (0, Version(version), version)
    except InvalidVersion:
        return (1, _ZERO, version)


_cached_version_key = lru_cache(maxsize=4096)(_compute_version_key)


def _sort_versions(versions: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(versions), key=_version_key))


def _sort_files(files: Iterable[DistFile]) -> tuple[DistFile, ...]:
    # PyPI's order; filenames are unique within a page (the parsers check), so it is total.
    return tuple(sorted(files, key=lambda f: (_version_key(f.version), f.filename)))


# --- reading upstream JSON ---------------------------------------------------------------


def _malformed(project: str, field: str, problem: str, *value: object) -> MalformedUpstreamError:
    shown = ""
    if value:
        text = repr(value[0])
        shown = f", got {text if len(text) <= _REPR_LIMIT else text[:_REPR_LIMIT] + '...'}"
    return MalformedUpstreamError(f"upstream page of {project!r}: {field}: {problem}{shown}")


class _Fields:
    """One JSON object of an upstream answer, read with the path its errors will name."""

    __slots__ = ("_obj", "_path", "project")

    def __init__(self, obj: object, project: str, path: str) -> None:
        if not isinstance(obj, dict):
            raise _malformed(project, path or "(document)", "expected a JSON object", obj)
        self._obj: dict[str, object] = obj
        self._path = path
        self.project = project

    def path(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def fail(self, key: str, problem: str, *value: object) -> MalformedUpstreamError:
        return _malformed(self.project, self.path(key), problem, *value)

    def get(self, key: str) -> object:
        return self._obj.get(key)

    def has(self, key: str) -> bool:
        return self._obj.get(key) is not None

    def text(self, key: str) -> str:
        value = self._obj.get(key)
        if not isinstance(value, str) or not value:
            raise self.fail(key, "expected a non-empty string", *self._given(key))
        return value

    def optional_text(self, key: str) -> str | None:
        """Absent, null and ``""`` all mean unset (bandersnatch writes ``""`` for unset)."""
        value = self._obj.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise self.fail(key, "expected a string or null", value)
        return value

    def flag(self, key: str) -> bool:
        """A boolean; absent or null is false."""
        value = self._obj.get(key)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise self.fail(key, "expected a boolean", value)
        return value

    def integer(self, key: str) -> int:
        value = self._obj.get(key)
        if type(value) is not int or value < 0:
            raise self.fail(key, "expected a non-negative integer", *self._given(key))
        return value

    def child(self, key: str) -> _Fields:
        if key not in self._obj:
            raise self.fail(key, "missing")
        return _Fields(self._obj[key], self.project, self.path(key))

    def array(self, key: str) -> list[object]:
        value = self._obj.get(key)
        if not isinstance(value, list):
            raise self.fail(key, "expected a JSON array", *self._given(key))
        return value

    def items(self) -> Iterator[tuple[str, object]]:
        return iter(self._obj.items())

    def _given(self, key: str) -> tuple[object, ...]:
        return (self._obj[key],) if key in self._obj else ()


def _load(data: object, project: str) -> object:
    """Decode the raw body; anything not bytes is taken as already-decoded JSON."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        return data
    try:
        return json.loads(bytes(data))
    except (ValueError, RecursionError) as exc:
        raise MalformedUpstreamError(f"upstream page of {project!r}: not valid JSON: {exc}") from exc


def _label(doc: object, *path: str) -> str:
    """The project's name for error messages, looked up leniently before validation."""
    value = doc
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, str) and value else _UNKNOWN_PROJECT


def _filename(fields: _Fields) -> str:
    filename = fields.text("filename")
    if any(c in filename for c in "/\\\0"):
        raise fields.fail("filename", "a filename cannot hold '/', '\\' or NUL", filename)
    return filename


def _sha256(fields: _Fields, key: str) -> str | None:
    value = fields.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not _SHA256_HEX.fullmatch(value):
        raise fields.fail(key, "expected 64 hex digits", value)
    return value.lower()


def _upload_time(fields: _Fields, key: str) -> str | None:
    """PEP 700: ``yyyy-mm-ddThh:mm:ss[.ffffff]Z`` in UTC, or nothing; never a bad value."""
    value = fields.optional_text(key)
    if value is None:
        return None
    if not _UPLOAD_TIME.fullmatch(value):
        raise fields.fail(key, "expected yyyy-mm-ddThh:mm:ss[.ffffff]Z", value)
    try:
        datetime.fromisoformat(value[:-1])
    except ValueError:
        raise fields.fail(key, "not a real date and time", value) from None
    return value


def _yanked(fields: _Fields, key: str) -> bool | str:
    """PEP 592: false, true or a reason. ``""`` is read as yanked without a reason, because
    a mirror must never drop a yank marker and uv reads any string as yanked."""
    value = fields.get(key)
    if value is None or value is False:
        return False
    if value is True or value == "":
        return True
    if not isinstance(value, str):
        raise fields.fail(key, "expected a boolean or a reason string", value)
    return value


def _core_metadata(fields: _Fields, keys: Iterable[str]) -> bool | str:
    """PEP 658/714: the first of ``keys`` present decides; a digest without sha256 means true."""
    for key in keys:
        value = fields.get(key)
        if value is None:
            continue
        if isinstance(value, bool):
            return value
        if not isinstance(value, dict):
            raise fields.fail(key, "expected a boolean or an object of digests", value)
        digests = _Fields(value, fields.project, fields.path(key))
        return _sha256(digests, "sha256") or True
    return False


def _provenance(fields: _Fields, key: str) -> str | None:
    """PEP 740 wants a fully qualified https URL; anything else is dropped, not passed on."""
    value = fields.optional_text(key)
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.netloc:
        logger.debug("%s: dropping non-https provenance %r", fields.project, value)
        return None
    return value


def _version_from_filename(filename: str) -> str | None:
    parsed = parse_dist_filename(filename)
    return None if parsed is None else str(parsed.version)


def _serial(fields: _Fields, key: str) -> int:
    """PyPI sends an int; bandersnatch writes a string of digits, which is read as well."""
    value = fields.get(key)
    if isinstance(value, str) and _SERIAL_TEXT.fullmatch(value):
        return int(value)
    return fields.integer(key)


def _linkable(files: list[DistFile], project: str) -> list[DistFile]:
    """``files`` without those whose URL is not http(s) or relative, each dropped with a warning.

    Our pages turn every file URL into a link, and a ``javascript:``, ``data:`` or ``file:`` link
    would be live in a browser however well escaped; no index serves files that way. A relative
    URL (no scheme) resolves against the upstream page, which is http(s). The scheme is read by
    the same parser ``urljoin`` uses, so what is kept here is what the page links to.
    """
    kept = [f for f in files if _is_linkable(f.url)]
    if len(kept) == len(files):
        return files
    for f in files:
        if not _is_linkable(f.url):
            logger.warning(
                "upstream page of %r: dropping file %r, its URL is not http(s) or relative: %s",
                project, f.filename, _shown(f.url),
            )
    return kept


def _is_linkable(url: str) -> bool:
    try:
        return urlsplit(url).scheme in _LINKABLE_SCHEMES
    except ValueError:  # e.g. an unclosed "[" in the host
        return False


def _shown(value: str) -> str:
    text = repr(value)
    return text if len(text) <= _REPR_LIMIT else text[:_REPR_LIMIT] + "..."


def _check_unique(files: list[DistFile], project: str, where: str) -> None:
    seen: set[str] = set()
    for f in files:
        if f.filename in seen:
            raise _malformed(project, where, f"filename {f.filename!r} is listed twice")
        seen.add(f.filename)


# --- PEP 691 project pages ------------------------------------------------------------


def parse_simple_project_json(
    data: bytes | object, *, display_name: str | None = None, serial: int | None = None
) -> ProjectPage:
    """Read an upstream PEP 691 project page (API 1.x) into a :class:`ProjectPage`.

    The page only holds the normalized name, so ``display_name`` supplies the real one when the
    caller knows it. ``serial`` (e.g. from ``X-PyPI-Last-Serial``, already checked against the
    listing) wins over ``meta._last-serial``. Unknown keys are ignored; of the hashes only
    sha256 is kept. Our own output parses back to an equal page, so a mirror can chain from us.
    """
    doc = _load(data, display_name or _UNKNOWN_PROJECT)
    top = _Fields(doc, display_name or _label(doc, "name"), "")
    raw_name = top.text("name")
    last_serial = serial
    if top.has("meta"):
        meta = top.child("meta")
        _check_api_version(meta)
        if last_serial is None:
            last_serial = _serial(meta, "_last-serial")
    elif last_serial is None:
        raise top.fail("meta", "missing")
    files = _linkable([
        _parse_simple_file(_Fields(item, top.project, f"files[{i}]"))
        for i, item in enumerate(top.array("files"))
    ], top.project)
    _check_unique(files, top.project, "files")
    status, reason = _project_status(top)
    return ProjectPage(
        name=canonicalize_name(raw_name),
        display_name=display_name or raw_name,
        last_serial=last_serial,
        files=tuple(files),
        versions=_simple_versions(top, files),
        status=status,
        status_reason=reason,
    )


def _check_api_version(meta: _Fields) -> None:
    """PEP 629: a major version we do not know is a hard failure; minor versions are fine."""
    version = meta.get("api-version")
    if version is None:
        return
    if not isinstance(version, str) or version.partition(".")[0] != "1":
        raise meta.fail("api-version", "unsupported major version", version)


def _parse_simple_file(fields: _Fields) -> DistFile:
    filename = _filename(fields)
    return DistFile(
        filename=filename,
        url=fields.text("url"),
        sha256=_sha256(fields.child("hashes"), "sha256"),
        requires_python=fields.optional_text("requires-python"),
        size=fields.integer("size"),
        upload_time=_upload_time(fields, "upload-time"),
        yanked=_yanked(fields, "yanked"),
        core_metadata=_core_metadata(fields, _CORE_METADATA_KEYS),
        provenance=_provenance(fields, "provenance"),
        version=_version_from_filename(filename),
    )


def _simple_versions(top: _Fields, files: list[DistFile]) -> tuple[str, ...]:
    """PEP 700 ``versions``; a 1.0 page has none, so they are derived from the filenames."""
    if not top.has("versions"):
        return tuple({f.version for f in files if f.version is not None})
    versions: list[str] = []
    for i, version in enumerate(top.array("versions")):
        if not isinstance(version, str) or not version:
            raise top.fail(f"versions[{i}]", "expected a non-empty string", version)
        versions.append(version)
    return tuple(versions)


def _project_status(top: _Fields) -> tuple[str | None, str | None]:
    """PEP 792's top-level ``project-status`` object; the reason only counts with a status."""
    if not top.has("project-status"):
        return None, None
    status = top.child("project-status")
    marker = status.optional_text("status")
    if marker is None:
        return None, None
    return marker, status.optional_text("reason")


# --- the PyPI JSON API ------------------------------------------------------------------


def parse_json_api(data: bytes | object) -> ProjectPage:
    """Read a ``/pypi/<name>/json`` document into a :class:`ProjectPage` (the fallback when an upstream serves no JSON simple page).

    That API knows neither provenance nor project status, so both stay unset; ``versions``
    holds the releases that have files, as PyPI's own simple pages do.
    """
    doc = _load(data, _UNKNOWN_PROJECT)
    top = _Fields(doc, _label(doc, "info", "name"), "")
    display_name = top.child("info").text("name")
    last_serial = top.integer("last_serial")
    files: list[DistFile] = []
    versions: list[str] = []
    for version, entries in top.child("releases").items():
        where = f"releases[{version!r}]"
        if not isinstance(entries, list):
            raise _malformed(top.project, where, "expected a JSON array", entries)
        files.extend(
            _parse_json_api_file(_Fields(entry, top.project, f"{where}[{i}]"), version)
            for i, entry in enumerate(entries)
        )
        if entries:
            versions.append(version)
    files = _linkable(files, top.project)
    _check_unique(files, top.project, "releases")
    return ProjectPage(
        name=canonicalize_name(display_name),
        display_name=display_name,
        last_serial=last_serial,
        files=tuple(files),
        versions=tuple(versions),
    )


def _parse_json_api_file(fields: _Fields, version: str) -> DistFile:
    reason = fields.optional_text("yanked_reason")
    sha256 = _sha256(fields.child("digests"), "sha256") if fields.has("digests") else None
    return DistFile(
        filename=_filename(fields),
        url=fields.text("url"),
        sha256=sha256,
        requires_python=fields.optional_text("requires_python"),
        size=fields.integer("size"),
        upload_time=_upload_time(fields, "upload_time_iso_8601"),
        yanked=(reason or True) if fields.flag("yanked") else False,
        core_metadata=_core_metadata(fields, ("core-metadata",)),
        provenance=None,
        version=version,
    )
