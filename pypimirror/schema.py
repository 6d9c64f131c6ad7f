"""The tables of pypimirror's database, and the one way they come into existence.

Types are dialect-neutral so the same MetaData runs on SQLite and PostgreSQL. The schema
carries a version: :func:`install_schema` creates what is missing, is safe to call on every
start (and from several processes at once), and refuses a database written by a newer
pypimirror instead of guessing at tables it does not know.
"""

from __future__ import annotations

__all__ = [
    "SCHEMA_VERSION",
    "advisories",
    "advisory_packages",
    "file_checks",
    "hit_counters",
    "history_events",
    "history_files",
    "history_projects",
    "history_state",
    "install_schema",
    "job_runs",
    "leases",
    "local_files",
    "metadata",
    "pinned_files",
    "pinned_sets",
    "remote_sizes",
    "schema_version",
    "serials",
    "votes",
]

import logging

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Connection,
    Double,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)

from pypimirror.errors import DatabaseError

logger = logging.getLogger(__name__)

#: Bump when a table changes, and teach :func:`install_schema` to migrate from the old one.
SCHEMA_VERSION = 4
#: Versions :func:`install_schema` brings up to date. 1 -> 2 only added ``file_checks``, 2 -> 3
#: only ``hit_counters``, which ``create_all`` creates like any missing table.
#: 3 -> 4 only adds ``pinned_sets``, ``pinned_files``, ``advisories``, ``advisory_packages``
#: and the index history's ``history_state``, ``history_projects``, ``history_files`` and
#: ``history_events``.
_MIGRATABLE = frozenset({1, 2, 3})

#: Arbitrary key of the PostgreSQL advisory lock that serialises concurrent schema installs.
_SCHEMA_LOCK_KEY = 0x7079_7069_6D69  # "pypimi"

metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
)

# One row per (file, client network, second): a vote. The seed policy counts distinct networks
# per file, the default policy rows.
votes = Table(
    "votes",
    metadata,
    Column("file_path", Text, primary_key=True),
    Column("ip_prefix", Text, primary_key=True),
    Column("voted_at", BigInteger, primary_key=True, autoincrement=False),
    # Leading voted_at serves "older than" cleanups; the other two columns make it covering
    # for "distinct prefixes per file since T", which then never reads the table itself.
    Index("ix_votes_voted_at", "voted_at", "file_path", "ip_prefix"),
)

# Keyed by the normalized project name; display_name is the spelling upstream lists.
serials = Table(
    "serials",
    metadata,
    Column("name", Text, primary_key=True),
    Column("display_name", Text, nullable=False),
    Column("serial", BigInteger, nullable=False),
)

