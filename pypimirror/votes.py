"""Votes from package-file requests, queued without blocking and stored in batches by one thread.

A request only appends to a bounded in-memory queue (:meth:`VoteRecorder.offer`, about a
microsecond); a full queue drops the vote and counts it. A repeat of a vote this process
accepted within the dedup window (same file, same network prefix) never takes a slot: it is
counted as deduplicated at once, which is what the database would decide. One writer thread
stores the queue in batches through :func:`pypimirror.db.record_votes`, which deduplicates per
(file, network prefix) within the window, also across processes; it wakes as soon as a quarter
of a batch is waiting, so a burst of distinct votes drains at the database's pace. While the database is unreachable the writer keeps its batch and retries with
back-off, so a vote once accepted is stored, also at shutdown: :meth:`VoteRecorder.close` drains
the queue (it gives up only when its timeout expires, and then says how many votes were lost).
"""

from __future__ import annotations

__all__ = ["VoteRecorder", "VoteStats"]

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import exc as sa_exc

from pypimirror.bots import BotMatcher
from pypimirror.db import Database, Vote, record_votes
from pypimirror.errors import DatabaseError

logger = logging.getLogger(__name__)

# Back-off after a failed write: the first delay, doubled after each further failure, up to the last.
_RETRY_FIRST_S = 0.5
_RETRY_MAX_S = 10.0
# How long the writer keeps draining when the main thread ended without calling close().
_ORPHAN_DRAIN_S = 10.0
# How long close() still waits for the writer to stop once its timeout expired.
_ABANDON_JOIN_S = 1.0
# The most (file, prefix) pairs remembered for the early dedup; when full it starts afresh,
# which only lets a few repeats through to the database's own dedup.
_RECENT_LIMIT = 100_000
# A failed write means the database is down or locked: keep the batch and retry. SQLAlchemyError
# also covers what Database.begin does not translate (a pool timeout, a lost connection).
_TRANSIENT_ERRORS: tuple[type[Exception], ...] = (DatabaseError, sa_exc.SQLAlchemyError)


@dataclass(frozen=True, slots=True)
class VoteStats:
    """Counters since start, for /metrics and tests.

    ``offered`` counts every call of :meth:`VoteRecorder.offer`; of those, ``queued`` were
    accepted (queued, or recognised at once as a repeat), ``bots`` came from a bot and
    ``dropped`` met a full queue (the rest had no network prefix or came after close).
    ``written`` rows were inserted and ``deduplicated`` votes fell inside the window of an
    earlier one, whether found in memory or by the database; ``db_errors`` counts failed (and retried) writes;
    ``discarded`` counts votes of a batch that failed with an unexpected error (a bug, logged
    with its stack). ``queue_depth`` is the number of votes waiting now.
    """

    offered: int
    queued: int
    bots: int
    dropped: int
    written: int
    deduplicated: int
    db_errors: int
    discarded: int
    queue_depth: int


