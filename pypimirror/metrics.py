"""The serving processes' Prometheus metrics: named metric objects behind one small API.

Nothing else touches prometheus-client. What moves per request goes through
:meth:`Metrics.observe_request` (the access-log hook calls it once per finished request) and
:meth:`Metrics.observe_upstream_error` (proxy mode); the vote recorder and the page cache keep
their own counters, which :meth:`Metrics.refresh` copies in (the server does so every second),
as are the server's connection counts and its buffer budget.
Request counts are plain integers until the next :meth:`Metrics.refresh` (a prometheus-client
``inc`` costs ~1 µs, ~5 µs in multiprocess mode, and a request made up to four): so a worker's
counts reach the shared files at most a second late, far within any scrape interval, and
:meth:`Metrics.render` flushes its own process first.
Downloads as the hit rate counts them come from :class:`~pypimirror.hitrate.HitCounter`'s totals
the same way. Job history and cache fill are the database's, the same for every process: they are read at
scrape time and rendered from a :class:`~pypimirror.status.MirrorStatus`.

With ``serve.workers > 1`` every process counts for itself. The parent calls
:func:`enable_multiprocess` with a fresh directory before forking; each worker then keeps its
values in its own memory-mapped files there (prometheus-client's multiprocess mode), and
``/metrics`` in any worker sums the files of all of them. The parent calls
:func:`mark_process_dead` for a worker that exited, so its gauges stop counting; its counters
stay in the sum, so totals never go backwards when a worker is replaced.
"""

from __future__ import annotations

__all__ = [
    "CONTENT_TYPE",
    "Metrics",
    "ServedKind",
    "enable_multiprocess",
    "mark_process_dead",
]

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, multiprocess, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from pypimirror.acceptor import ConnectionStats
from pypimirror.buffers import BufferStats
from pypimirror.pagecache import PageCacheStats
from pypimirror.queries import HitOutcome
from pypimirror.status import MirrorStatus
from pypimirror.votes import VoteStats

logger = logging.getLogger(__name__)

#: The ``Content-Type`` of :meth:`Metrics.render`'s output (the Prometheus text format 0.0.4).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

#: How a package-file response was answered: from a tier, streamed from the upstream, or a 302.
ServedKind = Literal["local", "proxied", "redirected"]

_ENV_DIR = "PROMETHEUS_MULTIPROC_DIR"


def enable_multiprocess(directory: Path) -> None:
    """Make every :class:`Metrics` built from now on, in this process and its forks, write to ``directory``.

    prometheus-client picks where values live when a metric is created, from a module-level
    class it chose at import time from ``PROMETHEUS_MULTIPROC_DIR``; since we import it long
    before the parent knows the directory, both are set here. ``directory`` should be empty:
    files left by an earlier run would be added to this one's totals.
    """
    os.environ[_ENV_DIR] = str(directory)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


def mark_process_dead(pid: int, directory: Path) -> None:
    """Forget the live gauges (vote queue depth, page-cache size) of a worker that exited."""
    multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]