# Each node's own view of its cache tiers: nodes sharing a database never share disks.
local_files = Table(
    "local_files",
    metadata,
    Column("node_id", Text, primary_key=True),
    Column("file_path", Text, primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("tier", Integer, nullable=False),
)

# When the cache job last found each cached distribution's sha256 equal to its page's: the
# rotation of re-hashing starts from the oldest (no row: never). Moving a file keeps its row.
file_checks = Table(
    "file_checks",
    metadata,
    Column("node_id", Text, primary_key=True),
    Column("file_path", Text, primary_key=True),
    Column("checked_at", BigInteger, nullable=False),
)

remote_sizes = Table(
    "remote_sizes",
    metadata,
    Column("file_path", Text, primary_key=True),
    Column("size", BigInteger, nullable=True),  # NULL: upstream answered 404
    Column("recorded_at", BigInteger, nullable=False),
    Index("ix_remote_sizes_recorded_at", "recorded_at"),
)

# How each node answered distribution-file downloads, per hour (Unix seconds at the start of a
# UTC hour): served from a tier ("local"), sent to the upstream ("redirect") or streamed from it
# ("proxy"). Every serving process adds its counts to the same rows.
hit_counters = Table(
    "hit_counters",
    metadata,
    Column("node_id", Text, primary_key=True),
    Column("hour_start", BigInteger, primary_key=True, autoincrement=False),
    Column("outcome", Text, primary_key=True),
    Column("requests", BigInteger, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    CheckConstraint("outcome IN ('local', 'redirect', 'proxy')", name="ck_hit_counters_outcome"),
)

# A pinned set: files one or more lockfiles need, kept in the cache whatever the votes say.
# ``sources`` are the lockfiles it was made from and ``platforms``/``pythons`` what narrowed them,
# each a JSON list, kept so ``pin show`` can say where the set came from.
pinned_sets = Table(
    "pinned_sets",
    metadata,
    Column("name", Text, primary_key=True),
    Column("created_at", Double, nullable=False),
    Column("sources", Text, nullable=False),
    Column("platforms", Text, nullable=False),
    Column("pythons", Text, nullable=False),
)

# The files of each set by package path (the key of local_files and votes), with the size and
# sha256 the stored page listed when the set was made. A path may belong to several sets.
pinned_files = Table(
    "pinned_files",
    metadata,
    Column("set_name", Text, primary_key=True),
    Column("file_path", Text, primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("sha256", Text, nullable=False),
    Index("ix_pinned_files_file_path", "file_path"),
)

# One row per OSV advisory record of the PyPI ecosystem; times are fixed-width UTC RFC 3339 text
# (they compare as text). ``record`` is the record as the export gave it, which the OSV API
# answers with; aliases and severity are JSON lists.
advisories = Table(
    "advisories",
    metadata,
    Column("id", Text, primary_key=True),
    Column("aliases", Text, nullable=False),
    Column("summary", Text, nullable=False),
    Column("severity", Text, nullable=False),
    Column("published", Text, nullable=True),
    Column("modified", Text, nullable=False),
    Column("withdrawn", Text, nullable=True),  # NULL: the record applies
    Column("record", Text, nullable=False),
    # When this version of the record was stored (Unix seconds): serving processes reload the
    # advisories when the newest of these changes.
    Column("stored_at", Double, nullable=False),
)

# The projects an advisory names, by normalized name; ``affected`` is a JSON object of the
# ECOSYSTEM ranges (sorted events) and the listed versions (see osv.AffectedPackage.to_json).
advisory_packages = Table(
    "advisory_packages",
    metadata,
    Column("advisory_id", Text, primary_key=True),
    Column("name", Text, primary_key=True),
    Column("affected", Text, nullable=False),
    Index("ix_advisory_packages_name", "name"),
)

# --- the index history (pypimirror/history.py reads it, the index sync writes it) ---------------
# Only what the stored pages cannot tell is kept: a project or file present when the history
# began and never changed since has no row at all. Times are Unix seconds.

# One row, written when the first sync run with history recording completes: since then the
# history is complete.
history_state = Table(
    "history_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("started_at", Double, nullable=False),
    CheckConstraint("id = 1", name="ck_history_state_single_row"),
)

# A project that appeared, changed status or went away after the history began. created_at is
# the earliest moment it is known to exist (its first files' upload time, else when first seen);
# NULL: it was there when the history began.
history_projects = Table(
    "history_projects",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", Text, nullable=False, unique=True),
    Column("display_name", Text, nullable=False),
    Column("created_at", Double, nullable=True),
    Column("removed_at", Double, nullable=True),
)

# A file first seen after the history began, or one that left its project's page (removed
# upstream, or hidden by a quarantine). file_key is a 64-bit hash of the filename, which keeps
# the row at ~30 bytes; entry keeps the file's page entry once the page no longer lists it.
history_files = Table(
    "history_files",
    metadata,
    Column("project_id", Integer, primary_key=True, autoincrement=False),
    Column("file_key", BigInteger, primary_key=True, autoincrement=False),
    Column("first_seen", Double, nullable=True),  # NULL: listed when the history began
    Column("removed_at", Double, nullable=True),
    Column("entry", Text, nullable=True),  # a JSON array of the DistFile's fields
    sqlite_with_rowid=False,
)

# Each yank, un-yank (filename set) or project-status change (filename NULL), with the state
# before and after: the state at any moment is the "after" of the last change by then, or the
# "before" of the first change after it.
history_events = Table(
    "history_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("project_id", Integer, nullable=False),
    Column("filename", Text, nullable=True),
    Column("at", Double, nullable=False),
    Column("old_state", Text, nullable=True),
    Column("old_reason", Text, nullable=True),
    Column("new_state", Text, nullable=True),
    Column("new_reason", Text, nullable=True),
    Index("ix_history_events_project_id_at", "project_id", "at"),
)

job_runs = Table(
    "job_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job", Text, nullable=False),
    Column("node_id", Text, nullable=False),
    Column("started_at", Double, nullable=False),
    Column("finished_at", Double, nullable=True),
    Column("outcome", Text, nullable=True),  # NULL while running
    Column("counts", Text, nullable=False),  # a JSON object
    Column("error", Text, nullable=True),
    CheckConstraint("outcome IN ('ok', 'failed', 'interrupted')", name="ck_job_runs_outcome"),
    Index("ix_job_runs_job_started_at", "job", "started_at"),
)

leases = Table(
    "leases",
    metadata,
    Column("name", Text, primary_key=True),
    Column("holder", Text, nullable=False),
    Column("acquired_at", Double, nullable=False),
    Column("expires_at", Double, nullable=False),
)


def install_schema(conn: Connection) -> None:
    """Create missing tables and record the version, inside the caller's transaction.

    The version is checked before anything is created, so a database from a newer release
    is left exactly as it was. Raises :class:`DatabaseError` for a version this code does
    not know.
    """
    if conn.dialect.name == "postgresql":
        # create_all checks, then creates: two processes starting at once would both create.
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
    found = _stored_version(conn)
    if found is not None and found > SCHEMA_VERSION:
        raise DatabaseError(
            f"database schema version {found} is newer than this pypimirror supports "
            f"({SCHEMA_VERSION}); upgrade pypimirror or point it at another database"
        )
    if found is not None and found < SCHEMA_VERSION and found not in _MIGRATABLE:
        raise DatabaseError(
            f"database schema version {found} is older than {SCHEMA_VERSION} "
            "and no migration from it exists"
        )
    metadata.create_all(conn, checkfirst=True)
    if found is None:
        conn.execute(insert(schema_version).values(version=SCHEMA_VERSION))
        logger.info("created database schema version %d", SCHEMA_VERSION)
    elif found < SCHEMA_VERSION:
        conn.execute(update(schema_version).values(version=SCHEMA_VERSION))
        logger.info("migrated the database schema from version %d to %d", found, SCHEMA_VERSION)


def _stored_version(conn: Connection) -> int | None:
    """The version recorded in the database, or None for a database without our schema."""
    if not inspect(conn).has_table(schema_version.name):
        return None
    version: int | None = conn.execute(select(func.max(schema_version.c.version))).scalar()
    return version
