"""The index sync's recording of the history (:mod:`pypimirror.history` reads it).

Before a project's new pages replace the stored ones, the stored JSON page is compared with the
new page (:func:`~pypimirror.historychanges.diff_stored_page`) and the changes are committed;
only then are the pages written, and the serial is stored after them as before. A run cut off anywhere therefore loses no change: either it was committed, or the old
page is still on disk and the project is fetched and compared again next run (recording twice
is harmless, see :mod:`pypimirror.historydb`). Commits are grouped (:data:`COMMIT_BATCH` pages,
or what came within :data:`COMMIT_DELAY_S`), so a busy sync makes a few large transactions, not
one per project; the pages wait for it beside the fetches, which go on. The comparisons of a batch run in the
database's writer thread, inside its transaction: one hop off the IOLoop per batch.

The first run with recording on records nothing: what it leaves is the state "since ever", and
the history starts when it ends (if it was not cut off or failed; else the next run tries
again). A run with ``sync.record_history`` off ends the history, since it would miss changes.
"""

from __future__ import annotations

__all__ = ["SyncHistory"]

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from packaging.utils import NormalizedName
from sqlalchemy import Connection

from pypimirror import historydb
from pypimirror.db import Database
from pypimirror.errors import PyPIMirrorError, StorageError
from pypimirror.historychanges import ProjectChanges, diff_stored_page, removal_changes
from pypimirror.pagemodel import ProjectPage
from pypimirror.storage import RepoLayout

logger = logging.getLogger(__name__)

#: The stored page the history is compared with.
STORED_VARIANT = "index.v1_json"
#: A batch is committed when this many pages wait, or COMMIT_DELAY_S after its first one came:
#: a transaction costs about as much for 1 project as for 30, and the fetches go on meanwhile.
COMMIT_BATCH = 32
COMMIT_DELAY_S = 0.1


@dataclass(frozen=True, slots=True, eq=False)  # equal only to itself: a key of its batch
class _Waiting:
    """A project's new page, waiting for the comparison with the stored one and its commit."""

    page: ProjectPage
    page_json: bytes
    at: float
    done: asyncio.Future[None]


class SyncHistory:
    """One sync run's recorder for the repository at ``layout``; ``recording`` is False when
    the run records nothing."""

    def __init__(
        self, db: Database, layout: RepoLayout, *, enabled: bool, founding: bool, now: Callable[[], float]
    ) -> None:
        self.db = db
        self.layout = layout
        self.enabled = enabled
        self.founding = founding
        self.now = now
        self._waiting: list[_Waiting] = []
        self._batch_full = asyncio.Event()
        self._committer: asyncio.Future[None] | None = None

    @classmethod
    async def open(
        cls, db: Database, layout: RepoLayout, *, enabled: bool, now: Callable[[], float]
    ) -> SyncHistory:
        """The recorder of a run that is about to start; a run without it ends the history
        first, so no change can go unrecorded while the history claims to be complete."""
        if not enabled:
            if await db.run(historydb.end_history):
                logger.warning("index sync: sync.record_history is off: the index history ends here")
            return cls(db, layout, enabled=False, founding=False, now=now)
        started = await db.run_read(historydb.read_history_start)
        return cls(db, layout, enabled=True, founding=started is None, now=now)

    @property
    def recording(self) -> bool:
        return self.enabled and not self.founding

    async def before_write(self, page: ProjectPage, page_json: bytes) -> None:
        """Commit what changed from the stored page of ``page.name`` to ``page`` (rendered as
        ``page_json``); raises a :class:`~pypimirror.errors.PyPIMirrorError` if it cannot, and
        the pages must then not be written."""
        if not self.recording:
            return
        waiting = _Waiting(page, page_json, self.now(), asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        if len(self._waiting) >= COMMIT_BATCH:
            self._batch_full.set()
        if self._committer is None or self._committer.done():
            self._committer = asyncio.ensure_future(self._commit_waiting())
        await waiting.done

    async def before_remove(self, names: Sequence[NormalizedName]) -> None:
        """Commit the removal of ``names`` and of every file their stored pages list."""
        if not self.recording or not names:
            return
        at, layout = self.now(), self.layout
        batch = await asyncio.to_thread(
            lambda: [removal_changes(_read_stored(layout, name), name, at=at) for name in names]
        )
        await self.db.run(lambda conn: historydb.record_changes(conn, batch))

    async def finish(self, *, complete: bool) -> None:
        """Start the history after a complete founding run (if that fails, the next run is one)."""
        if not (self.founding and complete):
            return
        started = self.now()
        try:
            await self.db.run(lambda conn: historydb.start_history(conn, started))
        except PyPIMirrorError as exc:
            logger.error("index sync: cannot start the index history, the next run tries again: %s", exc)
            return
        logger.info("index sync: the index history starts now; the state found is its beginning")

    async def _commit_waiting(self) -> None:
        """Compare and commit the waiting pages, batch after batch, until none wait.

        The stored pages are read and compared in the database's writer thread, inside the
        transaction: one hop off the IOLoop per batch, not one per project.
        """
        while self._waiting:
            if len(self._waiting) < COMMIT_BATCH:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._batch_full.wait(), COMMIT_DELAY_S)
            self._batch_full.clear()
            batch, self._waiting = self._waiting, []
            try:
                unreadable = await self.db.run(lambda conn: self._record(conn, batch))
            except Exception as exc:  # each waiting project fails with it; the next batch may not
                unreadable = {waiting: exc for waiting in batch}
            for waiting in batch:
                failure = unreadable.get(waiting)
                if waiting.done.done():
                    continue
                if failure is None:
                    waiting.done.set_result(None)
                else:
                    waiting.done.set_exception(failure)

    def _record(self, conn: Connection, batch: Sequence[_Waiting]) -> dict[_Waiting, Exception]:
        """Record the changes of ``batch``; returns the failure of each entry whose stored page
        could not be read; blocking."""
        changes: list[ProjectChanges] = []
        unreadable: dict[_Waiting, Exception] = {}
        for waiting in batch:
            try:
                found = diff_stored_page(
                    _read_stored(self.layout, waiting.page.name), waiting.page, waiting.page_json, at=waiting.at
                )
            except StorageError as exc:
                unreadable[waiting] = exc
                continue
            if found is not None:
                changes.append(found)
        historydb.record_changes(conn, changes)
        return unreadable


def _read_stored(layout: RepoLayout, name: NormalizedName) -> bytes | None:
    """The stored JSON page of ``name``, None if there is none; blocking."""
    path = layout.project_page(name, STORED_VARIANT)
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise StorageError(f"cannot read the stored page {path} to record the history: {exc.strerror or exc}") from exc
