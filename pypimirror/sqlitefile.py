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

    def _inspect(self) -> str | None:
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return None if self._identity is None else "was deleted while in use"
        except OSError as exc:
            return f"cannot be opened ({exc.strerror or exc})"
        try:
            stat = os.fstat(fd)
            header = os.pread(fd, len(SQLITE_HEADER), 0)
        except OSError as exc:
            return f"cannot be read ({exc.strerror or exc})"
        finally:
            os.close(fd)
        identity = (stat.st_dev, stat.st_ino)
        if self._identity is None:
            if header == SQLITE_HEADER:  # an empty new file gets its header with the first write
                self._identity = identity
            return None
        if identity != self._identity:
            return "was replaced by another file while in use"
        if header != SQLITE_HEADER:
            return "was overwritten or truncated while in use (no SQLite header)"
        return None
