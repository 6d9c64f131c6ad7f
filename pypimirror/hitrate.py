"""The live hit rate: how many distribution-file downloads this node served from its own tiers.

A download is what a vote is: a GET of a distribution file (not HEAD, not ``.metadata``, not a
bot), answered from a tier (``local``), by a 302 to the upstream (``redirect``) or streamed from
it (``proxy``). The request path only adds to a few integers in :class:`HitCounter`; a
:class:`HitFlusher` moves them to the database's hourly counters (``hit_counters``, one row per
node, hour and outcome) every 30 seconds and at shutdown, on the database's writer thread. Every
worker and every process of a node adds to the same rows, so a node's figures are the sum of all.
While the database is unreachable the counts stay in memory (a few per hour) and go with the next
flush that works.

Bytes are the body bytes sent for ``local`` and ``proxy``. A redirected file never passes
through the mirror: its bytes are the size its stored project page lists, looked up at flush
time in a worker thread (:func:`listed_sizes`; a hot project's page is held in memory), and 0 for
a path no page lists (a made-up or removed file, which the upstream will not serve either).

:func:`read_hit_summary` reads the last 7 days back as a :class:`HitSummary`: the request and
byte hit rate (local / all) of the last 24 hours and 7 days, and per UTC day for the chart.
"""

from __future__ import annotations

__all__ = [
    "DAY_S",
    "HOUR_S",
    "SUMMARY_DAYS",
    "HitCounter",
    "HitFlusher",
    "HitSummary",
    "HitWindow",
    "SizeLookup",
    "listed_sizes",
    "read_hit_summary",
    "summarize_hits",
]

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import get_args

from sqlalchemy import Connection
from sqlalchemy import exc as sa_exc

from pypimirror.db import Database
from pypimirror.errors import DatabaseError
from pypimirror.listedfiles import ListedFiles
from pypimirror.queries import HitCount, HitOutcome, add_hit_counts, load_hit_counts

logger = logging.getLogger(__name__)

HOUR_S = 3600
DAY_S = 24 * HOUR_S
#: Days the summary and the chart cover.
SUMMARY_DAYS = 7
# How often the counts go to the database: often enough for a status that is minutes old at
# worst, rarely enough that a busy node writes a few rows a minute, whatever its traffic.
_FLUSH_INTERVAL_S = 30.0
# Distinct (hour, file) pairs of redirects kept per flush for the size lookup; past this many a
# redirect still counts as a request, with 0 bytes, so a flood of distinct files cannot grow memory.
_MAX_SIZED_REDIRECTS = 20_000
_TRANSIENT_ERRORS: tuple[type[Exception], ...] = (DatabaseError, sa_exc.SQLAlchemyError)
_OUTCOMES: tuple[HitOutcome, ...] = get_args(HitOutcome)


#: Blocking: the size of each of the given package paths that is known (absent: unknown).
SizeLookup = Callable[[Sequence[str]], Mapping[str, int]]


def _no_bots(_user_agent: str) -> bool:
    return False


def _no_sizes(_paths: Sequence[str]) -> Mapping[str, int]:
    return {}


def listed_sizes(listed: ListedFiles) -> SizeLookup:
    """Sizes as the stored pages list them, through ``listed``'s :meth:`~ListedFiles.lookup_blocking`."""

    def sizes(paths: Sequence[str]) -> dict[str, int]:
        found = {}
        for path in paths:
            entry = listed.lookup_blocking(path)
            if entry is not None:
                found[path] = entry.size
        return found

    return sizes


