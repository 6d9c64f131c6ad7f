"""The serving process: sockets, TLS, signals, forked workers and the graceful stop.

:func:`serve_forever` runs the server (the routes of :mod:`pypimirror.app`) until SIGINT or
SIGTERM and then stops gracefully: no new connection is accepted and no connection kept
alive, requests in flight get ``shutdown_grace`` to finish (a second signal cuts that short),
every queued vote is written to the database and every access-log line to its file. SIGUSR1
reopens the access log (handled even without one). With ``serve.workers`` > 1 the parent
reserves the port, forks that many workers (:mod:`pypimirror.workers`) and passes these
signals on; each worker listens on its own ``SO_REUSEPORT`` socket and has its own database
engine, vote writer, access-log handle and page cache; ``/metrics`` sums all of them, and
worker 0 alone runs the scheduler. :class:`StopSignals` is also how ``pypimirror sync``
learns that it should stop.
"""

from __future__ import annotations

__all__ = ["ServeError", "StopSignals", "serve_forever"]

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import signal
import socket
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from tornado.ioloop import PeriodicCallback
from tornado.iostream import IOStream
from tornado.web import Application

from pypimirror.acceptor import CappedHTTPServer, resolve_max_connections
from pypimirror.accesslog import AccessLog, NullAccessLog
from pypimirror.app import Services, make_app, upstream_client
from pypimirror.buffers import BufferBudget
from pypimirror.config import Config, LogConfig, TLSConfig
from pypimirror.asof import HistoryAccess
from pypimirror.db import Database
from pypimirror.errors import DatabaseError, PyPIMirrorError
from pypimirror.handlers.base import InFlight
from pypimirror.hitrate import HitCounter, HitFlusher, listed_sizes
from pypimirror.jobs.registry import JOBS
from pypimirror.jobs.scheduler import SyncJobs, scheduling
from pypimirror.listedfiles import ListedFiles
from pypimirror.metrics import Metrics, enable_multiprocess, mark_process_dead
from pypimirror.pagecache import PageCache
from pypimirror.advisorypages import AdvisoryPages
from pypimirror.osvapi import AdvisoryLookup
from pypimirror.status import StatusReader
from pypimirror.upstream import configure_curl_client
from pypimirror.votes import VoteRecorder
from pypimirror.workers import EXIT_START_FAILED, run_workers, unblock_signals

logger = logging.getLogger(__name__)

# Connections the kernel may queue before we accept them (Linux caps it at net.core.somaxconn).
_BACKLOG = 1024
# The mirror answers GET and HEAD only; a request body is never read for anything.
_MAX_BODY_BYTES = 64 * 1024
# After the grace period, how long closing the remaining connections may take.
_CLOSE_TIMEOUT_S = 5.0
# The least time the final vote drain gets, whatever shutdown_grace says.
_MIN_VOTE_DRAIN_S = 10.0
# A second SIGINT/SIGTERM sooner than this after the first is a duplicate, not a second request.
_REPEAT_WINDOW_S = 1.0
# How often each process copies its vote and page-cache counters into /metrics.
_METRICS_REFRESH_MS = 1000
# How often a serving process looks whether the advisory sync stored new records.
_ADVISORY_REFRESH_MS = 30_000
# Upstream transfers running at once (proxied files and jobs); more wait in tornado's queue.
_MAX_OUTBOUND_TRANSFERS = 100


class ServeError(PyPIMirrorError):
    """The server cannot start: the address is taken, the TLS files do not load, ..."""


def serve_forever(config: Config, *, with_scheduler: bool = False) -> int:
    """Serve until SIGINT/SIGTERM, stop gracefully, and return the exit status (0 when all went well).

    ``with_scheduler`` runs the embedded scheduler (:mod:`pypimirror.jobs.scheduler`) on the
    server's loop; with several workers, in the primary one only.
    Expected start-up failures (address in use, TLS files, database, access log) raise a
    :class:`~pypimirror.errors.PyPIMirrorError`; a worker that cannot start logs its own
    error, and then the parent raises :class:`ServeError`.
    """
    ssl_context = _tls_context(config.tls)
    if config.serve.workers > 1:
        return _serve_with_workers(config, ssl_context, with_scheduler=with_scheduler)
    sockets = _bind(config.listen, config.listen_address)
    try:
        return asyncio.run(_serve(config, sockets, ssl_context, with_scheduler=with_scheduler))
    finally:
        _close_sockets(sockets)


