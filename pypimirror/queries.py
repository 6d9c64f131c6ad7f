"""The named queries: every read and write of the mirror's tables, as plain ``fn(conn, ...)``.

Each function runs inside a transaction it is given (from :meth:`Database.run
<pypimirror.db.Database.run>`, ``run_read``, ``begin`` or ``connect``), so callers compose
them into one transaction when they must change together. The same statements run on SQLite
and PostgreSQL; batches are cut into chunks that stay far below SQLite's bound-variable limit.
The tables are defined in :mod:`pypimirror.schema`; the engine and transactions in
:mod:`pypimirror.db`.
"""

from __future__ import annotations

__all__ = [
    "SYNC_LEASE",
    "HitCount",
    "HitOutcome",
    "JobOutcome",
    "JobRun",
    "Lease",
    "ListedLike",
    "Vote",
    "acquire_lease",
    "add_hit_counts",
    "chunks",
    "count_failures_since",
    "delete_file_checks",
    "delete_local_files",
    "delete_remote_sizes_before",
    "delete_serials",
    "delete_votes_before",
    "dialect_insert",
    "finish_job_run",
    "job_names",
    "last_finished_job_run",
    "last_job_run",
    "latest_job_runs",
    "least_checked_files",
    "load_hit_counts",
    "load_local_files",
    "load_remote_sizes",
    "load_serials",
    "read_lease",
    "read_schema_version",
    "record_download",
    "record_moves",
    "record_votes",
    "release_lease",
    "renew_lease",
    "select_popular",
    "select_vote_counts",
    "start_job_run",
    "store_file_checks",
    "store_remote_sizes",
    "store_serials",
    "tier_usage",
    "upsert_local_files",
]

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar, get_args

