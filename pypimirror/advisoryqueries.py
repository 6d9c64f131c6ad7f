"""The named queries of the advisory tables (``advisories``, ``advisory_packages``).

Like :mod:`pypimirror.queries`, each function runs inside a transaction it is given. A record
is always replaced whole (its row and its packages' rows in one transaction), so a reader never
sees a record with the packages of another version of it. Withdrawn records stay stored (the
OSV API shows them by ID) but are never returned as applying to a project.
"""

from __future__ import annotations

__all__ = [
    "AdvisoryCounts",
    "ApplicableAdvisory",
    "advisory_record",
    "advisory_records",
    "advisories_version",
    "applicable_advisories",
    "count_advisories",
    "load_modified",
    "store_advisories",
]

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select

from pypimirror.osv import AffectedPackage, Advisory
from pypimirror.queries import chunks
from pypimirror.schema import advisories, advisory_packages

@dataclass(frozen=True, slots=True)
class ApplicableAdvisory:
    """A record that applies (not withdrawn), with what it says about one project."""

    id: str
    aliases: tuple[str, ...]
    summary: str
    modified: str
    package: AffectedPackage

    @property
    def is_malicious(self) -> bool:
        return self.id.startswith("MAL-")


@dataclass(frozen=True, slots=True)
class AdvisoryCounts:
    """How many records are stored: all, withdrawn among them, and ``MAL-`` ones that apply."""

    total: int
    withdrawn: int
    malicious: int


def load_modified(conn: Connection) -> dict[str, str]:
    """Each stored record's ``modified`` time, by ID: what an incremental sync compares against."""
    return {row.id: row.modified for row in conn.execute(select(advisories.c.id, advisories.c.modified))}


def store_advisories(conn: Connection, batch: Sequence[Advisory], *, now: float | None = None) -> None:
    """Add or replace each record of ``batch`` (IDs unique within it) with its packages, as stored ``now``."""
    stored_at = time.time() if now is None else now
    for chunk in chunks(batch):
        ids = [advisory.id for advisory in chunk]
        conn.execute(delete(advisory_packages).where(advisory_packages.c.advisory_id.in_(ids)))
        conn.execute(delete(advisories).where(advisories.c.id.in_(ids)))
        conn.execute(insert(advisories), [{**_advisory_row(advisory), "stored_at": stored_at} for advisory in chunk])
        conn.execute(
            insert(advisory_packages),
            [
                {"advisory_id": advisory.id, "name": package.name, "affected": json.dumps(package.to_json())}
                for advisory in chunk
                for package in advisory.affected
            ],
        )


def _advisory_row(advisory: Advisory) -> dict[str, object]:
    return {
        "id": advisory.id,
        "aliases": json.dumps(list(advisory.aliases)),
        "summary": advisory.summary,
        "severity": json.dumps(list(advisory.severity)),
        "published": advisory.published,
        "modified": advisory.modified,
        "withdrawn": advisory.withdrawn,
        "record": json.dumps(advisory.record, separators=(",", ":")),
    }


def applicable_advisories(conn: Connection, name: str | None = None) -> list[ApplicableAdvisory]:
    """The records that apply, to project ``name`` (normalized) or, None, to every project."""
    query = (
        select(
            advisories.c.id, advisories.c.aliases, advisories.c.summary, advisories.c.modified,
            advisory_packages.c.name, advisory_packages.c.affected,
        )
        .join_from(advisory_packages, advisories, advisories.c.id == advisory_packages.c.advisory_id)
        .where(advisories.c.withdrawn.is_(None))
        .order_by(advisory_packages.c.name, advisories.c.id)
    )
    if name is not None:
        query = query.where(advisory_packages.c.name == name)
    return [
        ApplicableAdvisory(
            row.id, tuple(json.loads(row.aliases)), row.summary, row.modified,
            AffectedPackage.from_json(row.name, json.loads(row.affected)),
        )
        for row in conn.execute(query)
    ]


def advisory_record(conn: Connection, advisory_id: str) -> Mapping[str, Any] | None:
    """The stored OSV record with this ID (withdrawn ones too), or None."""
    text = conn.execute(select(advisories.c.record).where(advisories.c.id == advisory_id)).scalar()
    return None if text is None else dict(json.loads(text))


def advisory_records(conn: Connection, ids: Sequence[str]) -> list[Mapping[str, Any]]:
    """The stored records with these IDs, in ID order."""
    records: list[Mapping[str, Any]] = []
    for chunk in chunks(ids):
        query = select(advisories.c.record).where(advisories.c.id.in_(chunk)).order_by(advisories.c.id)
        records.extend(json.loads(text) for text in conn.execute(query).scalars())
    return records


def advisories_version(conn: Connection) -> tuple[int, float | None]:
    """What changes whenever a record is stored: how many there are and when the last was stored."""
    row = conn.execute(select(func.count(), func.max(advisories.c.stored_at)).select_from(advisories)).one()
    return int(row[0]), row[1]


def count_advisories(conn: Connection) -> AdvisoryCounts:
    """The stored records, withdrawn ones, and applying ``MAL-`` ones."""
    row = conn.execute(
        select(
            func.count(),
            func.count(advisories.c.withdrawn),
            func.count().filter(advisories.c.id.like("MAL-%"), advisories.c.withdrawn.is_(None)),
        ).select_from(advisories)
    ).one()
    return AdvisoryCounts(total=row[0], withdrawn=row[1], malicious=row[2])