class Metrics:
    """One process's metrics; ``multiprocess_dir`` set (after :func:`enable_multiprocess`) for workers.

    Meant for the IOLoop thread (the counters behind it are thread-safe, the caches here are not).
    """

    def __init__(self, *, multiprocess_dir: Path | None = None) -> None:
        # Not auto_describe: registering the multiprocess collector would then read every
        # worker's file at once, and a worker starting at that moment has an empty one (which
        # prometheus-client cannot read). Our own metrics describe themselves either way.
        self._registry = CollectorRegistry(auto_describe=False)
        own: CollectorRegistry | None = self._registry
        if multiprocess_dir is not None:
            if not getattr(values.ValueClass, "_multiprocess", False):
                raise RuntimeError("enable_multiprocess() must run before a multiprocess Metrics is built")
            multiprocess.MultiProcessCollector(self._registry, path=str(multiprocess_dir))  # type: ignore[no-untyped-call]
            own = None  # the values are exported from the files, not from the objects
        self._requests = Counter(
            "pypimirror_http_requests", "Requests answered, by route and status.", ["route", "status"], registry=own
        )
        self._response_bytes = Counter(
            "pypimirror_http_response_bytes", "Body bytes sent, by route.", ["route"], registry=own
        )
        self._package_responses = Counter(
            "pypimirror_package_responses",
            "Package-file responses, by how they were answered (local, proxied, redirected).",
            ["kind"],
            registry=own,
        )
        self._package_bytes = Counter(
            "pypimirror_package_bytes", "Package-file body bytes sent, by kind (local, proxied).", ["kind"],
            registry=own,
        )
        # Downloads as the hit rate counts them (GET of a distribution file, no .metadata, no bots),
        # a subset of the package responses above; the database keeps the same counts per hour.
        self._file_requests = Counter(
            "pypimirror_file_requests", "Distribution-file downloads, by outcome (local, redirect, proxy).",
            ["outcome"], registry=own,
        )
        self._file_bytes = Counter(
            "pypimirror_file_bytes",
            "Bytes of distribution-file downloads, by outcome; a redirect's are the size its page lists.",
            ["outcome"], registry=own,
        )
        for outcome in get_args(HitOutcome):  # every outcome from the first scrape, so a rate of them has a base
            self._file_requests.labels(outcome)
            self._file_bytes.labels(outcome)
        self._upstream_errors = Counter(
            "pypimirror_upstream_errors", "Failed requests to the upstream, by reason.", ["reason"], registry=own
        )
        self._votes = {
            "offered": Counter("pypimirror_votes_offered", "Votes offered to the queue.", registry=own),
            "bots": Counter("pypimirror_votes_bots", "Votes refused because the client is a bot.", registry=own),
            "dropped": Counter("pypimirror_votes_dropped", "Votes dropped because the queue was full.", registry=own),
            "over_share": Counter(
                "pypimirror_votes_over_network_share",
                "Votes dropped because their network already held its share of the queue.", registry=own,
            ),
            "unlisted": Counter(
                "pypimirror_votes_unlisted", "Votes not stored: no stored page lists the file.", registry=own
            ),
            "written": Counter("pypimirror_votes_written", "Votes stored in the database.", registry=own),
            "deduplicated": Counter(
                "pypimirror_votes_deduplicated", "Votes not stored: same file and network within the window.",
                registry=own,
            ),
            "db_errors": Counter(
                "pypimirror_vote_write_errors", "Failed (and retried) writes of a vote batch.", registry=own
            ),
        }
        self._vote_queue_depth = Gauge(
            "pypimirror_vote_queue_depth", "Votes waiting to be written.", registry=own, multiprocess_mode="livesum"
        )
        self._page_cache = {
            "hits": Counter("pypimirror_page_cache_hits", "Index pages served from memory.", registry=own),
            "misses": Counter("pypimirror_page_cache_misses", "Index pages read from disk.", registry=own),
            "evictions": Counter(
                "pypimirror_page_cache_evictions", "Pages dropped to stay within the cache size.", registry=own
            ),
        }
        self._page_cache_entries = Gauge(
            "pypimirror_page_cache_entries", "Pages held in memory.", registry=own, multiprocess_mode="livesum"
        )
        self._page_cache_bytes = Gauge(
            "pypimirror_page_cache_bytes", "Bytes of the pages held in memory.", registry=own,
            multiprocess_mode="livesum",
        )
        self._connections = {
            "refused": Counter(
                "pypimirror_connections_refused",
                "Connections closed at once because serve.max_connections were open.",
                registry=own,
            ),
            "accept_errors": Counter(
                "pypimirror_accept_errors",
                "Failed accepts (out of descriptors or memory), each followed by a pause in accepting.",
                registry=own,
            ),
        }
        self._connections_open = Gauge(
            "pypimirror_connections_open", "Client connections open.", registry=own, multiprocess_mode="livesum"
        )
        self._connections_limit = Gauge(
            "pypimirror_connections_limit", "The most client connections allowed open (serve.max_connections).",
            registry=own, multiprocess_mode="livesum",
        )
        self._buffers = {
            "squeezed": Counter(
                "pypimirror_buffer_budget_squeezed",
                "Responses given small buffers because the buffer budget was spent.",
                registry=own,
            ),
        }
        self._buffer_bytes = Gauge(
            "pypimirror_buffer_bytes", "Bytes of response buffers held for clients (within the buffer budget).",
            registry=own, multiprocess_mode="livesum",
        )
        self._buffer_budget = Gauge(
            "pypimirror_buffer_budget_bytes", "The buffer budget (serve.buffer_budget).", registry=own,
            multiprocess_mode="livesum",
        )
        # A labelled child is looked up under a lock on every use; the few combinations are kept.
        self._request_children: dict[tuple[str, int], tuple[Counter, Counter]] = {}
        self._kind_children = {
            kind: (self._package_responses.labels(kind), self._package_bytes.labels(kind))
            for kind in get_args(ServedKind)
        }
        # Not yet in the counters: [responses, body bytes] per (route, status) and per kind.
        self._pending_requests: dict[tuple[str, int], list[int]] = {}
        self._pending_kinds: dict[ServedKind, list[int]] = {}
        self._last_votes: VoteStats | None = None
        self._last_pages: PageCacheStats | None = None
        self._last_connections: ConnectionStats | None = None
        self._last_buffers: BufferStats | None = None
        self._last_hits: Mapping[HitOutcome, tuple[int, int]] = {}

    def observe_request(self, route: str, status: int, body_bytes: int, kind: ServedKind | None) -> None:
        """Count one finished request.

        ``route`` names the handler (a handful of fixed names, never a path), ``body_bytes`` is
        what was sent after the headers, and ``kind`` says how a package file was answered
        (None for every other request). It reaches the exported counters at the next
        :meth:`refresh` or :meth:`render`.
        """
        pending = self._pending_requests.get((route, status))
        if pending is None:
            self._pending_requests[(route, status)] = [1, body_bytes]
        else:
            pending[0] += 1
            pending[1] += body_bytes
        if kind is not None:
            pending = self._pending_kinds.get(kind)
            if pending is None:
                self._pending_kinds[kind] = [1, body_bytes]
            else:
                pending[0] += 1
                pending[1] += body_bytes

    def _flush_requests(self) -> None:
        """Add the request counts kept since the last flush to the exported counters."""
        requests, self._pending_requests = self._pending_requests, {}
        kinds, self._pending_kinds = self._pending_kinds, {}
        for (route, status), (count, body_bytes) in requests.items():
            children = self._request_children.get((route, status))
            if children is None:
                children = (self._requests.labels(route, str(status)), self._response_bytes.labels(route))
                self._request_children[(route, status)] = children
            children[0].inc(count)
            if body_bytes:
                children[1].inc(body_bytes)
        for kind, (count, body_bytes) in kinds.items():
            responses, sent = self._kind_children[kind]
            responses.inc(count)
            if body_bytes:
                sent.inc(body_bytes)

    def observe_upstream_error(self, reason: str) -> None:
        """Count a request to the upstream that failed; ``reason`` is one of a few fixed words
        (``unavailable``, ``status``, ``timeout``, ...), never a URL or a message."""
        self._upstream_errors.labels(reason).inc()

    def refresh(
        self,
        *,
        votes: VoteStats | None,
        pages: PageCacheStats | None,
        connections: ConnectionStats | None = None,
        buffers: BufferStats | None = None,
        hits: Mapping[HitOutcome, tuple[int, int]] | None = None,
    ) -> None:
        """Bring the vote, page-cache, connection, buffer and download figures up to the given
        snapshots of their own counters (``hits``: (requests, bytes) per outcome since start),
        and the request counters up to date."""
        self._flush_requests()
        if hits is not None:
            for outcome, (requests, size) in hits.items():
                before_requests, before_size = self._last_hits.get(outcome, (0, 0))
                if requests > before_requests:
                    self._file_requests.labels(outcome).inc(requests - before_requests)
                if size > before_size:
                    self._file_bytes.labels(outcome).inc(size - before_size)
            self._last_hits = dict(hits)
        if votes is not None:
            self._advance(self._votes, votes, self._last_votes)
            self._vote_queue_depth.set(votes.queue_depth)
            self._last_votes = votes
        if pages is not None:
            self._advance(self._page_cache, pages, self._last_pages)
            self._page_cache_entries.set(pages.entries)
            self._page_cache_bytes.set(pages.bytes)
            self._last_pages = pages
        if connections is not None:
            self._advance(self._connections, connections, self._last_connections)
            self._connections_open.set(connections.open)
            self._connections_limit.set(connections.limit)
            self._last_connections = connections
        if buffers is not None:
            self._advance(self._buffers, buffers, self._last_buffers)
            self._buffer_bytes.set(buffers.in_use)
            self._buffer_budget.set(buffers.limit)
            self._last_buffers = buffers

    @staticmethod
    def _advance(counters: dict[str, Counter], now: object, before: object | None) -> None:
        for field_name, counter in counters.items():
            delta = getattr(now, field_name) - (getattr(before, field_name) if before is not None else 0)
            if delta > 0:
                counter.inc(delta)

    def render(self, status: MirrorStatus | None = None) -> bytes:
        """The text exposition of every process's metrics, plus the job and tier figures of ``status``."""
        self._flush_requests()
        text = generate_latest(self._registry)
        if status is None:
            return text
        database = CollectorRegistry(auto_describe=False)
        database.register(_StatusCollector(status))
        return text + generate_latest(database)