@dataclass(frozen=True, slots=True)
class _Worker:
    """Which of ``count`` worker processes this is; where their metrics meet."""

    index: int
    count: int
    metrics_dir: Path

    @property
    def is_primary(self) -> bool:
        """Worker 0 hosts what must run once per node (the embedded scheduler)."""
        return self.index == 0


def _serve_with_workers(config: Config, ssl_context: ssl.SSLContext | None, *, with_scheduler: bool = False) -> int:
    """Fork ``serve.workers`` processes serving the configured address; supervise them until stopped.

    The parent binds the address but does not listen: that reserves the port (``:0`` is
    resolved here, a taken port is one error before any fork). Each worker listens on its own
    socket of the same address with ``SO_REUSEPORT``, and the kernel spreads new connections
    over those sockets. One shared listening socket would let the first worker to wake take a
    whole burst of connections (Tornado accepts all that wait), and keep-alive clients then
    stay with it: we measured 16 of 16 wrk connections on one worker in 3 of 5 tries. A
    worker that dies takes its socket with it, so no connection waits for it. The database is
    opened (and its schema installed) once here too; each worker then opens its own engine.
    Every worker appends to the same access log (``O_APPEND``, one ``write`` per flush): lines
    never mix, but the file is in flush order, so two workers' lines may be up to a second
    out of time order.
    """
    reserved = _bind(config.listen, config.listen_address, reuse_port=True, listening=False)
    metrics_dir: Path | None = None
    try:
        Database.open(config.database.url).dispose()
        metrics_dir = Path(tempfile.mkdtemp(prefix="pypimirror-metrics-"))
        enable_multiprocess(metrics_dir)
        count, directory = config.serve.workers, metrics_dir
        status = run_workers(
            count,
            lambda index: _run_worker(
                config, reserved, ssl_context, _Worker(index, count, directory), with_scheduler=with_scheduler
            ),
            on_child_exit=lambda pid: mark_process_dead(pid, directory),
        )
    finally:
        _close_sockets(reserved)
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    if status == EXIT_START_FAILED:
        raise ServeError("serve.workers: a worker could not start (its error is logged above)")
    return status


def _run_worker(
    config: Config,
    reserved: list[socket.socket],
    ssl_context: ssl.SSLContext | None,
    worker: _Worker,
    *,
    with_scheduler: bool = False,
) -> int:
    """The life of one forked worker, listening on its own sockets of the ``reserved`` addresses;
    :data:`EXIT_START_FAILED` when it could not start."""
    sockets: list[socket.socket] = []
    try:
        sockets = _listen_like(config.listen, reserved)
        _close_sockets(reserved)  # this process's copies; the parent keeps the port
        with_scheduler = with_scheduler and worker.is_primary
        return asyncio.run(_serve(config, sockets, ssl_context, worker, with_scheduler=with_scheduler))
    except PyPIMirrorError as exc:
        logger.error("worker %d: %s", worker.index, exc)
        return EXIT_START_FAILED
    finally:
        _close_sockets(sockets)


