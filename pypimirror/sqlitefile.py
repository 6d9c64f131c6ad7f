"""Notices when the SQLite file a process has open is no longer the file at its path.

A connection to an SQLite file holds the file itself, not its name: once the file is deleted
(or replaced by another one, or truncated), connections already open go on reading and writing
the old one without an error, and every write made then is lost. A new connection would even
create an empty database at the path. :class:`SqliteFileGuard` remembers which file the
process opened (device and inode, taken once a valid database is seen there) and checks that
the path still leads to that file and that it still starts with SQLite's header.

:class:`~pypimirror.db.Database` runs the check before every transaction, never per vote (votes
are written in batches). It is one ``open``, ``fstat`` and 16-byte read: about 3 µs, against
about 250 µs for the smallest read transaction, so there is no need to skip checks and leave a
window in which writes go into a deleted file. While it fails, the database refuses work with a
:class:`~pypimirror.errors.DatabaseFileError` (so the vote writer keeps its votes queued and
``/healthz`` fails), and the problem is logged at most once a minute. A replaced file is never
adopted: the pooled connections still point at the old one, so only a restart recovers. Damage
behind the header is SQLite's to find; it reports it on the next read of the damaged page.

The file is opened by the guard once and that descriptor is kept until :meth:`close` (after the
engine's connections are closed): closing *any* descriptor of a file drops every POSIX lock the
process holds on it, SQLite's included, so an ``open``/``close`` per check would let another
process take the write lock, or checkpoint and reset the WAL, under our open transactions.
"""

from __future__ import annotations

__all__ = ["SQLITE_HEADER", "SqliteFileGuard"]

import logging
import os
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

#: The first 16 bytes of every SQLite 3 database file.
SQLITE_HEADER = b"SQLite format 3\x00"
# The same problem is logged again after this many seconds.
_LOG_INTERVAL_S = 60.0


class SqliteFileGuard:
    """Checks that ``path`` is still the SQLite file this process first found there. Thread-safe."""

    def __init__(self, path: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file we use
        self._logged_at: float | None = None
        # Descriptors of files found at the path, kept open until close() (see the module
        # docstring); the newest is the one read, keyed by its file's identity.
        self._open: dict[tuple[int, int], int] = {}

    def problem(self) -> str | None:
        """Why the file must not be used now (e.g. "was deleted while in use"), or None."""
        with self._lock:
            problem = self._inspect()
            if problem is not None:
                now = self._clock()
                if self._logged_at is None or now - self._logged_at >= _LOG_INTERVAL_S:
                    self._logged_at = now
                    logger.error(
                        "database file %s %s: nothing is read from or written to it (votes wait "
                        "in the queue); restore the file and restart pypimirror",
                        self.path,
                        problem,
                    )
            return problem

    def close(self) -> None:
        """Close the guard's descriptors; call once SQLite's connections to the file are closed."""
        with self._lock:
            for fd in self._open.values():
                os.close(fd)
            self._open.clear()

    def _inspect(self) -> str | None:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None if self._identity is None else "was deleted while in use"
        except OSError as exc:
            return f"cannot be examined ({exc.strerror or exc})"
        identity = (stat.st_dev, stat.st_ino)
        if self._identity is not None and identity != self._identity:
            return "was replaced by another file while in use"
        try:
            header = os.pread(self._descriptor(identity), len(SQLITE_HEADER), 0)
        except OSError as exc:
            return f"cannot be read ({exc.strerror or exc})"
        if self._identity is None:
            if header == SQLITE_HEADER:  # an empty new file gets its header with the first write
                self._identity = identity
            return None
        if header != SQLITE_HEADER:
            return "was overwritten or truncated while in use (no SQLite header)"
        return None

    def _descriptor(self, identity: tuple[int, int]) -> int:
        """An open descriptor of the file with ``identity``, opened on first use and kept."""
        fd = self._open.get(identity)
        if fd is None:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            found = os.fstat(fd)
            if (found.st_dev, found.st_ino) != identity:
                os.close(fd)  # replaced between stat and open: not the file SQLite holds locks on
                raise OSError(0, "the file changed while it was being opened")
            self._open[identity] = fd
        return fd