class HitCounter:
    """One process's downloads not yet in the database, and its totals since start (for ``/metrics``).

    Meant for the IOLoop thread alone: :meth:`count` is called once per finished download, and
    :meth:`take`/:meth:`give_back` by the :class:`HitFlusher` running on the same loop.
    ``is_bot`` is the vote recorder's check, so the two never disagree about who is a bot.
    """

    def __init__(self, *, is_bot: Callable[[str], bool] = _no_bots, clock: Callable[[], float] = time.time) -> None:
        self._is_bot = is_bot
        self._clock = clock
        self._pending: dict[tuple[int, HitOutcome], list[int]] = {}  # (hour, outcome) -> [requests, bytes]
        self._redirected: dict[tuple[int, str], int] = {}  # (hour, file path) -> requests, sized at flush
        self._totals: dict[HitOutcome, list[int]] = {outcome: [0, 0] for outcome in _OUTCOMES}

    def count(self, outcome: HitOutcome, body_bytes: int, file_path: str, user_agent: str | None) -> None:
        """Count one download of ``file_path`` answered as ``outcome`` with ``body_bytes`` sent."""
        if user_agent and self._is_bot(user_agent):
            return
        hour = int(self._clock()) // HOUR_S * HOUR_S
        pending = self._pending.get((hour, outcome))
        if pending is None:
            self._pending[(hour, outcome)] = [1, body_bytes]
        else:
            pending[0] += 1
            pending[1] += body_bytes
        total = self._totals[outcome]
        total[0] += 1
        total[1] += body_bytes
        if outcome == "redirect":
            key = (hour, file_path)
            known = self._redirected.get(key)
            if known is not None:
                self._redirected[key] = known + 1
            elif len(self._redirected) < _MAX_SIZED_REDIRECTS:
                self._redirected[key] = 1

    def take(self) -> tuple[list[HitCount], dict[tuple[int, str], int]]:
        """Everything counted since the last take: the hourly counts and the redirects to size."""
        pending, self._pending = self._pending, {}
        redirected, self._redirected = self._redirected, {}
        counts = [HitCount(hour, outcome, requests, size) for (hour, outcome), (requests, size) in pending.items()]
        return counts, redirected

    def give_back(self, counts: Iterable[HitCount], redirected: Mapping[tuple[int, str], int]) -> None:
        """Put back what a failed flush took, added to what was counted meanwhile."""
        for count in counts:
            pending = self._pending.setdefault((count.hour_start, count.outcome), [0, 0])
            pending[0] += count.requests
            pending[1] += count.bytes
        for key, requests in redirected.items():
            if key in self._redirected or len(self._redirected) < _MAX_SIZED_REDIRECTS:
                self._redirected[key] = self._redirected.get(key, 0) + requests

    def add_redirect_bytes(self, size: int) -> None:
        """Redirected bytes learnt at flush time, added to the totals since start."""
        self._totals["redirect"][1] += size

    def totals(self) -> dict[HitOutcome, tuple[int, int]]:
        """(requests, bytes) per outcome since start; redirect bytes as far as flushes sized them."""
        return {outcome: (requests, size) for outcome, (requests, size) in self._totals.items()}


class HitFlusher:
    """Moves a :class:`HitCounter`'s counts to the database every ``interval`` seconds and at close.

    Runs on the IOLoop; the writing itself happens on the database's writer thread. A flush that
    fails for a database outage gives its counts back to the counter for the next one; one that
    fails for any other reason (a bug) logs them as lost, so it cannot fail forever.
    """

    def __init__(
        self,
        counter: HitCounter,
        db: Database,
        node_id: str,
        *,
        sizes: SizeLookup = _no_sizes,
        interval: float = _FLUSH_INTERVAL_S,
    ) -> None:
        self._counter = counter
        self._db = db
        self._node_id = node_id
        self._sizes = sizes
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._flushing: asyncio.Lock | None = None
        self._failures = 0

    def start(self) -> None:
        """Flush every ``interval`` seconds from now on (call on the loop)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="pypimirror-hits")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    async def close(self) -> None:
        """Stop the periodic flushes and write what is left (the last counts of a stopping server)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if not await self.flush():
            counts, _ = self._counter.take()
            lost = sum(count.requests for count in counts)
            logger.error("hit counters: %d downloads of the last moments could not be recorded", lost)

    async def flush(self) -> bool:
        """Write the counts so far; False when the database refused them (they are kept)."""
        if self._flushing is None:
            self._flushing = asyncio.Lock()
        async with self._flushing:  # a slow flush and the next tick, or close(), never overlap
            counts, redirected = self._counter.take()
            if not counts:
                return True
            redirect_bytes = await self._size_redirects(redirected)
            sized = [
                replace(count, bytes=count.bytes + redirect_bytes.get(count.hour_start, 0))
                if count.outcome == "redirect" else count
                for count in counts
            ]
            try:
                await self._db.run(lambda conn: add_hit_counts(conn, self._node_id, sized))
            except _TRANSIENT_ERRORS as exc:
                self._counter.give_back(counts, redirected)
                self._failures += 1
                if self._failures == 1:
                    logger.warning("cannot record hit counters, keeping them until the database is back: %s", exc)
                return False
            except Exception:  # the flush's boundary: a bug must not stop every later flush
                logger.exception("discarding hit counters of %d downloads", sum(c.requests for c in counts))
                return True
            if self._failures:
                logger.warning("recording hit counters again after %d failed attempts", self._failures)
                self._failures = 0
            self._counter.add_redirect_bytes(sum(redirect_bytes.values()))
            return True

    async def _size_redirects(self, redirected: Mapping[tuple[int, str], int]) -> dict[int, int]:
        """The bytes of the redirects per hour, by the sizes known for their files (pages are read
        in a worker thread); a lookup that fails only costs those bytes, never the counts."""
        if not redirected:
            return {}
        paths = sorted({path for _, path in redirected})
        try:
            sizes = await asyncio.to_thread(self._sizes, paths)
        except Exception:  # the lookup's boundary: a bug there must not stop the counts
            logger.exception("cannot look up the sizes of %d redirected files; counting 0 bytes", len(paths))
            sizes = {}
        per_hour: dict[int, int] = {}
        for (hour, path), requests in redirected.items():
            size = sizes.get(path)
            if size:
                per_hour[hour] = per_hour.get(hour, 0) + requests * size
        return per_hour