from packaging.utils import NormalizedName
from sqlalchemy import (
    BigInteger,
    Connection,
    Row,
    Table,
    Text,
    bindparam,
    case,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite

from pypimirror.errors import DatabaseError
from pypimirror.schema import (
    file_checks,
    hit_counters,
    job_runs,
    leases,
    local_files,
    remote_sizes,
    schema_version,
    serials,
    votes,
)

T = TypeVar("T")
JobOutcome = Literal["ok", "failed", "interrupted"]
#: How a distribution-file download was answered: from a tier, by a 302, or streamed from the upstream.
HitOutcome = Literal["local", "redirect", "proxy"]

#: The one lease every job that changes the mirror's files runs under (index sync and cache),
#: so two runners never work on one mirror at the same time.
SYNC_LEASE = "sync"

# Keeps every statement's bound parameters far below SQLite's variable limit.
_CHUNK = 500

# On PostgreSQL a batch of votes travels as three arrays, so the statements' text never changes
# with the batch: psycopg parses a statement of a thousand placeholders afresh each time (it
# caches only short ones), which made that parsing most of the vote writer's CPU.
_PG_INSERT_VOTES = (
    postgresql.insert(votes)
    .from_select(
        ["file_path", "ip_prefix", "voted_at"],
        select(
            func.unnest(
                bindparam("file_path", type_=postgresql.ARRAY(Text)),
                bindparam("ip_prefix", type_=postgresql.ARRAY(Text)),
                bindparam("voted_at", type_=postgresql.ARRAY(BigInteger)),
            )
            .table_valued("file_path", "ip_prefix", "voted_at")
            .render_derived()
        ),
    )
    .on_conflict_do_nothing()
    .execution_options(preserve_rowcount=True)  # the rows inserted: the votes not deduplicated
)
# Joined to the unnested array, not "= ANY(array)": a table the planner has no statistics for
# yet is scanned whole, comparing every row with every element of the array.
_PG_BATCH_FILES = func.unnest(bindparam("files", type_=postgresql.ARRAY(Text))).table_valued("path").render_derived()
_PG_LATEST_VOTES = (
    select(votes.c.file_path, votes.c.ip_prefix, func.max(votes.c.voted_at))
    .join_from(votes, _PG_BATCH_FILES, votes.c.file_path == _PG_BATCH_FILES.c.path)
    .where(votes.c.voted_at > bindparam("after", type_=BigInteger))
    .group_by(votes.c.file_path, votes.c.ip_prefix)
)

def dialect_insert(conn: Connection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """INSERT with the dialect's ON CONFLICT support (the same API on both dialects)."""
    return postgresql.insert(table) if conn.dialect.name == "postgresql" else sqlite.insert(table)


def chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    """``items`` in slices small enough for one statement's bound parameters on every dialect."""
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _upsert(conn: Connection, table: Table, rows: Sequence[Mapping[str, object]]) -> None:
    """Insert rows (one executemany); where the primary key exists, replace the other columns."""
    if not rows:
        return
    stmt = dialect_insert(conn, table)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(table.primary_key.columns),
        set_={c.name: stmt.excluded[c.name] for c in table.columns if not c.primary_key},
    )
    conn.execute(stmt, list(rows))


def _delete_in(conn: Connection, table: Table, column: str, values: Sequence[str], *where: Any) -> int:
    """Delete the rows whose ``column`` is one of ``values`` (and match ``where``); returns how many."""
    statements = (delete(table).where(table.c[column].in_(chunk), *where) for chunk in chunks(values))
    return sum(conn.execute(stmt).rowcount for stmt in statements)


# --- votes ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Vote:
    """One request for a file from one client network, at a Unix second."""

    file_path: str
    ip_prefix: str
    voted_at: int


def record_votes(conn: Connection, batch: Sequence[Vote], dedup_window_s: int) -> int:
    """Store the votes not already counted for their (file, prefix) within the window.

    A vote is dropped when a row for the same file and prefix has ``voted_at`` later than
    ``vote.voted_at - dedup_window_s``, counting earlier votes of the same batch. The window
    is at least one second, since two rows in the same second would collide on the key.
    One SELECT reads the batch's recent rows, one executemany inserts the rest.

    On SQLite the caller's BEGIN IMMEDIATE makes check and insert one atomic step. On
    PostgreSQL (READ COMMITTED) two nodes may both insert a vote inside the window; that
    costs a row and, under the ``default`` policy (which counts every vote), one extra vote
    for the file, and a same-second duplicate is skipped by ON CONFLICT DO NOTHING. Returns
    the number of rows inserted.
    """
    if not batch:
        return 0
    window = max(dedup_window_s, 1)
    ordered = sorted(batch, key=lambda v: v.voted_at)
    latest = _latest_votes(conn, sorted({v.file_path for v in ordered}), ordered[0].voted_at - window)
    accepted: list[dict[str, object]] = []
    for vote in ordered:
        key = (vote.file_path, vote.ip_prefix)
        if key in latest and latest[key] > vote.voted_at - window:
            continue
        latest[key] = vote.voted_at
        accepted.append({"file_path": vote.file_path, "ip_prefix": vote.ip_prefix, "voted_at": vote.voted_at})
    if not accepted:
        return 0
    if conn.dialect.name == "postgresql":
        columns = {name: [row[name] for row in accepted] for name in ("file_path", "ip_prefix", "voted_at")}
        return conn.execute(_PG_INSERT_VOTES, columns).rowcount
    stmt = sqlite.insert(votes).on_conflict_do_nothing().returning(votes.c.voted_at)
    return len(conn.execute(stmt, accepted).all())


def _latest_votes(conn: Connection, files: Sequence[str], after: int) -> dict[tuple[str, str], int]:
    """Newest vote time per (file, prefix) among rows later than ``after``."""
    if conn.dialect.name == "postgresql":
        rows = conn.execute(_PG_LATEST_VOTES, {"files": list(files), "after": after})
        return {(path, prefix): voted_at for path, prefix, voted_at in rows}
    latest: dict[tuple[str, str], int] = {}
    for chunk in chunks(files):
        query = (
            select(votes.c.file_path, votes.c.ip_prefix, func.max(votes.c.voted_at))
            .where(votes.c.file_path.in_(chunk), votes.c.voted_at > after)
            .group_by(votes.c.file_path, votes.c.ip_prefix)
        )
        for file_path, ip_prefix, voted_at in conn.execute(query):
            latest[(file_path, ip_prefix)] = voted_at
    return latest


def select_popular(conn: Connection, since: int, min_votes: int) -> list[tuple[str, int]]:
    """Files voted for by at least ``min_votes`` distinct prefixes since ``since``, hottest first."""
    count = func.count(votes.c.ip_prefix.distinct())
    query = (
        select(votes.c.file_path, count.label("n"))
        .where(votes.c.voted_at >= since)
        .group_by(votes.c.file_path)
        .having(count >= min_votes)
        .order_by(count.desc(), votes.c.file_path)
    )
    return [(path, n) for path, n in conn.execute(query)]


def select_vote_counts(conn: Connection, since: int) -> list[tuple[str, int]]:
    """Every file voted for since ``since`` with its number of votes, most voted first.

    Unlike :func:`select_popular` this counts every vote, not distinct prefixes: a network
    that asks for a file all day votes for it many times (at most once per ``dedup_window``).
    On PostgreSQL two nodes may rarely both record one vote (see :func:`record_votes`).
    """
    count = func.count()
    query = (
        select(votes.c.file_path, count.label("n"))
        .where(votes.c.voted_at >= since)
        .group_by(votes.c.file_path)
        .order_by(count.desc(), votes.c.file_path)
    )
    return [(path, n) for path, n in conn.execute(query)]


def delete_votes_before(conn: Connection, before: int) -> int:
    """Forget votes older than ``before`` (they left every window); returns how many."""
    return conn.execute(delete(votes).where(votes.c.voted_at < before)).rowcount


# --- schema ---------------------------------------------------------------------------------


def read_schema_version(conn: Connection) -> int:
    """The schema version stored in the database; DatabaseError if there is none.

    A real read of our own data, for health checks: an empty file created where the database
    was, or one with the tables dropped, has no version.
    """
    version: int | None = conn.execute(select(func.max(schema_version.c.version))).scalar()
    if version is None:
        raise DatabaseError("the database holds no schema version")
    return version


# --- serials -------------------------------------------------------------------------------


class ListedLike(Protocol):
    """What :func:`load_serials` reads from a listed project (``pypimirror.listing.ListedProject``)."""

    @property
    def display_name(self) -> str: ...

    @property
    def serial(self) -> int: ...


def load_serials(
    conn: Connection, *, listed: Mapping[NormalizedName, ListedLike] | None = None
) -> dict[NormalizedName, tuple[str, int]]:
    """Every synced project: normalized name -> (display name, serial).

    Only memory depends on ``listed`` (the upstream listing, when the caller holds it): a
    stored display name or serial equal to the listed one is the listed object, not a copy,
    and a display name equal to the normalized name is the key too. For all of PyPI, whose
    listing and serials are in memory together while a sync plans, that saves ~80 MB.
    """
    query = select(serials.c.name, serials.c.display_name, serials.c.serial)
    known: Mapping[NormalizedName, ListedLike] = listed or {}
    loaded: dict[NormalizedName, tuple[str, int]] = {}
    for name, display, serial in conn.execute(query):
        project = known.get(name)
        if project is not None:
            display = project.display_name if project.display_name == display else display
            serial = project.serial if project.serial == serial else serial
        loaded[NormalizedName(display if display == name else name)] = (display, serial)
    return loaded


def store_serials(conn: Connection, rows: Sequence[tuple[NormalizedName, str, int]]) -> None:
    """Insert or update (name, display name, serial); a case-only rename updates the name shown."""
    _upsert(conn, serials, [{"name": n, "display_name": d, "serial": s} for n, d, s in rows])


def delete_serials(conn: Connection, names: Sequence[NormalizedName]) -> int:
    """Forget removed projects; returns how many rows went."""
    return _delete_in(conn, serials, "name", names)


# --- local files ---------------------------------------------------------------------------


def load_local_files(conn: Connection, node_id: str) -> dict[str, tuple[int, int]]:
    """This node's cached files: path -> (size, tier index)."""
    query = select(local_files.c.file_path, local_files.c.size, local_files.c.tier).where(
        local_files.c.node_id == node_id
    )
    return {path: (size, tier) for path, size, tier in conn.execute(query)}


def upsert_local_files(conn: Connection, node_id: str, rows: Sequence[tuple[str, int, int]]) -> None:
    """Record (path, size, tier) rows for this node, replacing what it had for those paths."""
    params = [{"node_id": node_id, "file_path": p, "size": s, "tier": t} for p, s, t in rows]
    _upsert(conn, local_files, params)


def delete_local_files(conn: Connection, node_id: str, paths: Sequence[str]) -> int:
    """Forget files this node no longer has; other nodes' rows are untouched."""
    return _delete_in(conn, local_files, "file_path", paths, local_files.c.node_id == node_id)


def record_moves(conn: Connection, node_id: str, rows: Sequence[tuple[str, int, int]], lost: Sequence[str]) -> None:
    """Files moved between tiers: their new (path, size, tier) rows, and the ``lost`` ones forgotten."""
    upsert_local_files(conn, node_id, rows)
    if lost:
        delete_local_files(conn, node_id, lost)


def record_download(
    conn: Connection, node_id: str, rows: Sequence[tuple[str, int, int]], path: str, checked_at: int
) -> None:
    """A downloaded file's rows; its sha256 was just checked, so it counts as checked at ``checked_at``."""
    upsert_local_files(conn, node_id, rows)
    store_file_checks(conn, node_id, [path], checked_at)


def tier_usage(conn: Connection, node_id: str) -> dict[int, tuple[int, int]]:
    """This node's cached files per tier index: (files, bytes); a tier holding nothing is absent."""
    query = (
        select(local_files.c.tier, func.count(), func.coalesce(func.sum(local_files.c.size), 0))
        .where(local_files.c.node_id == node_id)
        .group_by(local_files.c.tier)
    )
    return {tier: (int(files), int(size)) for tier, files, size in conn.execute(query)}


# --- file checks ---------------------------------------------------------------------------


def least_checked_files(
    conn: Connection, node_id: str, budget: int, min_cost: int, skip_suffix: str
) -> list[tuple[str, int]]:
    """This node's cached files, never checked first, then the longest unchecked, up to ``budget`` bytes.

    Each file costs its size, but at least ``min_cost``. Returns (path, size) rows; the first
    row is returned even when it alone exceeds the budget, so a file larger than the budget is
    checked too. Paths ending in ``skip_suffix`` are left out.
    """
    query = (
        select(local_files.c.file_path, local_files.c.size)
        .select_from(
            local_files.outerjoin(
                file_checks,
                (file_checks.c.node_id == local_files.c.node_id) & (file_checks.c.file_path == local_files.c.file_path),
            )
        )
        .where(local_files.c.node_id == node_id, ~local_files.c.file_path.endswith(skip_suffix, autoescape=True))
        .order_by(func.coalesce(file_checks.c.checked_at, -1), local_files.c.file_path)
    )
    rows: list[tuple[str, int]] = []
    total = 0
    for path, size in conn.execute(query):
        cost = max(size, min_cost)
        if rows and total + cost > budget:
            break
        rows.append((path, size))
        total += cost
    return rows


def store_file_checks(conn: Connection, node_id: str, paths: Sequence[str], checked_at: int) -> None:
    """Record that ``paths`` were found intact at ``checked_at``."""
    _upsert(conn, file_checks, [{"node_id": node_id, "file_path": p, "checked_at": checked_at} for p in paths])


def delete_file_checks(conn: Connection, node_id: str) -> int:
    """Forget the checks of files this node no longer has; returns how many."""
    cached = select(local_files.c.file_path).where(local_files.c.node_id == node_id)
    stmt = delete(file_checks).where(file_checks.c.node_id == node_id, file_checks.c.file_path.not_in(cached))
    return conn.execute(stmt).rowcount


# --- remote sizes --------------------------------------------------------------------------


def load_remote_sizes(conn: Connection, paths: Sequence[str], fresh_since: int) -> dict[str, int | None]:
    """Known upstream sizes recorded at or after ``fresh_since``; None means upstream said 404.

    Paths with no fresh row are absent from the result, so the caller asks upstream again.
    """
    found: dict[str, int | None] = {}
    for chunk in chunks(paths):
        query = select(remote_sizes.c.file_path, remote_sizes.c.size).where(
            remote_sizes.c.file_path.in_(chunk), remote_sizes.c.recorded_at >= fresh_since
        )
        found.update((path, size) for path, size in conn.execute(query))
    return found


def store_remote_sizes(conn: Connection, rows: Sequence[tuple[str, int | None, int]]) -> None:
    """Record (path, size or None for 404, recorded_at) rows, replacing older answers."""
    _upsert(conn, remote_sizes, [{"file_path": p, "size": s, "recorded_at": t} for p, s, t in rows])


def delete_remote_sizes_before(conn: Connection, before: int) -> int:
    """Drop answers (sizes and 404s alike) recorded before ``before``; returns how many."""
    return conn.execute(delete(remote_sizes).where(remote_sizes.c.recorded_at < before)).rowcount


# --- hit counters --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HitCount:
    """Downloads answered one way within one hour (``hour_start``: Unix seconds, a whole UTC hour)."""

    hour_start: int
    outcome: HitOutcome
    requests: int
    bytes: int


def add_hit_counts(conn: Connection, node_id: str, counts: Sequence[HitCount]) -> None:
    """Add ``counts`` to this node's hourly counters, creating the rows that do not exist yet.

    One INSERT ... ON CONFLICT DO UPDATE adds to what is stored, so workers and processes
    flushing into the same (node, hour, outcome) row at once never lose each other's counts.
    """
    if not counts:
        return
    stmt = dialect_insert(conn, hit_counters)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(hit_counters.primary_key.columns),
        set_={
            "requests": hit_counters.c.requests + stmt.excluded.requests,
            "bytes": hit_counters.c.bytes + stmt.excluded.bytes,
        },
    )
    rows = [
        {"node_id": node_id, "hour_start": c.hour_start, "outcome": c.outcome, "requests": c.requests, "bytes": c.bytes}
        for c in counts
    ]
    conn.execute(stmt, rows)


