"""The index sync's recording of the history (:mod:`pypimirror.history` reads it).

Before a project's new pages replace the stored ones, the stored JSON page is compared with the
new page (:func:`~pypimirror.historychanges.diff_stored_page`, in a worker thread) and the
changes are committed; only then are the pages written, and the serial is stored after them as
before. A run cut off anywhere therefore loses no change: either it was committed, or the old
page is still on disk and the project is fetched and compared again next run (recording twice
is harmless, see :mod:`pypimirror.historydb`). Commits are grouped: whatever the workers hand in
while one transaction runs goes into the next, so a busy sync makes a few large transactions,
not one per project, and no worker waits for a timer.

The first run with recording on records nothing: what it leaves is the state "since ever", and
the history starts when it ends (if it was not cut off or failed; else the next run tries
again). A run with ``sync.record_history`` off ends the history, since it would miss changes.
"""

from __future__ import annotations

__all__ = ["SyncHistory"]

import asyncio
import logging
from collections.abc import Callable, Sequence

from packaging.utils import NormalizedName

from pypimirror import historydb
from pypimirror.db import Database
from pypimirror.errors import StorageError
from pypimirror.historychanges import ProjectChanges, diff_stored_page, removal_changes
from pypimirror.pagemodel import ProjectPage
from pypimirror.storage import RepoLayout

logger = logging.getLogger(__name__)

#: The stored page the history is compared with.
STORED_VARIANT = "index.v1_json"


class SyncHistory:
    """One sync run's recorder; ``recording`` is False when the run records nothing."""

    def __init__(self, db: Database, *, enabled: bool, founding: bool, now: Callable[[], float]) -> None:
        self.db = db
        self.enabled = enabled
        self.founding = founding
        self.now = now
        self._waiting: list[tuple[ProjectChanges, asyncio.Future[None]]] = []
        self._committer: asyncio.Future[None] | None = None

    @classmethod
    async def open(cls, db: Database, *, enabled: bool, now: Callable[[], float]) -> SyncHistory:
        started = await db.run_read(historydb.read_history_start) if enabled else None
        return cls(db, enabled=enabled, founding=enabled and started is None, now=now)

    @property
    def recording(self) -> bool:
        return self.enabled and not self.founding

    async def before_write(self, layout: RepoLayout, page: ProjectPage, page_json: bytes) -> None:
        """Commit what changed from the stored page of ``page.name`` to ``page`` (rendered as
        ``page_json``); raises a :class:`~pypimirror.errors.PyPIMirrorError` if it cannot, and
        the pages must then not be written."""
        if not self.recording:
            return
        at = self.now()
        changes = await asyncio.to_thread(_diff_with_stored, layout, page, page_json, at)
        if changes is None:
            return
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((changes, done))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.ensure_future(self._commit_waiting())
        await done

    async def before_remove(self, layout: RepoLayout, names: Sequence[NormalizedName]) -> None:
        """Commit the removal of ``names`` and of every file their stored pages list."""
        if not self.recording or not names:
            return
        at = self.now()
        batch = await asyncio.to_thread(
            lambda: [removal_changes(_read_stored(layout, name), name, at=at) for name in names]
        )
        await self.db.run(lambda conn: historydb.record_changes(conn, batch))

    async def finish(self, *, complete: bool) -> None:
        """Start the history after a complete founding run; end it after a run without it."""
        if not self.enabled:
            if await self.db.run(historydb.end_history):
                logger.warning("index sync: sync.record_history is off: the index history ends here")
            return
        if self.founding and complete:
            started = self.now()
            await self.db.run(lambda conn: historydb.start_history(conn, started))
            logger.info("index sync: the index history starts now; the state found is its beginning")

    async def _commit_waiting(self) -> None:
        """Commit the waiting changes, batch after batch, until none wait."""
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                await self.db.run(lambda conn: historydb.record_changes(conn, [changes for changes, _ in batch]))
            except Exception as exc:  # each waiting project fails with it; the next batch may not
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for _, done in batch:
                if not done.done():
                    done.set_result(None)


def _read_stored(layout: RepoLayout, name: NormalizedName) -> bytes | None:
    """The stored JSON page of ``name``, None if there is none; blocking."""
    path = layout.project_page(name, STORED_VARIANT)
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise StorageError(f"cannot read the stored page {path} to record the history: {exc.strerror or exc}") from exc


def _diff_with_stored(layout: RepoLayout, page: ProjectPage, page_json: bytes, at: float) -> ProjectChanges | None:
    return diff_stored_page(_read_stored(layout, page.name), page, page_json, at=at)
