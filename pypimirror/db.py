"""The database's engine and transactions: one engine per process, and a bridge for async code.

Promises: on SQLite every connection runs in WAL mode with a busy timeout, and every write
transaction starts with ``BEGIN IMMEDIATE``, so concurrent processes queue for the write lock
instead of failing with "database is locked": SQLite's default deferred transaction cannot
take the write lock once it has read, and fails at once instead of waiting. Async code never
blocks the IOLoop: :meth:`Database.run` runs a plain ``fn(conn)`` in a worker thread, and every
write made through it goes through the same single writer thread. What runs inside a transaction
are the named queries of :mod:`pypimirror.queries`; the tables live in :mod:`pypimirror.schema`.
Error texts never show a password.

Whatever the driver reports about a working database (lost server, locked or corrupt file,
dropped tables) becomes one :class:`~pypimirror.errors.DatabaseError` line, so callers that
promise to carry on without the database can; a constraint violation (IntegrityError) is a
bug of the caller and keeps its own type. On SQLite a :class:`~pypimirror.sqlitefile.SqliteFileGuard`
stops every transaction once the file was deleted, replaced or overwritten under us.
"""

from __future__ import annotations

__all__ = ["Database"]

import asyncio
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url

from pypimirror.errors import DatabaseError, DatabaseFileError
from pypimirror.schema import install_schema
from pypimirror.sqlitefile import SqliteFileGuard
from pypimirror.urlmask import mask_url

logger = logging.getLogger(__name__)

T = TypeVar("T")

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

