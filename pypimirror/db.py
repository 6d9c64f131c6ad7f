"""The database: one engine per process, named queries, and a bridge for async code.

Promises: on SQLite every connection runs in WAL mode with a busy timeout, and every write
transaction starts with ``BEGIN IMMEDIATE``, so concurrent processes queue for the write lock
instead of failing with "database is locked" (stack-notes §5). Async code never blocks the
IOLoop: :meth:`Database.run` runs a plain ``fn(conn)`` in a worker thread, and every write
made through it goes through the same single writer thread. Queries are the named functions below; the
tables live in :mod:`pypimirror.schema`. Error texts never show a password.

Whatever the driver reports about a working database (lost server, locked or corrupt file,
dropped tables) becomes one :class:`~pypimirror.errors.DatabaseError` line, so callers that
promise to carry on without the database can; a constraint violation (IntegrityError) is a
bug of the caller and keeps its own type. On SQLite a :class:`~pypimirror.sqlitefile.SqliteFileGuard`
stops every transaction once the file was deleted, replaced or overwritten under us.
"""

from __future__ import annotations

__all__ = [
    "Database",
    "HitCount",
    "HitOutcome",
    "JobOutcome",
    "JobRun",
    "Lease",
    "ListedLike",
    "Vote",
    "acquire_lease",
    "add_hit_counts",
    "delete_file_checks",
    "delete_local_files",
    "delete_remote_sizes_before",
    "delete_serials",
    "delete_votes_before",
    "finish_job_run",
    "last_job_run",
    "latest_job_runs",
    "least_checked_files",
    "load_hit_counts",
    "load_local_files",
    "load_remote_sizes",
    "load_serials",
    "read_schema_version",
    "read_lease",
    "record_votes",
    "release_lease",
    "renew_lease",
    "select_popular",
    "start_job_run",
    "store_file_checks",
    "store_remote_sizes",
    "store_serials",
    "upsert_local_files",
]

import asyncio
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from packaging.utils import NormalizedName
from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    Row,
    Table,
    Text,
    bindparam,
    case,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url

from pypimirror.errors import DatabaseError, DatabaseFileError
from pypimirror.schema import (
    file_checks,
    hit_counters,
    install_schema,
    job_runs,
    leases,
    local_files,
    remote_sizes,
    schema_version,
    serials,
    votes,
)
from pypimirror.sqlitefile import SqliteFileGuard
from pypimirror.urlmask import mask_url

logger = logging.getLogger(__name__)

T = TypeVar("T")
JobOutcome = Literal["ok", "failed", "interrupted"]
#: How a distribution-file download was answered: from a tier, by a 302, or streamed from the upstream.
HitOutcome = Literal["local", "redirect", "proxy"]

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
# What a malformed URL (ValueError: a non-numeric port) or a missing driver raises.
_URL_ERRORS: tuple[type[Exception], ...] = (sa_exc.ArgumentError, ValueError, ImportError)
# Failures of a working database worth one line, not a traceback: lost server, locked, disk,
# a corrupt file ("file is not a database"), tables dropped under us, a value out of range.
_RUNTIME_ERRORS: tuple[type[Exception], ...] = (sa_exc.DatabaseError,)
# ... except a broken constraint, which is a bug of the caller: it keeps its type and traceback.
_CALLER_BUGS: tuple[type[Exception], ...] = (sa_exc.IntegrityError,)
# Execution option that marks a connection as read-only: plain BEGIN instead of IMMEDIATE.
_READ_ONLY = "pypimirror_read_only"
# Pool sizing (see Database.__init__): threads outside ours that hold a connection (the vote
# writer), short bursts above that (status, a sync --once beside), and how long a checkout waits.
_OWN_THREADS = 1
_MAX_OVERFLOW = 2
_POOL_TIMEOUT_S = 10.0
# Seconds a new PostgreSQL connection may take (libpq's connect_timeout).
_CONNECT_TIMEOUT_S = 5


