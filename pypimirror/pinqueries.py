"""The named queries of pinned sets: store, list, read and remove them, and what the cache keeps.

Each is a plain ``fn(conn, ...)`` run in the caller's transaction, like :mod:`pypimirror.queries`
(kept apart so the pinned sets' statements live in one place). The tables are
:data:`~pypimirror.schema.pinned_sets` and :data:`~pypimirror.schema.pinned_files`.
"""

from __future__ import annotations

__all__ = [
    "PINS_LOCK_KEY",
    "PinnedFile",
    "PinnedSet",
    "PinnedSetSummary",
    "delete_pinned_set",
    "load_pinned_files",
    "load_pinned_set",
    "lock_pinned_sets",
    "pinned_set_summaries",
    "store_pinned_set",
]

import json
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, delete, func, insert, select, text

from pypimirror.schema import local_files, pinned_files, pinned_sets


#: Arbitrary key of the PostgreSQL advisory lock that serialises changes to the pinned sets.
PINS_LOCK_KEY = 0x7069_6E73  # "pins"


@dataclass(frozen=True, slots=True)
class PinnedFile:
    """One file of a set: its package path and what its stored page listed."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class PinnedSet:
    """A stored set: where it came from, its files in path order, and the paths of those a node holds."""

    name: str
    created_at: float
    sources: tuple[str, ...]
    platforms: tuple[str, ...]
    pythons: tuple[str, ...]
    files: tuple[PinnedFile, ...]
    local: frozenset[str]


@dataclass(frozen=True, slots=True)
class PinnedSetSummary:
    """A set as ``status`` and the info page show it; ``local`` counts its files this node holds."""

    name: str
    created_at: float
    files: int
    bytes: int
    local: int


def lock_pinned_sets(conn: Connection) -> None:
    """Hold the pinned sets for the rest of the transaction, so a check of the budget and the
    store that follows it cannot interleave with another ``pin add``. SQLite's write
    transactions (``BEGIN IMMEDIATE``) are serialised already; PostgreSQL takes an advisory lock."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PINS_LOCK_KEY})


def store_pinned_set(
    conn: Connection,
    name: str,
    *,
    created_at: float,
    sources: Sequence[str],
    platforms: Sequence[str],
    pythons: Sequence[str],
    files: Sequence[PinnedFile],
) -> bool:
    """Store the set ``name``, replacing one of that name; True when it replaced one."""
    replaced = delete_pinned_set(conn, name)
    conn.execute(insert(pinned_sets).values(
        name=name, created_at=created_at, sources=json.dumps(list(sources)),
        platforms=json.dumps(list(platforms)), pythons=json.dumps(list(pythons)),
    ))
    rows = [{"set_name": name, "file_path": f.path, "size": f.size, "sha256": f.sha256} for f in files]
    if rows:
        conn.execute(insert(pinned_files), rows)
    return replaced


def delete_pinned_set(conn: Connection, name: str) -> bool:
    """Forget the set ``name`` and its files (they become ordinary candidates); False if there was none."""
    conn.execute(delete(pinned_files).where(pinned_files.c.set_name == name))
    return conn.execute(delete(pinned_sets).where(pinned_sets.c.name == name)).rowcount > 0


def load_pinned_set(conn: Connection, name: str, node_id: str) -> PinnedSet | None:
    """The set ``name`` (which of its files ``node_id`` holds too), or None when no set has that name."""
    row = conn.execute(select(pinned_sets).where(pinned_sets.c.name == name)).first()
    if row is None:
        return None
    query = (
        select(pinned_files.c.file_path, pinned_files.c.size, pinned_files.c.sha256, local_files.c.tier)
        .select_from(pinned_files.outerjoin(
            local_files,
            (local_files.c.file_path == pinned_files.c.file_path) & (local_files.c.node_id == node_id),
        ))
        .where(pinned_files.c.set_name == name)
        .order_by(pinned_files.c.file_path)
    )
    files: list[PinnedFile] = []
    local: set[str] = set()
    for path, size, sha256, tier in conn.execute(query):
        files.append(PinnedFile(path, int(size), sha256))
        if tier is not None:
            local.add(path)
    return PinnedSet(
        name=row.name, created_at=float(row.created_at), sources=tuple(json.loads(row.sources)),
        platforms=tuple(json.loads(row.platforms)), pythons=tuple(json.loads(row.pythons)),
        files=tuple(files), local=frozenset(local),
    )


def load_pinned_files(conn: Connection, *, except_set: str | None = None) -> dict[str, PinnedFile]:
    """Every pinned file by path, whichever sets pin it (``except_set``: leaving that set out)."""
    query = select(pinned_files.c.file_path, pinned_files.c.size, pinned_files.c.sha256)
    if except_set is not None:
        query = query.where(pinned_files.c.set_name != except_set)
    return {path: PinnedFile(path, int(size), sha256) for path, size, sha256 in conn.execute(query)}


def pinned_set_summaries(conn: Connection, node_id: str) -> list[PinnedSetSummary]:
    """Every set by name: its files, their bytes (as the pages list them), and how many ``node_id`` holds."""
    held = select(local_files.c.file_path).where(local_files.c.node_id == node_id).subquery()
    query = (
        select(
            pinned_sets.c.name,
            pinned_sets.c.created_at,
            func.count(pinned_files.c.file_path),
            func.coalesce(func.sum(pinned_files.c.size), 0),
            func.count(held.c.file_path),
        )
        .select_from(
            pinned_sets.outerjoin(pinned_files, pinned_files.c.set_name == pinned_sets.c.name)
            .outerjoin(held, held.c.file_path == pinned_files.c.file_path)
        )
        .group_by(pinned_sets.c.name, pinned_sets.c.created_at)
        .order_by(pinned_sets.c.name)
    )
    return [
        PinnedSetSummary(name, float(created_at), int(files), int(size), int(local))
        for name, created_at, files, size, local in conn.execute(query)
    ]
