"""The reads and writes of the history tables, as plain ``fn(conn, ...)`` like :mod:`pypimirror.queries`.

Writes come in batches of many projects (one transaction per batch) and are idempotent: a sync
cut off after storing a batch but before writing its pages records the same changes again on
the next run, which keeps the first first-seen and removal times and only repeats an event
(harmless: the state after it is the same). Tables: :mod:`pypimirror.schema`.
"""

from __future__ import annotations

__all__ = [
    "EventRow",
    "FileRow",
    "ProjectRow",
    "end_history",
    "load_events",
    "load_file_rows",
    "load_project_row",
    "load_project_rows",
    "read_history_start",
    "record_changes",
    "start_history",
]

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from packaging.utils import NormalizedName
from sqlalchemy import Connection, bindparam, delete, func, insert, select, update

from pypimirror.historychanges import ProjectChanges, encode_entry, file_key
from pypimirror.queries import chunks, dialect_insert
from pypimirror.schema import history_events, history_files, history_projects, history_state, serials


class ProjectRow(NamedTuple):
    id: int
    name: NormalizedName
    display_name: str
    created_at: float | None
    removed_at: float | None


class FileRow(NamedTuple):
    file_key: int
    first_seen: float | None
    removed_at: float | None
    entry: str | None


class EventRow(NamedTuple):
    filename: str | None
    at: float
    old_state: str | None
    old_reason: str | None
    new_state: str | None
    new_reason: str | None


# --- the start of the history ----------------------------------------------------------------


def read_history_start(conn: Connection) -> float | None:
    """Since when the history is complete (Unix seconds); None before the first recording run."""
    started: float | None = conn.execute(select(history_state.c.started_at)).scalar()
    return started


def start_history(conn: Connection, started_at: float) -> None:
    """Begin a new history at ``started_at``: whatever an older, broken-off one recorded goes."""
    _clear(conn)
    conn.execute(insert(history_state).values(id=1, started_at=started_at))


def end_history(conn: Connection) -> bool:
    """End the history (a run that does not record it); True if there was one."""
    ended = conn.execute(delete(history_state)).rowcount > 0
    if ended:
        _clear(conn)
    return ended


def _clear(conn: Connection) -> None:
    for table in (history_state, history_events, history_files, history_projects):
        conn.execute(delete(table))


# --- recording ---------------------------------------------------------------------------------


def record_changes(conn: Connection, batch: Sequence[ProjectChanges]) -> None:
    """Store the changes of many projects: a handful of statements, whatever the batch size."""
    if not batch:
        return
    ids = _project_ids(conn, batch)
    new_files: list[dict[str, Any]] = []
    left_page: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for changes in batch:
        pid, at = ids[changes.name], changes.at
        new_files += ({"project_id": pid, "file_key": file_key(f), "first_seen": at} for f in changes.new_files)
        left_page += (
            {"project_id": pid, "file_key": file_key(f.filename), "removed_at": at, "entry": encode_entry(f)}
            for f in changes.gone_files
        )
        left_page += (
            {"project_id": pid, "file_key": file_key(f.filename), "removed_at": None, "entry": encode_entry(f)}
            for f in changes.hidden_files
        )
        events += (
            {
                "project_id": pid, "filename": change.filename, "at": at,
                "old_state": change.old[0], "old_reason": change.old[1],
                "new_state": change.new[0], "new_reason": change.new[1],
            }
            for change in changes.changes
        )
        if changes.returned is not None:
            _remove_hidden_except(conn, pid, changes.returned, at)
    _insert_new_files(conn, new_files)
    _store_left_page(conn, left_page)
    if events:
        conn.execute(insert(history_events), events)


def _project_ids(conn: Connection, batch: Sequence[ProjectChanges]) -> dict[NormalizedName, int]:
    """The id of each project of the batch, creating rows (and updating removals) as needed."""
    names = sorted({changes.name for changes in batch})
    ids = _load_ids(conn, names)
    displays = _display_names(conn, [c.name for c in batch if c.display_name is None and c.name not in ids])
    missing: dict[NormalizedName, dict[str, Any]] = {}
    for changes in batch:
        if changes.name in ids or changes.name in missing:
            continue
        missing[changes.name] = {
            "name": changes.name,
            "display_name": changes.display_name or displays.get(changes.name, changes.name),
            "created_at": changes.created_at,
            "removed_at": changes.at if changes.removed else None,
        }
    if missing:
        conn.execute(insert(history_projects), list(missing.values()))
        ids.update(_load_ids(conn, sorted(missing)))
    table = history_projects
    recreated = [
        {"pid": ids[c.name], "display": c.display_name} for c in batch
        if c.created_at is not None and c.name not in missing
    ]
    if recreated:  # a name that comes back after a removal is a live project again
        conn.execute(
            update(table).where(table.c.id == bindparam("pid")).values(removed_at=None, display_name=bindparam("display")),
            recreated,
        )
    removed = [{"pid": ids[c.name], "at": c.at} for c in batch if c.removed and c.name not in missing]
    if removed:
        conn.execute(
            update(table).where(table.c.id == bindparam("pid"), table.c.removed_at.is_(None)).values(removed_at=bindparam("at")),
            removed,
        )
    return ids