def load_hit_counts(conn: Connection, node_id: str, since: int) -> list[HitCount]:
    """This node's counters of the hours starting at or after ``since``, oldest first."""
    query = (
        select(hit_counters.c.hour_start, hit_counters.c.outcome, hit_counters.c.requests, hit_counters.c.bytes)
        .where(hit_counters.c.node_id == node_id, hit_counters.c.hour_start >= since)
        .order_by(hit_counters.c.hour_start, hit_counters.c.outcome)
    )
    return [HitCount(int(hour), outcome, int(requests), int(size)) for hour, outcome, requests, size in conn.execute(query)]


# --- job runs ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobRun:
    """One run of a job; ``outcome`` is None while it runs (or if its process died)."""

    id: int
    job: str
    node_id: str
    started_at: float
    finished_at: float | None
    outcome: JobOutcome | None
    counts: Mapping[str, int | float | str]
    error: str | None


def start_job_run(conn: Connection, job: str, node_id: str, started_at: float) -> int:
    """Record that a run began; returns its id for :func:`finish_job_run`."""
    values = {"job": job, "node_id": node_id, "started_at": started_at, "counts": "{}"}
    run_id: int = conn.execute(insert(job_runs).values(values).returning(job_runs.c.id)).scalar_one()
    return run_id