class Database:
    """An engine plus the threads that let async code use it.

    ``Database(url)`` does no I/O; :meth:`open` also connects and installs the schema.
    Call :meth:`dispose` (or use it as a context manager) to stop threads and connections.
    """

    def __init__(self, url: str, *, pool_size: int = 5) -> None:
        """``pool_size`` is the number of threads this object runs DB work on: one writer and
        ``pool_size - 1`` readers. The engine keeps a connection for each of them plus
        :data:`_OWN_THREADS` for callers with threads of their own (the vote writer), and may
        open :data:`_MAX_OVERFLOW` more for a moment, so one process never holds more than
        ``pool_size + 3`` connections to a shared server (SQLite files keep SQLAlchemy's defaults)."""
        self.url = mask_url(url)
        self._password = _password_of(url)
        with self._errors_as("cannot open database", _URL_ERRORS):
            self.engine = _create_engine(url, pool_size)
        self.dialect = self.engine.dialect.name
        self._file_guard = _file_guard(url)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="pypimirror-db-write")
        self._readers = ThreadPoolExecutor(max(1, pool_size - 1), thread_name_prefix="pypimirror-db-read")

    @classmethod
    def open(cls, url: str, *, pool_size: int = 5) -> Database:
        """Connect and create or check the schema; a failure leaves nothing open."""
        db = cls(url, pool_size=pool_size)
        try:
            db.create_schema()
        except BaseException:
            db.dispose()
            raise
        logger.info("database %s ready (%s)", db.url, db.dialect)
        return db

    def create_schema(self) -> None:
        """Create missing tables; refuse (DatabaseError) a schema newer than this code."""
        with self._errors_as("cannot open database", (sa_exc.DBAPIError,)):
            with self.engine.begin() as conn:
                install_schema(conn)
        self._check_file()  # from now on, the file at the path must stay this one

    def dispose(self) -> None:
        """Wait for queued work, then close every pooled connection."""
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self.engine.dispose()
        if self._file_guard is not None:
            self._file_guard.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.dispose()

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A write transaction: committed if the block succeeds, rolled back if it raises."""
        with self._errors_as("database error on", _RUNTIME_ERRORS):
            self._check_file()
            with self.engine.begin() as conn:
                yield conn

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A read-only transaction; on SQLite it never waits for, nor blocks, a writer."""
        with self._errors_as("database error on", _RUNTIME_ERRORS):
            self._check_file()
            with self.engine.connect() as conn:
                conn.execution_options(**{_READ_ONLY: True})
                yield conn

    async def run(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` in one write transaction on the writer thread; return its result."""
        return await asyncio.get_running_loop().run_in_executor(self._writer, self._run_write, fn)

    async def run_read(self, fn: Callable[[Connection], T]) -> T:
        """Run a read-only ``fn(conn)`` on a reader thread, alongside any write in progress."""
        return await asyncio.get_running_loop().run_in_executor(self._readers, self._run_read, fn)

    def _run_write(self, fn: Callable[[Connection], T]) -> T:
        with self.begin() as conn:
            return fn(conn)

    def _run_read(self, fn: Callable[[Connection], T]) -> T:
        with self.connect() as conn:
            return fn(conn)

    def _check_file(self) -> None:
        """Refuse to go on with an SQLite file that is not the one at its path any more."""
        if self._file_guard is None:
            return
        problem = self._file_guard.problem()
        if problem is not None:
            raise DatabaseFileError(f"database error on {self.url}: the file {problem}", problem)

    @contextmanager
    def _errors_as(self, what: str, kinds: tuple[type[Exception], ...]) -> Iterator[None]:
        """Turn the given failures into a one-line DatabaseError that names the database."""
        try:
            yield
        except _CALLER_BUGS:
            raise
        except kinds as exc:
            detail = _describe(exc)
            if self._password:
                detail = detail.replace(self._password, "***")
            raise DatabaseError(f"{what} {self.url}: {detail}") from exc


def _password_of(url: str) -> str:
    try:
        return make_url(url).password or ""
    except _URL_ERRORS:
        return ""


def _describe(exc: BaseException) -> str:
    """The driver's own message on one line, without SQLAlchemy's statement and link."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
        exc = exc.orig
    elif isinstance(exc, ImportError):
        return f"database driver not installed ({exc})"
    message = str(exc.args[0]) if exc.args else type(exc).__name__
    return " ".join(message.split())


def _file_guard(url: str) -> SqliteFileGuard | None:
    """A guard for a plain SQLite file path; None for a server, memory or a ``file:`` URI."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    if parsed.database.startswith("file:"):
        return None
    return SqliteFileGuard(parsed.database)


def _create_engine(url: str, pool_size: int) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(
            parsed,
            pool_size=pool_size + _OWN_THREADS,
            max_overflow=_MAX_OVERFLOW,
            pool_timeout=_POOL_TIMEOUT_S,
            pool_pre_ping=True,  # a connection the server dropped is replaced at checkout
            connect_args=_server_connect_args(parsed),
        )
    engine = create_engine(parsed, pool_size=pool_size)  # local file: SQLAlchemy's default overflow
    event.listen(engine, "connect", _configure_sqlite_connection)
    event.listen(engine, "begin", _begin_sqlite_transaction)
    return engine


def _server_connect_args(parsed: URL) -> dict[str, object]:
    """A connect timeout unless the URL sets one: a server that stopped answering must fail a
    checkout in seconds (the vote writer then keeps its batch), not hang the thread for minutes."""
    if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        return {"connect_timeout": _CONNECT_TIMEOUT_S}
    return {}


def _configure_sqlite_connection(dbapi_conn: Any, _record: object) -> None:
    """Per connection, because pragmas other than journal_mode do not persist in the file."""
    dbapi_conn.isolation_level = None  # we send BEGIN ourselves (see _begin_sqlite_transaction)
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute("PRAGMA busy_timeout=15000")  # first: switching to WAL may need to wait
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _begin_sqlite_transaction(conn: Connection) -> None:
    """A deferred transaction that read first cannot take the write lock later without
    failing at once (SQLITE_BUSY_SNAPSHOT ignores busy_timeout), so writers lock up front."""
    read_only = conn.get_execution_options().get(_READ_ONLY, False)
    conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _dialect_insert(conn: Connection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """INSERT with the dialect's ON CONFLICT support (the same API on both dialects)."""
    return postgresql.insert(table) if conn.dialect.name == "postgresql" else sqlite.insert(table)


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _upsert(conn: Connection, table: Table, rows: Sequence[Mapping[str, object]]) -> None:
    """Insert rows (one executemany); where the primary key exists, replace the other columns."""
    if not rows:
        return
    stmt = _dialect_insert(conn, table)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(table.primary_key.columns),
        set_={c.name: stmt.excluded[c.name] for c in table.columns if not c.primary_key},
    )
    conn.execute(stmt, list(rows))


def _delete_in(conn: Connection, table: Table, column: str, values: Sequence[str], *where: Any) -> int:
    """Delete the rows whose ``column`` is one of ``values`` (and match ``where``); returns how many."""
    statements = (delete(table).where(table.c[column].in_(chunk), *where) for chunk in _chunks(values))
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
    only costs a row, because popularity counts distinct prefixes, and a same-second
    duplicate is skipped by ON CONFLICT DO NOTHING. Returns the number of rows inserted.
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
    for chunk in _chunks(files):
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
    for chunk in _chunks(paths):
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
    stmt = _dialect_insert(conn, hit_counters)
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
    stmt = _dialect_insert(conn, leases).values(values)
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