# --- reading -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HitWindow:
    """Downloads from ``start`` (inclusive) to ``end`` (exclusive), Unix seconds; ``local_*`` of them
    were served from a tier."""

    start: int
    end: int
    requests: int = 0
    local_requests: int = 0
    bytes: int = 0
    local_bytes: int = 0

    @property
    def request_rate(self) -> float | None:
        """Local requests / all requests (0–1); None without any request."""
        return self.local_requests / self.requests if self.requests else None

    @property
    def byte_rate(self) -> float | None:
        """Local bytes / all bytes (0–1); None when no byte was counted."""
        return self.local_bytes / self.bytes if self.bytes else None

    def add(self, count: HitCount) -> HitWindow:
        local = count.outcome == "local"
        return replace(
            self,
            requests=self.requests + count.requests,
            local_requests=self.local_requests + (count.requests if local else 0),
            bytes=self.bytes + count.bytes,
            local_bytes=self.local_bytes + (count.bytes if local else 0),
        )


@dataclass(frozen=True, slots=True)
class HitSummary:
    """The last 24 hours and 7 days (whole hours, the current one included), and the last 7 UTC
    days one by one, oldest first (the last is today, so far)."""

    last_day: HitWindow
    last_week: HitWindow
    days: tuple[HitWindow, ...]


def _summary_since(now: float) -> int:
    """The first hour any part of the summary needs."""
    hour = int(now) // HOUR_S * HOUR_S
    today = int(now) // DAY_S * DAY_S
    return min(hour - (SUMMARY_DAYS * 24 - 1) * HOUR_S, today - (SUMMARY_DAYS - 1) * DAY_S)


def summarize_hits(counts: Iterable[HitCount], now: float) -> HitSummary:
    """The summary of hourly ``counts`` as of ``now``; counts outside every window are ignored."""
    hour = int(now) // HOUR_S * HOUR_S
    today = int(now) // DAY_S * DAY_S
    end = hour + HOUR_S
    last_day = HitWindow(hour - 23 * HOUR_S, end)
    last_week = HitWindow(hour - (SUMMARY_DAYS * 24 - 1) * HOUR_S, end)
    days = [HitWindow(today - k * DAY_S, today - (k - 1) * DAY_S) for k in range(SUMMARY_DAYS - 1, -1, -1)]
    for count in counts:
        if count.hour_start >= end:  # written by a node whose clock is ahead: not shown until its time
            continue
        if last_day.start <= count.hour_start:
            last_day = last_day.add(count)
        if last_week.start <= count.hour_start:
            last_week = last_week.add(count)
        index = (count.hour_start - days[0].start) // DAY_S
        if 0 <= index < len(days):
            days[index] = days[index].add(count)
    return HitSummary(last_day, last_week, tuple(days))


def read_hit_summary(conn: Connection, node_id: str, now: float) -> HitSummary:
    """This node's summary as of ``now``, from its hourly counters."""
    return summarize_hits(load_hit_counts(conn, node_id, _summary_since(now)), now)
