"""The index as it was at a past moment, from the current stored pages and the recorded history.

The index sync records only what the stored pages cannot tell (see :mod:`pypimirror.historychanges`):
when each file was first seen, each yank and un-yank, each status change, and each file and
project removed upstream. A project's state at a moment is therefore its current page with the
history applied backwards: :func:`project_as_of` reads the history of one project, and
:func:`page_as_of` turns the current page and that history into the page as it was.

The history is complete from :func:`history_start` on: the state the first recording run
found is taken as the state "since ever", so a moment before the start is answered with that
state (files still filtered by their upload time). Callers that must refuse such moments
compare with :func:`history_start`.

A file is listed at a moment if it was uploaded by then (its upload time; without one, when it
was first seen, or since ever) and not removed by then. Everything here blocks: run it in a
worker thread (``Database.run_read``, ``asyncio.to_thread``).
"""

from __future__ import annotations

__all__ = [
    "FileHistory",
    "ProjectAsOf",
    "history_start",
    "page_as_of",
    "project_as_of",
    "projects_as_of",
]

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from packaging.utils import NormalizedName
from sqlalchemy import Connection, Engine, select

from pypimirror import historydb
from pypimirror.historychanges import decode_entry, file_key, upload_epoch, yanked_value
from pypimirror.listedfiles import package_path_of
from pypimirror.pagemodel import DistFile, ProjectPage
from pypimirror.pages import RootEntry
from pypimirror.schema import serials

#: (status, reason) of PEP 792, or (None, None) for a project without a status.
Status = tuple[str | None, str | None]


@dataclass(frozen=True, slots=True)
class FileHistory:
    """What the history holds of one file; a file without a record was listed from the start.

    ``first_seen`` is None for a file listed when the history began. ``entry`` is the file as
    its page last listed it, kept once the page stopped listing it (removed upstream, or hidden
    by a quarantine).
    """

    first_seen: float | None
    removed_at: float | None
    entry: DistFile | None


@dataclass(frozen=True, slots=True)
class ProjectAsOf:
    """One project's history as it bears on ``moment``: apply it to the current page with :func:`page_as_of`.

    ``status`` is the project's (status, reason) then, or None when no change was recorded (the
    current page's holds all along). ``yanked`` maps the filenames whose yank state changed
    since the history began to their state then (False, True or the reason). ``files`` holds
    the record of each file that has one, by :func:`~pypimirror.historychanges.file_key`.
    ``display_name`` is the name the history knows (None: ask the current page).
    """

    name: NormalizedName
    moment: float
    display_name: str | None
    status: Status | None
    yanked: Mapping[str, bool | str]
    files: Mapping[int, FileHistory]

    def record_of(self, filename: str) -> FileHistory | None:
        return self.files.get(file_key(filename))

    def listed_then(self, dist: DistFile) -> bool:
        """True if ``dist`` was uploaded by ``moment`` and not removed by then."""
        record = self.record_of(dist.filename)
        if dist.upload_time is not None:
            since = upload_epoch(dist.upload_time)
        elif record is not None and record.first_seen is not None:
            since = record.first_seen
        else:
            since = -math.inf
        if since > self.moment:
            return False
        return record is None or record.removed_at is None or record.removed_at > self.moment

    def as_it_was(self, dist: DistFile) -> DistFile:
        """``dist`` with its yank state as of ``moment``."""
        yanked = self.yanked.get(dist.filename, dist.yanked)
        return dist if yanked == dist.yanked else dataclasses.replace(dist, yanked=yanked)

    def unlisted_entries(self) -> Iterator[DistFile]:
        """The files whose page no longer lists them (removed, or hidden by a quarantine)."""
        return (record.entry for record in self.files.values() if record.entry is not None)


def history_start(engine: Engine) -> float | None:
    """Since when the history is complete (Unix seconds); None while no run has recorded it."""
    with engine.connect() as conn:
        return historydb.read_history_start(conn)