def _load_ids(conn: Connection, names: Sequence[str]) -> dict[NormalizedName, int]:
    table = history_projects
    found: dict[NormalizedName, int] = {}
    for chunk in chunks(names):
        found.update(
            (NormalizedName(name), pid)
            for pid, name in conn.execute(select(table.c.id, table.c.name).where(table.c.name.in_(chunk)))
        )
    return found


def _display_names(conn: Connection, names: Sequence[str]) -> dict[str, str]:
    """The display names the serials table holds for ``names`` (a removal knows only the name)."""
    shown: dict[str, str] = {}
    for chunk in chunks(sorted(set(names))):
        query = select(serials.c.name, serials.c.display_name).where(serials.c.name.in_(chunk))
        shown.update((name, display) for name, display in conn.execute(query))
    return shown


def _insert_new_files(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """First sightings; a file seen before keeps its first time, and one listed again after a
    removal is live again."""
    if not rows:
        return
    stmt = dialect_insert(conn, history_files)
    stmt = stmt.on_conflict_do_update(
        index_elements=[history_files.c.project_id, history_files.c.file_key],
        set_={"removed_at": None},
        where=history_files.c.removed_at.is_not(None),
    )
    conn.execute(stmt, rows)


def _store_left_page(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Files that left their page keep their entry; a removal keeps its first time."""
    if not rows:
        return
    stmt = dialect_insert(conn, history_files)
    stmt = stmt.on_conflict_do_update(
        index_elements=[history_files.c.project_id, history_files.c.file_key],
        set_={
            "entry": stmt.excluded.entry,
            "removed_at": func.coalesce(history_files.c.removed_at, stmt.excluded.removed_at),
        },
    )
    conn.execute(stmt, rows)


def _remove_hidden_except(conn: Connection, pid: int, listed: Sequence[str], at: float) -> None:
    """A quarantine ended: the files hidden by it that the page no longer lists were removed."""
    table = history_files
    keep = {file_key(name) for name in listed}
    hidden = conn.execute(
        select(table.c.file_key).where(
            table.c.project_id == pid, table.c.entry.is_not(None), table.c.removed_at.is_(None)
        )
    ).scalars()
    gone = [key for key in hidden if key not in keep]
    for chunk in chunks(gone):
        conn.execute(
            update(table).where(table.c.project_id == pid, table.c.file_key.in_(chunk)).values(removed_at=at)
        )


# --- reading -----------------------------------------------------------------------------------


def load_project_row(conn: Connection, name: NormalizedName) -> ProjectRow | None:
    t = history_projects
    row = conn.execute(
        select(t.c.id, t.c.name, t.c.display_name, t.c.created_at, t.c.removed_at).where(t.c.name == name)
    ).first()
    return ProjectRow(*row) if row is not None else None


def load_project_rows(conn: Connection) -> Iterator[ProjectRow]:
    t = history_projects
    for row in conn.execute(select(t.c.id, t.c.name, t.c.display_name, t.c.created_at, t.c.removed_at)):
        yield ProjectRow(*row)


def load_file_rows(conn: Connection, project_id: int) -> list[FileRow]:
    t = history_files
    query = select(t.c.file_key, t.c.first_seen, t.c.removed_at, t.c.entry).where(t.c.project_id == project_id)
    return [FileRow(*row) for row in conn.execute(query)]


def load_events(conn: Connection, project_id: int) -> list[EventRow]:
    """The project's recorded changes, oldest first."""
    t = history_events
    query = (
        select(t.c.filename, t.c.at, t.c.old_state, t.c.old_reason, t.c.new_state, t.c.new_reason)
        .where(t.c.project_id == project_id)
        .order_by(t.c.at, t.c.id)
    )
    return [EventRow(*row) for row in conn.execute(query)]