def finish_job_run(
    conn: Connection,
    run_id: int,
    finished_at: float,
    outcome: JobOutcome,
    counts: Mapping[str, int | float | str],
    error: str | None,
) -> None:
    """Record how a run ended, with its report's counts."""
    values = {
        "finished_at": finished_at,
        "outcome": outcome,
        "counts": json.dumps(dict(counts), sort_keys=True),
        "error": error,
    }
    conn.execute(job_runs.update().where(job_runs.c.id == run_id).values(values))


def latest_job_runs(conn: Connection, limit: int = 20) -> list[JobRun]:
    """The newest runs of every job, newest first."""
    query = select(job_runs).order_by(job_runs.c.started_at.desc(), job_runs.c.id.desc()).limit(limit)
    return [_job_run(row) for row in conn.execute(query)]


def last_job_run(conn: Connection, job: str, outcome: JobOutcome | None = None) -> JobRun | None:
    """The newest run of ``job``, or of its runs with that outcome (e.g. the last "ok")."""
    query = select(job_runs).where(job_runs.c.job == job)
    if outcome is not None:
        query = query.where(job_runs.c.outcome == outcome)
    query = query.order_by(job_runs.c.started_at.desc(), job_runs.c.id.desc()).limit(1)
    row = conn.execute(query).first()
    return None if row is None else _job_run(row)


