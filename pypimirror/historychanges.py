"""What changed on one project between its stored page and the page a sync just fetched.

The index sync keeps no copy of old pages: the page on disk *is* the previous state, so the
history is recorded by comparing it with the new page before the new one replaces it. The
comparison is pure and runs in a worker thread; :mod:`pypimirror.historydb` stores its result.

The encodings shared by the writer and the reader live here too: a file is keyed by a 64-bit
hash of its filename (:func:`file_key`), a file that left the page keeps its entry as a JSON
array of the :class:`~pypimirror.pagemodel.DistFile` fields, and yank and status states are
``(state, reason)`` pairs of text, so both kinds of change fit one events table.
"""

from __future__ import annotations

__all__ = [
    "QUARANTINED",
    "YANKED",
    "ProjectChanges",
    "StateChange",
    "decode_entry",
    "diff_stored_page",
    "encode_entry",
    "file_key",
    "removal_changes",
    "upload_epoch",
    "yank_state",
    "yanked_value",
]

import hashlib
import json
import logging
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from typing import Final

from packaging.utils import NormalizedName

from pypimirror.errors import MalformedUpstreamError
from pypimirror.pagemodel import DistFile, ProjectPage, parse_simple_project_json

logger = logging.getLogger(__name__)

#: The state text of a yanked file in the events table (a non-yanked file's state is NULL).
YANKED: Final = "yanked"
#: PEP 792's status under which a project offers no files.
QUARANTINED: Final = "quarantined"
_ENTRY_FIELDS: Final = tuple(f.name for f in fields(DistFile))

#: A yank or status state: (state, reason); (None, None) is "not yanked" or "no status".
State = tuple[str | None, str | None]


@dataclass(frozen=True, slots=True)
class StateChange:
    """One file's yank state (``filename`` set) or the project's status (``filename`` None)."""

    filename: str | None
    old: State
    new: State


@dataclass(frozen=True, slots=True)
class ProjectChanges:
    """Everything one sync saw change on one project, observed at ``at`` (Unix seconds).

    ``created_at`` is set for a project the mirror had no page of (the earliest of ``at`` and
    its files' upload times); ``removed`` for a project gone upstream. ``new_files`` are
    filenames first listed now; ``gone_files`` left the page (removed upstream) and ``hidden_files``
    are still upstream but no longer listed because the project was quarantined: both keep
    their last entry. ``returned`` holds the filenames listed again when a quarantine ended (the
    files hidden then and not among them were removed meanwhile).
    """

    name: NormalizedName
    display_name: str | None
    at: float
    created_at: float | None = None
    removed: bool = False
    new_files: tuple[str, ...] = ()
    gone_files: tuple[DistFile, ...] = ()
    hidden_files: tuple[DistFile, ...] = ()
    returned: tuple[str, ...] | None = None
    changes: tuple[StateChange, ...] = ()