class StopSignals:
    """SIGINT/SIGTERM ask for a stop (a second one: stop waiting); SIGUSR1, if asked for, reopens a log.

    ``stop`` is set by the first signal and ``forced`` by a second; ``stopping`` and
    ``forcing`` say in the log what each means to the process (the server drains its
    connections, a sync stops at its next safe point). A repeat within
    :data:`_REPEAT_WINDOW_S` of the first is the same request arriving twice, not a second
    one: a worker gets a terminal's Ctrl-C, or systemd's SIGTERM to the whole control group,
    both directly and passed on by its supervisor. SIGUSR1 is handled only when
    ``reopen_log`` is given at :meth:`install`; it may be replaced later (the server installs
    the handlers before its access log is open, so no early signal is lost).
    """

    def __init__(
        self,
        *,
        stopping: str,
        forcing: str,
        reopen_log: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stop = asyncio.Event()
        self.forced = asyncio.Event()
        self.reopen_log = reopen_log
        self._stopping = stopping
        self._forcing = forcing
        self._clock = clock
        self._stop_at = 0.0
        self._signals: tuple[signal.Signals, ...] = ()

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Handle the signals on ``loop``, then let through any a forked worker still has blocked."""
        self._signals = (signal.SIGINT, signal.SIGTERM)
        for signum in self._signals:
            loop.add_signal_handler(signum, self._on_stop, signum)
        if self.reopen_log is not None:
            loop.add_signal_handler(signal.SIGUSR1, self._on_reopen)
            self._signals += (signal.SIGUSR1,)
        unblock_signals()  # a forked worker starts with them blocked; one that came meanwhile arrives now

    def uninstall(self, loop: asyncio.AbstractEventLoop) -> None:
        for signum in self._signals:
            loop.remove_signal_handler(signum)
        self._signals = ()

    def _on_stop(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if not self.stop.is_set():
            logger.info("received %s: %s", name, self._stopping)
            self._stop_at = self._clock()
            self.stop.set()
        elif self._clock() - self._stop_at < _REPEAT_WINDOW_S:
            logger.info("received %s again at once: the same stop request", name)
        else:
            logger.warning("received %s again: %s", name, self._forcing)
            self.forced.set()

    def _on_reopen(self) -> None:
        logger.info("received SIGUSR1: reopening the access log")
        if self.reopen_log is not None:
            self.reopen_log()


async def _serve(
    config: Config,
    sockets: list[socket.socket],
    ssl_context: ssl.SSLContext | None,
    worker: _Worker | None = None,
    *,
    with_scheduler: bool = False,
) -> int:
    configure_curl_client(max_clients=_MAX_OUTBOUND_TRANSFERS)  # before anything makes a client
    loop = asyncio.get_running_loop()
    signals = StopSignals(
        stopping="stopping", forcing="closing the remaining connections now", reopen_log=NullAccessLog().reopen
    )
    signals.install(loop)
    try:
        async with contextlib.AsyncExitStack() as stack:
            db = await asyncio.to_thread(Database.open, config.database.url)
            stack.push_async_callback(asyncio.to_thread, db.dispose)
            access_log = _access_log(config.log)
            access_log.start()
            stack.callback(access_log.close)
            signals.reopen_log = access_log.reopen
            listed = ListedFiles(config.repo_path, config.prefix)  # the worker threads' (the IOLoop has its own)
            votes = VoteRecorder(
                db, dedup_window=config.cache.dedup_window, queue_size=config.votes.queue_size, bots=config.votes.bots,
                is_listed=lambda path: listed.lookup_blocking(path) is not None,
            )
            votes.start()
            drain_s = max(config.shutdown_grace.total_seconds(), _MIN_VOTE_DRAIN_S)
            stack.push_async_callback(asyncio.to_thread, votes.close, drain_s)
            hits = HitCounter(is_bot=votes.is_bot)
            flusher = HitFlusher(hits, db, config.node_id, sizes=listed_sizes(listed))
            flusher.start()
            stack.push_async_callback(flusher.close)  # after the last request, before the database closes
            services = Services(
                pages=PageCache(),
                votes=votes,
                access_log=access_log,
                metrics=Metrics(multiprocess_dir=worker.metrics_dir if worker is not None else None),
                status=_status_reader(config, db),
                buffers=BufferBudget(config.serve.buffer_budget // (worker.count if worker is not None else 1)),
                hits=hits,
                advisories=AdvisoryLookup(db),
                advisory_pages=await _advisory_pages(config, db),
                history=HistoryAccess(db.engine, config.cache.tier_roots, config.prefix),
            )
            if services.advisory_pages is not None:
                stack.callback(_start_advisory_refresh(services.advisory_pages).stop)
            server = _make_server(make_app(config, services), config, ssl_context)
            stack.callback(_start_metrics_refresh(services, votes, server).stop)
            server.add_sockets(sockets)
            logger.info("serving %s (pid %d%s)", _index_url(config, sockets, ssl_context), os.getpid(), _describe(worker))
            if with_scheduler:  # jobs are told to stop with the first signal and waited for on the way out
                jobs = SyncJobs(config, db, upstream_client(config, attempts=config.sync.retry))
                await stack.enter_async_context(
                    scheduling(jobs, config.schedule, stop=signals.stop, grace=config.shutdown_grace, forced=signals.forced)
                )
            await signals.stop.wait()
            await _drain(server, services.in_flight, config.shutdown_grace, signals.forced)
    finally:
        signals.uninstall(loop)
    logger.info("stopped")
    return 0


def _describe(worker: _Worker | None) -> str:
    if worker is None:
        return ""
    return f", worker {worker.index} of {worker.count}" + (", primary" if worker.is_primary else "")


def _status_reader(config: Config, db: Database) -> StatusReader:
    return StatusReader(
        db, node_id=config.node_id, tier_limits=config.cache.tier_limits, repo_path=config.repo_path,
        job_titles=JOBS.titles(),
    )


async def _advisory_pages(config: Config, db: Database) -> AdvisoryPages | None:
    """The advisory policy for serving, loaded now; None when it changes nothing (off, or audit)."""
    settings = config.advisories
    if settings.mode == "off" or settings.audit:
        return None
    pages = AdvisoryPages(db, settings)
    try:
        await pages.refresh()
    except DatabaseError as exc:  # serving goes on; the next refresh tries again
        logger.error("advisories: cannot load the policy: %s", exc)
    return pages


def _start_advisory_refresh(pages: AdvisoryPages) -> PeriodicCallback:
    """Reload the advisory policy when a sync stored new records (or a day passed)."""

    async def refresh() -> None:
        try:
            await pages.refresh()
        except DatabaseError as exc:
            logger.warning("advisories: cannot reload the policy, keeping the loaded one: %s", exc)

    callback = PeriodicCallback(refresh, _ADVISORY_REFRESH_MS)
    callback.start()
    return callback


def _start_metrics_refresh(services: Services, votes: VoteRecorder, server: CappedHTTPServer) -> PeriodicCallback:
    """Copy the vote, page-cache, connection, buffer and download counters into the metrics every
    second (and now)."""

    def refresh() -> None:
        services.metrics.refresh(
            votes=votes.stats,
            pages=services.pages.stats,
            connections=server.connection_stats,
            buffers=services.buffers.stats,
            hits=services.hits.totals(),
        )

    refresh()
    callback = PeriodicCallback(refresh, _METRICS_REFRESH_MS)
    callback.start()
    return callback


def _tls_context(tls: TLSConfig) -> ssl.SSLContext | None:
    if tls.cert is None or tls.key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(tls.cert, tls.key)
    except (OSError, ssl.SSLError) as exc:
        raise ServeError(f"cannot load TLS certificate {str(tls.cert)!r} with key {str(tls.key)!r}: {exc}") from exc
    return context


def _bind(
    listen: str, address: tuple[str, int], *, reuse_port: bool = False, listening: bool = True
) -> list[socket.socket]:
    """Listening sockets for ``listen``; host "" means every interface, IPv4 and IPv6.

    With port 0 every family gets the port the first one was given. On failure every socket
    opened so far is closed (Tornado's ``bind_sockets`` would leave them to the garbage collector).
    ``listening=False`` only binds (with ``reuse_port``: it reserves the port for workers).
    """
    host, port = address
    sockets: list[socket.socket] = []
    try:
        infos = socket.getaddrinfo(host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
        for family, kind, proto, _, sockaddr in sorted(set(infos), key=lambda info: info[0]):
            if sockets and port == 0:
                sockaddr = (sockaddr[0], sockets[0].getsockname()[1], *sockaddr[2:])
            sock = _listening_socket(family, kind, proto, sockaddr, reuse_port=reuse_port, listening=listening)
            if sock is not None:
                sockets.append(sock)
    except OSError as exc:
        _close_sockets(sockets)
        raise _listen_error(listen, exc) from exc
    return sockets


def _listen_like(listen: str, reserved: list[socket.socket]) -> list[socket.socket]:
    """A worker's own listening sockets (``SO_REUSEPORT``) on the addresses of ``reserved``."""
    sockets: list[socket.socket] = []
    try:
        for other in reserved:
            sock = _listening_socket(other.family, other.type, other.proto, other.getsockname(), reuse_port=True)
            assert sock is not None, "the family was there when the parent bound it"
            sockets.append(sock)
    except OSError as exc:
        _close_sockets(sockets)
        raise _listen_error(listen, exc) from exc
    return sockets


def _listen_error(listen: str, exc: OSError) -> ServeError:
    reason = exc.strerror or str(exc)
    return ServeError(f"cannot listen on {listen}: {reason[:1].lower()}{reason[1:]}")


def _listening_socket(
    family: socket.AddressFamily,
    kind: socket.SocketKind,
    proto: int,
    sockaddr: tuple[Any, ...],
    *,
    reuse_port: bool = False,
    listening: bool = True,
) -> socket.socket | None:
    """A non-blocking socket bound to (and listening on) ``sockaddr``; None if the kernel lacks the family."""
    try:
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        if exc.errno == errno.EAFNOSUPPORT:
            return None
        raise
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setblocking(False)
        sock.bind(sockaddr)
        if listening:
            sock.listen(_BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def _close_sockets(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


def _access_log(log: LogConfig) -> AccessLog | NullAccessLog:
    return AccessLog(log.path, log.format) if log.path is not None else NullAccessLog()


class _NoDelayHTTPServer(CappedHTTPServer):
    """Tornado's server with ``TCP_NODELAY`` set once per connection, as nginx's ``tcp_nodelay``.

    Tornado turns Nagle's algorithm off at the end of every response and on again after it:
    two ``setsockopt`` calls per request, a few per cent of a 302's cost here
    (``bench/serve.py``). Nagle has nothing to coalesce for us: a page or a redirect goes out
    in one write with its headers, a file in 1 MiB chunks.
    """

    def handle_stream(self, stream: IOStream, address: tuple[Any, ...]) -> None:
        stream.set_nodelay(True)
        stream.set_nodelay = _keep_nodelay  # type: ignore[method-assign]
        super().handle_stream(stream, address)


def _keep_nodelay(value: bool) -> None:
    """What a connection's ``set_nodelay`` does once :class:`_NoDelayHTTPServer` has set it."""


def _make_server(app: Application, config: Config, ssl_context: ssl.SSLContext | None) -> CappedHTTPServer:
    """Tornado's server with our timeouts and connection cap (:mod:`pypimirror.acceptor`).

    ``timeouts.idle`` bounds a connection waiting for its next request; Tornado applies the
    same bound to reading that request's headers. ``timeouts.read`` bounds reading a body.
    ``timeouts.write`` is enforced per chunk by the handlers (a stall, not a whole download).
    """
    return _NoDelayHTTPServer(
        app,
        ssl_options=ssl_context,
        idle_connection_timeout=config.timeouts.idle.total_seconds(),
        body_timeout=config.timeouts.read.total_seconds(),
        max_body_size=_MAX_BODY_BYTES,
        max_connections=resolve_max_connections(config.serve.max_connections),
    )


async def _drain(server: CappedHTTPServer, in_flight: InFlight, grace: timedelta, forced: asyncio.Event) -> None:
    """Stop accepting, let requests in flight finish within ``grace``, then close every connection.

    From here on no connection is kept alive: each request read now is answered with
    ``Connection: close``, so busy keep-alive clients leave by themselves.
    """
    server.conn_params.no_keep_alive = True
    server.stop()
    logger.info("no longer accepting connections; %d requests in flight", in_flight.count)
    if not await in_flight.wait_idle(grace.total_seconds(), forced):
        logger.warning("grace period over with %d requests in flight: closing their connections", in_flight.count)
    try:
        await asyncio.wait_for(server.close_all_connections(), _CLOSE_TIMEOUT_S)
    except TimeoutError:
        logger.warning("some connections did not close within %.0fs", _CLOSE_TIMEOUT_S)
    # Handlers whose connection was just closed still unwind (and log) on the next turns of
    # the loop; the access log and the vote queue must stay open until they have.
    await in_flight.wait_idle(_CLOSE_TIMEOUT_S)


def _index_url(config: Config, sockets: list[socket.socket], ssl_context: ssl.SSLContext | None) -> str:
    """The simple index URL to show an operator; the port is the bound one (``listen: :0`` works)."""
    host = config.listen_address[0] or "0.0.0.0"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if ssl_context is not None else "http"
    return f"{scheme}://{host}:{sockets[0].getsockname()[1]}{config.prefix}/simple/"