def last_finished_job_run(conn: Connection, job: str) -> JobRun | None:
    """The newest run of ``job`` that has ended, whatever its outcome."""
    runs = [run for outcome in get_args(JobOutcome) if (run := last_job_run(conn, job, outcome)) is not None]
    return max(runs, key=lambda run: (run.started_at, run.id), default=None)


def count_failures_since(conn: Connection, job: str, since: float | None) -> int:
    """Runs of ``job`` that failed or were interrupted and started after ``since`` (None: ever)."""
    query = select(func.count()).where(job_runs.c.job == job, job_runs.c.outcome.in_(("failed", "interrupted")))
    if since is not None:
        query = query.where(job_runs.c.started_at > since)
    count: int = conn.execute(query).scalar_one()
    return count


def job_names(conn: Connection) -> list[str]:
    """Every job that has a run on record, in no particular order."""
    return [name for (name,) in conn.execute(select(job_runs.c.job).distinct())]


def _job_run(row: Row[Any]) -> JobRun:
    return JobRun(
        id=row.id,
        job=row.job,
        node_id=row.node_id,
        started_at=float(row.started_at),
        finished_at=None if row.finished_at is None else float(row.finished_at),
        outcome=row.outcome,
        counts=json.loads(row.counts),
        error=row.error,
    )