def project_as_of(engine: Engine, name: NormalizedName, moment: float) -> ProjectAsOf | None:
    """The history of ``name`` as of ``moment``; None if the project did not exist then.

    A project exists at a moment if it is stored now and was not created after it, or was
    removed upstream after it.
    """
    with engine.connect() as conn:
        row = historydb.load_project_row(conn, name)
        if row is None:
            if not _is_stored(conn, name):
                return None
            return ProjectAsOf(name, moment, None, None, {}, {})
        if not _existed(row, moment):
            return None
        file_rows = historydb.load_file_rows(conn, row.id)
        events = historydb.load_events(conn, row.id)
    files = {
        r.file_key: FileHistory(r.first_seen, r.removed_at, decode_entry(r.entry) if r.entry else None)
        for r in file_rows
    }
    states = _states_at(events, moment)
    status = states.pop(None, None)
    yanked = {filename: yanked_value(state) for filename, state in states.items() if filename is not None}
    return ProjectAsOf(name, moment, row.display_name, status, yanked, files)


def page_as_of(
    current: ProjectPage | None,
    as_of: ProjectAsOf,
    *,
    prefix: str,
    held_locally: Callable[[str], bool],
) -> ProjectPage:
    """The page of ``as_of.name`` as it was at ``as_of.moment``, built from the current stored
    page (None when the project is gone now) and the history.

    Files the current page lists keep their entries, with their yank state as of then. A file
    the page no longer lists (removed upstream since, or hidden by a quarantine) is listed only
    if ``held_locally`` says a tier holds it (given its package path under
    ``{prefix}/packages/``): the upstream no longer offers it. ``versions`` are those of the
    files listed; a project quarantined then lists none.
    """
    current_files = current.files if current is not None else ()
    listed = {dist.filename for dist in current_files}
    kept = [as_of.as_it_was(dist) for dist in current_files if as_of.listed_then(dist)]
    kept += (
        as_of.as_it_was(dist)
        for dist in as_of.unlisted_entries()
        if dist.filename not in listed and as_of.listed_then(dist) and _is_held(dist, prefix, held_locally)
    )
    if as_of.status is not None:
        status, reason = as_of.status
    else:
        status, reason = (current.status, current.status_reason) if current is not None else (None, None)
    return ProjectPage(
        name=as_of.name,
        display_name=current.display_name if current is not None else (as_of.display_name or as_of.name),
        last_serial=current.last_serial if current is not None else 0,
        files=tuple(kept),
        versions=tuple({dist.version for dist in kept if dist.version is not None}),
        status=status,
        status_reason=reason,
    )


def projects_as_of(engine: Engine, moment: float) -> list[RootEntry]:
    """The root list as of ``moment``: each project that existed then, ordered by normalized name.

    A project stored now carries its current serial; one removed since carries 0.
    """
    with engine.connect() as conn:
        rows = {row.name: row for row in historydb.load_project_rows(conn)}
        entries: list[RootEntry] = []
        for name, display, serial in conn.execute(select(serials.c.name, serials.c.display_name, serials.c.serial)):
            row = rows.pop(name, None)
            if row is None or _existed(row, moment):
                entries.append((display, NormalizedName(name), serial))
    entries += ((row.display_name, row.name, 0) for row in rows.values() if row.removed_at is not None and _existed(row, moment))
    entries.sort(key=lambda entry: entry[1])
    return entries


def _is_stored(conn: Connection, name: NormalizedName) -> bool:
    return conn.execute(select(serials.c.name).where(serials.c.name == name)).first() is not None


def _existed(row: historydb.ProjectRow, moment: float) -> bool:
    created = row.created_at if row.created_at is not None else -math.inf
    removed = row.removed_at if row.removed_at is not None else math.inf
    return created <= moment < removed


def _states_at(events: list[historydb.EventRow], moment: float) -> dict[str | None, tuple[str | None, str | None]]:
    """Per filename (None: the project's status), the state at ``moment`` of everything that
    changed: the state after the last change by then, else the state before the first change.
    ``events`` are oldest first."""
    states: dict[str | None, tuple[str | None, str | None]] = {}
    for event in events:
        if event.at <= moment:
            states[event.filename] = (event.new_state, event.new_reason)
        elif event.filename not in states:
            states[event.filename] = (event.old_state, event.old_reason)
    return states


def _is_held(dist: DistFile, prefix: str, held_locally: Callable[[str], bool]) -> bool:
    path = package_path_of(dist.url, prefix)
    return path is not None and held_locally(path)