def file_key(filename: str) -> int:
    """A signed 64-bit key for ``filename``: a fixed 8 bytes in the files table, whatever the
    name's length (wheel names run to 80+ characters); two names of one project never share one
    in practice (a chance of about n²/2⁶⁴)."""
    digest = hashlib.blake2b(filename.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def encode_entry(dist: DistFile) -> str:
    """The file's page entry as JSON text (ASCII-escaped, so any string survives)."""
    return json.dumps([getattr(dist, name) for name in _ENTRY_FIELDS], separators=(",", ":"))


def decode_entry(text: str) -> DistFile:
    """The :class:`DistFile` that :func:`encode_entry` wrote."""
    return DistFile(*json.loads(text))


def upload_epoch(upload_time: str) -> float:
    """A PEP 700 upload time (``yyyy-mm-ddThh:mm:ss[.ffffff]Z``, checked by the page parser) in Unix seconds."""
    return datetime.fromisoformat(upload_time[:-1]).replace(tzinfo=timezone.utc).timestamp()


def yank_state(yanked: bool | str) -> State:
    """A page's ``yanked`` value as a state: not yanked, yanked, or yanked with a reason."""
    if yanked is False:
        return (None, None)
    return (YANKED, yanked if isinstance(yanked, str) else None)


def yanked_value(state: State) -> bool | str:
    """The inverse of :func:`yank_state`."""
    marker, reason = state
    if marker is None:
        return False
    return reason if reason else True


def diff_stored_page(
    old_json: bytes | None, new: ProjectPage, new_json: bytes, *, at: float
) -> ProjectChanges | None:
    """The changes from the stored page (``old_json``, None if there is none) to ``new``.

    ``new_json`` is ``new`` as the sync renders it: equal bytes mean nothing to record, the
    common case of a serial bumped without a visible change, which then costs no parsing. The
    stored page is our own rendering, so only the few fields compared are read from it; it is
    parsed in full only when files left it, whose entries are then kept. A stored page that
    cannot be read is logged and taken as the new starting point.
    """
    if old_json is None:
        return _created(new, at)
    if old_json == new_json:
        return None
    try:
        changes = _diff(_Outline.of(old_json), old_json, new, at)
    except (ValueError, TypeError, KeyError, RecursionError, MalformedUpstreamError) as exc:
        logger.warning("history of %s: the stored page is unreadable, nothing recorded: %r", new.name, exc)
        return None
    return changes if _records_anything(changes) else None


@dataclass(frozen=True, slots=True)
class _Outline:
    """What the comparison reads of a stored page: its status and each file's yank state."""

    status: State
    yanked: dict[str, bool | str]

    @classmethod
    def of(cls, page_json: bytes) -> _Outline:
        """Read our own rendering (pages.render_project_json); a page of another shape raises."""
        doc = json.loads(page_json)
        marker = doc.get("project-status") or {}
        yanked = {str(entry["filename"]): entry["yanked"] for entry in doc["files"]}
        if not all(isinstance(value, (bool, str)) for value in yanked.values()):
            raise TypeError("a yanked value is neither a boolean nor a reason")
        return cls((marker.get("status"), marker.get("reason")), yanked)

    @property
    def quarantined(self) -> bool:
        return self.status[0] == QUARANTINED


def _entries(page_json: bytes, filenames: set[str]) -> tuple[DistFile, ...]:
    """The full entries of ``filenames`` on a stored page (parsed only for files that left it)."""
    if not filenames:
        return ()
    return tuple(f for f in parse_simple_project_json(page_json).files if f.filename in filenames)


def removal_changes(
    old_json: bytes | None, name: NormalizedName, *, at: float
) -> ProjectChanges:
    """The removal of ``name`` upstream: the project and every file its stored page lists."""
    gone: tuple[DistFile, ...] = ()
    if old_json is not None:
        try:
            gone = parse_simple_project_json(old_json).files
        except MalformedUpstreamError as exc:
            logger.warning("history of %s: the stored page is unreadable, its files not recorded: %s", name, exc)
    return ProjectChanges(name=name, display_name=None, at=at, removed=True, gone_files=gone)


def _created(new: ProjectPage, at: float) -> ProjectChanges:
    uploads = [upload_epoch(f.upload_time) for f in new.files if f.upload_time is not None]
    status = (new.status, new.status_reason)
    return ProjectChanges(
        name=new.name,
        display_name=new.display_name,
        at=at,
        created_at=min([at, *uploads]),
        new_files=tuple(f.filename for f in new.files),
        changes=(StateChange(None, (None, None), status),) if new.status is not None else (),
    )


def _diff(old: _Outline, old_json: bytes, new: ProjectPage, at: float) -> ProjectChanges:
    changes: list[StateChange] = []
    new_status = (new.status, new.status_reason)
    if old.status != new_status:
        changes.append(StateChange(None, old.status, new_status))
    if new.status == QUARANTINED:  # a quarantined page lists no files: they are hidden, not removed
        hidden = () if old.quarantined else _entries(old_json, set(old.yanked))
        return ProjectChanges(new.name, new.display_name, at, hidden_files=hidden, changes=tuple(changes))
    if old.quarantined:
        listed = tuple(f.filename for f in new.files)
        return ProjectChanges(
            new.name, new.display_name, at, new_files=listed, returned=listed, changes=tuple(changes)
        )
    for dist in new.files:
        previous = old.yanked.get(dist.filename)
        if previous is not None and previous != dist.yanked:
            changes.append(StateChange(dist.filename, yank_state(previous), yank_state(dist.yanked)))
    now_listed = {f.filename for f in new.files}
    return ProjectChanges(
        new.name,
        new.display_name,
        at,
        new_files=tuple(f.filename for f in new.files if f.filename not in old.yanked),
        gone_files=_entries(old_json, {name for name in old.yanked if name not in now_listed}),
        changes=tuple(changes),
    )


def _records_anything(changes: ProjectChanges) -> bool:
    return bool(
        changes.new_files or changes.gone_files or changes.hidden_files or changes.returned is not None
        or changes.changes
    )