# --- leases --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lease:
    """Who holds a named lock, since when, and until when unless renewed."""

    name: str
    holder: str
    acquired_at: float
    expires_at: float


def acquire_lease(conn: Connection, name: str, holder: str, now: float, ttl_s: float) -> tuple[bool, Lease]:
    """Take the lease if it is free, expired or already ours; returns (acquired, current lease).

    One INSERT ... ON CONFLICT DO UPDATE ... WHERE decides, so two contenders never both win:
    SQLite serialises it with BEGIN IMMEDIATE, PostgreSQL with the row lock the upsert takes
    (it locks the row even when WHERE declines, so the read of the winner below is stable).
    Re-acquiring our own lease extends it and keeps its ``acquired_at``.
    """
    expires_at = now + ttl_s
    ours = leases.c.holder == holder
    values = {"name": name, "holder": holder, "acquired_at": now, "expires_at": expires_at}
    stmt = dialect_insert(conn, leases).values(values)
    acquired_at = case((ours, leases.c.acquired_at), else_=now)
    stmt = stmt.on_conflict_do_update(
        index_elements=[leases.c.name],
        set_={"holder": holder, "acquired_at": acquired_at, "expires_at": expires_at},
        where=(leases.c.expires_at <= now) | ours,
    )
    row = conn.execute(stmt.returning(*leases.c)).first()
    if row is not None:
        return True, _lease(row)
    current = read_lease(conn, name)
    assert current is not None, "a declined upsert means the row exists, locked for us"
    return False, current


def renew_lease(conn: Connection, name: str, holder: str, now: float, ttl_s: float) -> bool:
    """Extend our lease to ``now + ttl_s``; False if it is not ours (any more).

    An expired lease nobody took yet is still ours: taking it would have changed the holder.
    """
    stmt = (
        leases.update()
        .where(leases.c.name == name, leases.c.holder == holder)
        .values(expires_at=now + ttl_s)
    )
    return conn.execute(stmt).rowcount == 1


def release_lease(conn: Connection, name: str, holder: str) -> None:
    """Give the lease up, if we still hold it; someone else's lease is left alone."""
    conn.execute(delete(leases).where(leases.c.name == name, leases.c.holder == holder))


def read_lease(conn: Connection, name: str) -> Lease | None:
    """The lease as stored (possibly expired), or None when nobody holds it."""
    row = conn.execute(select(leases).where(leases.c.name == name)).first()
    return None if row is None else _lease(row)


def _lease(row: Row[Any]) -> Lease:
    # float(): SQLite's RETURNING hands back a whole-number REAL as an int.
    return Lease(row.name, row.holder, float(row.acquired_at), float(row.expires_at))