class _StatusCollector(Collector):
    """Job history and cache fill from the database, as gauges (the same answer in every worker)."""

    def __init__(self, status: MirrorStatus) -> None:
        self._status = status

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from _job_families(self._status)
        yield from _tier_families(self._status)


def _job_families(status: MirrorStatus) -> Iterable[GaugeMetricFamily]:
    last_start = GaugeMetricFamily(
        "pypimirror_job_last_start_timestamp_seconds", "When the newest run of the job started.", labels=["job"]
    )
    last_success = GaugeMetricFamily(
        "pypimirror_job_last_success_timestamp_seconds", "When the newest successful run ended.", labels=["job"]
    )
    duration = GaugeMetricFamily(
        "pypimirror_job_last_duration_seconds", "How long the newest finished run took.", labels=["job"]
    )
    running = GaugeMetricFamily("pypimirror_job_running", "1 while the newest run has not ended.", labels=["job"])
    failures = GaugeMetricFamily(
        "pypimirror_job_failures_since_success",
        "Failed or interrupted runs since the newest successful one.",
        labels=["job"],
    )
    for job in status.jobs:
        last_start.add_metric([job.name], job.last_run.started_at)
        running.add_metric([job.name], 1.0 if job.last_run.outcome is None else 0.0)
        failures.add_metric([job.name], job.failures_since_success)
        if job.last_success is not None and job.last_success.finished_at is not None:
            last_success.add_metric([job.name], job.last_success.finished_at)
        finished = job.last_finished
        if finished is not None and finished.finished_at is not None:
            duration.add_metric([job.name], finished.finished_at - finished.started_at)
    return (last_start, last_success, duration, running, failures)


def _tier_families(status: MirrorStatus) -> Iterable[GaugeMetricFamily]:
    used = GaugeMetricFamily("pypimirror_cache_tier_bytes", "Bytes of package files this node holds, per tier.",
                             labels=["tier"])
    files = GaugeMetricFamily("pypimirror_cache_tier_files", "Package files this node holds, per tier.",
                              labels=["tier"])
    limit = GaugeMetricFamily("pypimirror_cache_tier_limit_bytes", "The byte budget of each tier.", labels=["tier"])
    for tier in status.tiers:
        label = [str(tier.index)]
        used.add_metric(label, tier.bytes)
        files.add_metric(label, tier.files)
        limit.add_metric(label, tier.limit)
    return (used, files, limit)