class VoteRecorder:
    """A bounded vote queue and the one thread that writes it to the database.

    :meth:`offer` is meant for a single producer thread (the IOLoop): the queue itself is
    thread-safe, but its counters are plain integers, each written by one thread only. Call
    :meth:`close` from that thread too (or once offers stopped), so no vote slips in behind
    the final drain.
    """

    def __init__(
        self,
        db: Database,
        *,
        dedup_window: timedelta,
        queue_size: int,
        bots: Sequence[str],
        clock: Callable[[], float] = time.time,
        batch_size: int = 1000,
        flush_interval: float = 0.5,
    ) -> None:
        self._db = db
        self._window_s = int(dedup_window.total_seconds())
        self._dedup_s = max(self._window_s, 1)  # as record_votes: two votes in one second are one
        self._queue_size = queue_size
        self._is_bot = BotMatcher(bots).is_bot
        self._clock = clock
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._queue: deque[tuple[str, str, int]] = deque()
        self._recent: dict[tuple[str, str], int] = {}  # (file, prefix) -> time of its last queued vote
        self._wake_at = max(1, min(batch_size, queue_size) // 4)
        self._wake = threading.Event()  # set by offer() when _wake_at votes wait, and by close()
        self._closed = False
        self._closing = threading.Event()
        self._abandon = threading.Event()
        self._thread: threading.Thread | None = None
        self._batch: list[Vote] = []
        self._failures = 0  # consecutive failed writes; > 0 means an outage is in progress
        self._orphan_deadline: float | None = None
        # Counters: offered/queued/bots/dropped/repeats are written by offer(), the rest by the writer.
        self._offered = self._queued = self._bot_votes = self._dropped = self._repeats = 0
        self._written = self._deduplicated = self._db_errors = self._discarded = 0

    def start(self) -> None:
        """Start the writer thread (once).

        It is not a daemon, so queued votes are not cut off at exit: close() joins it, and if
        the main thread ends without close() it still drains for up to 10 s.
        """
        if self._thread is not None:
            raise RuntimeError("the vote writer is already started")
        self._thread = threading.Thread(target=self._run, name="pypimirror-votes", daemon=False)
        self._thread.start()

    def offer(self, file_path: str, network_prefix: str | None, user_agent: str | None) -> bool:
        """Queue a vote for ``file_path``, stamped now; True if queued. Never blocks or raises.

        Bots (a ``bots`` entry inside the User-Agent, any case), a missing prefix, a full queue
        and a closed recorder all return False; a full queue is counted in ``dropped``. A repeat
        within the window of a vote queued here returns True and is counted as deduplicated.
        """
        self._offered += 1
        if self._closed or not network_prefix:
            return False
        if user_agent and self._is_bot(user_agent):
            self._bot_votes += 1
            return False
        now = int(self._clock())
        key = (file_path, network_prefix)
        last = self._recent.get(key)
        if last is not None and now - last < self._dedup_s:
            self._queued += 1
            self._repeats += 1
            return True
        queue = self._queue
        if len(queue) >= self._queue_size:
            self._dropped += 1
            return False
        if len(self._recent) >= _RECENT_LIMIT:
            self._recent.clear()
        self._recent[key] = now
        queue.append((file_path, network_prefix, now))
        self._queued += 1
        if len(queue) >= self._wake_at and not self._wake.is_set():
            self._wake.set()
        return True

    def close(self, timeout: float | None = None) -> None:
        """Refuse new votes, store every queued one, and join the writer.

        ``timeout`` (seconds, None for no limit) is a last resort for a database that stays
        down: when it expires the writer is told to give up; it ends after its current database
        call (close() waits one more second for that), logging how many votes it could not store.
        """
        self._closed = True
        self._closing.set()
        self._wake.set()
        if self._thread is None:
            if not self._queue:
                return
            self.start()
        assert self._thread is not None
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.error("vote writer did not finish within %.1fs; stopping it", timeout)
            self._abandon.set()
            self._thread.join(_ABANDON_JOIN_S)

    @property
    def stats(self) -> VoteStats:
        """A snapshot of the counters."""
        return VoteStats(
            offered=self._offered,
            queued=self._queued,
            bots=self._bot_votes,
            dropped=self._dropped,
            written=self._written,
            deduplicated=self._deduplicated + self._repeats,
            db_errors=self._db_errors,
            discarded=self._discarded,
            queue_depth=len(self._queue),
        )

    # --- the writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        """Write batches until closed and drained, retrying a failed batch with back-off."""
        while not self._is_abandoned():
            if not self._batch:
                self._batch = self._take_batch()
            if not self._batch:
                if self._closing.is_set() or not threading.main_thread().is_alive():
                    return
                self._wake.wait(self._flush_interval)
                self._wake.clear()
            elif self._store(self._batch):
                self._batch = []
            else:
                self._abandon.wait(self._retry_delay())
        lost = len(self._batch) + len(self._queue)
        if lost:
            logger.error("vote writer stopped: %d queued votes were not recorded", lost)

    def _is_abandoned(self) -> bool:
        """True once close() gave up, or 10 s after the program ended without calling close()."""
        if self._abandon.is_set():
            return True
        if threading.main_thread().is_alive():
            return False
        if self._orphan_deadline is None:
            self._closed = True
            self._orphan_deadline = time.monotonic() + _ORPHAN_DRAIN_S
            logger.warning("vote writer was not closed; storing the queued votes before exit")
        return time.monotonic() > self._orphan_deadline

    def _take_batch(self) -> list[Vote]:
        queue = self._queue
        return [Vote(*queue.popleft()) for _ in range(min(len(queue), self._batch_size))]

    def _store(self, batch: list[Vote]) -> bool:
        """Write one batch; False means "keep it and retry" (the database is unavailable)."""
        try:
            with self._db.begin() as conn:
                inserted = record_votes(conn, batch, self._window_s)
        except _TRANSIENT_ERRORS as exc:
            self._db_errors += 1
            self._failures += 1
            if self._failures == 1:
                logger.warning("cannot record votes, retrying until the database is back: %s", exc)
            else:
                logger.debug("vote write attempt %d failed: %s", self._failures, exc)
            return False
        except Exception:  # the thread's boundary: a bug must not stop every later vote
            self._discarded += len(batch)
            logger.exception("discarding %d votes that cannot be recorded", len(batch))
            return True
        if self._failures:
            logger.warning("recording votes again after %d failed attempts", self._failures)
            self._failures = 0
        self._written += inserted
        self._deduplicated += len(batch) - inserted
        return True

    def _retry_delay(self) -> float:
        """0.5 s after the first failure, doubling per further failure, at most 10 s."""
        return min(_RETRY_FIRST_S * 2.0 ** min(self._failures - 1, 8), _RETRY_MAX_S)
