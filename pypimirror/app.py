"""The HTTP server's composition root: every route with its dependencies, and the serving process.

:func:`make_app` lists the routes of PRODUCT.md §4 under ``prefix``, each with the ``initialize``
arguments its handler needs; nothing reaches a handler any other way. :func:`serve_forever`
runs the server until SIGINT or SIGTERM and then stops gracefully: no new connection is
accepted and no connection kept alive, requests in flight get ``shutdown_grace`` to finish
(a second signal cuts that short), every queued vote is written to the database and every
access-log line to its file. SIGUSR1 reopens the access log (handled even without one).
"""

from __future__ import annotations

__all__ = ["ServeError", "Services", "make_app", "serve_forever"]

import asyncio
import contextlib
import errno
import logging
import os
import re
import signal
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from tornado.httpserver import HTTPServer
from tornado.web import Application

from pypimirror.accesslog import AccessLog, NullAccessLog
from pypimirror.config import Config, LogConfig, TLSConfig
from pypimirror.db import Database
from pypimirror.errors import PyPIMirrorError
from pypimirror.handlers.base import AccessLogSink, InFlight, NotFoundHandler, RequestContext, make_log_function
from pypimirror.handlers.cached import PageFiles
from pypimirror.handlers.files import PackageFileHandler, VoteSink
from pypimirror.handlers.jsonapi import JsonApiHandler
from pypimirror.handlers.redirects import SlashRedirectHandler, WebRedirectHandler
from pypimirror.handlers.simple import SimpleProjectHandler, SimpleRootHandler
from pypimirror.pagecache import PageCache
from pypimirror.storage import RepoLayout
from pypimirror.votes import VoteRecorder

logger = logging.getLogger(__name__)

# Connections the kernel may queue before we accept them (Linux caps it at net.core.somaxconn).
_BACKLOG = 1024
# The mirror answers GET and HEAD only; a request body is never read for anything.
_MAX_BODY_BYTES = 64 * 1024
# After the grace period, how long closing the remaining connections may take.
_CLOSE_TIMEOUT_S = 5.0
# The least time the final vote drain gets, whatever shutdown_grace says.
_MIN_VOTE_DRAIN_S = 10.0


class ServeError(PyPIMirrorError):
    """The server cannot start: the address is taken, the TLS files do not load, ..."""


@dataclass(frozen=True, slots=True)
class Services:
    """The long-lived objects the handlers share, built once per process."""

    pages: PageCache
    votes: VoteSink
    access_log: AccessLogSink
    in_flight: InFlight = field(default_factory=InFlight)


def make_app(config: Config, services: Services) -> Application:
    """The Tornado application: every route of the mirror with the dependencies of its handler."""
    prefix = config.prefix
    p = re.escape(prefix)
    layout = RepoLayout(config.repo_path)
    base = {"context": RequestContext(config.trusted_proxies, services.in_flight, config.timeouts.write)}
    pages = {**base, "pages": services.pages, "files": PageFiles.of(layout)}
    files = {
        **base,
        "route_base": f"{prefix}/packages/",
        "tiers": tuple(tier.path for tier in config.cache.tiers),
        "redirect_url": config.upstream.redirect_url,
        "votes": services.votes,
    }
    web = {**base, "pypi_url": config.upstream.pypi_url}
    routes = [
        (rf"{p}/simple", SlashRedirectHandler, {**base, "target": f"{prefix}/simple/"}),
        (rf"{p}/simple/", SimpleRootHandler, pages),
        (rf"{p}/simple/([^/]+)(/?)", SimpleProjectHandler, {**pages, "prefix": prefix}),
        (rf"{p}/packages", SlashRedirectHandler, {**base, "target": f"{prefix}/packages/"}),
        (rf"{p}/packages/.*", PackageFileHandler, files),
        (rf"{p}/web", SlashRedirectHandler, {**base, "target": f"{prefix}/web/"}),
        (rf"{p}/web/.*", WebRedirectHandler, {**web, "route_base": f"{prefix}/web/"}),
        (rf"{p}/pypi/([^/]+)/json/?", JsonApiHandler, {**pages, "canonical_url": prefix + "/pypi/{name}/json"}),
        (rf"{p}/([^/]+)/json/?", JsonApiHandler, {**pages, "canonical_url": prefix + "/{name}/json"}),
    ]
    return Application(
        routes,
        default_handler_class=NotFoundHandler,
        default_handler_args=base,
        log_function=make_log_function(services.access_log),
    )


def serve_forever(config: Config) -> int:
    """Serve until SIGINT/SIGTERM, stop gracefully, and return the exit status (0).

    Expected start-up failures (address in use, TLS files, database, access log) raise a
    :class:`~pypimirror.errors.PyPIMirrorError`.
    """
    if config.serve.workers != 1:
        raise ServeError(f"serve.workers: {config.serve.workers} workers are not supported yet; use 1")
    return asyncio.run(_serve(config))


class _Signals:
    """SIGINT/SIGTERM ask for a stop (a second one cuts the grace period short); SIGUSR1 reopens the log."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.forced = asyncio.Event()
        self.reopen_log: Callable[[], None] = NullAccessLog().reopen

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._on_stop, signum)
        loop.add_signal_handler(signal.SIGUSR1, self._on_reopen)

    def uninstall(self, loop: asyncio.AbstractEventLoop) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            loop.remove_signal_handler(signum)

    def _on_stop(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.stop.is_set():
            logger.warning("received %s again: closing the remaining connections now", name)
            self.forced.set()
        else:
            logger.info("received %s: stopping", name)
            self.stop.set()

    def _on_reopen(self) -> None:
        logger.info("received SIGUSR1: reopening the access log")
        self.reopen_log()


async def _serve(config: Config) -> int:
    loop = asyncio.get_running_loop()
    signals = _Signals()
    signals.install(loop)
    try:
        async with contextlib.AsyncExitStack() as stack:
            ssl_context = _tls_context(config.tls)
            sockets = _bind(config.listen, config.listen_address)
            stack.callback(_close_sockets, sockets)
            db = await asyncio.to_thread(Database.open, config.database.url)
            stack.push_async_callback(asyncio.to_thread, db.dispose)
            access_log = _access_log(config.log)
            access_log.start()
            stack.callback(access_log.close)
            signals.reopen_log = access_log.reopen
            votes = VoteRecorder(
                db, dedup_window=config.cache.dedup_window, queue_size=config.votes.queue_size, bots=config.votes.bots
            )
            votes.start()
            drain_s = max(config.shutdown_grace.total_seconds(), _MIN_VOTE_DRAIN_S)
            stack.push_async_callback(asyncio.to_thread, votes.close, drain_s)
            services = Services(pages=PageCache(), votes=votes, access_log=access_log)
            server = _make_server(make_app(config, services), config, ssl_context)
            server.add_sockets(sockets)
            logger.info("serving %s (pid %d)", _index_url(config, sockets, ssl_context), os.getpid())
            await signals.stop.wait()
            await _drain(server, services.in_flight, config.shutdown_grace, signals.forced)
    finally:
        signals.uninstall(loop)
    logger.info("stopped")
    return 0


def _tls_context(tls: TLSConfig) -> ssl.SSLContext | None:
    if tls.cert is None or tls.key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(tls.cert, tls.key)
    except (OSError, ssl.SSLError) as exc:
        raise ServeError(f"cannot load TLS certificate {str(tls.cert)!r} with key {str(tls.key)!r}: {exc}") from exc
    return context


def _bind(listen: str, address: tuple[str, int]) -> list[socket.socket]:
    """Listening sockets for ``listen``; host "" means every interface, IPv4 and IPv6.

    With port 0 every family gets the port the first one was given. On failure every socket
    opened so far is closed (Tornado's ``bind_sockets`` would leave them to the garbage collector).
    """
    host, port = address
    sockets: list[socket.socket] = []
    try:
        infos = socket.getaddrinfo(host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
        for family, kind, proto, _, sockaddr in sorted(set(infos), key=lambda info: info[0]):
            if sockets and port == 0:
                sockaddr = (sockaddr[0], sockets[0].getsockname()[1], *sockaddr[2:])
            sock = _listening_socket(family, kind, proto, sockaddr)
            if sock is not None:
                sockets.append(sock)
    except OSError as exc:
        _close_sockets(sockets)
        reason = exc.strerror or str(exc)
        raise ServeError(f"cannot listen on {listen}: {reason[:1].lower()}{reason[1:]}") from exc
    return sockets


def _listening_socket(
    family: socket.AddressFamily, kind: socket.SocketKind, proto: int, sockaddr: tuple[Any, ...]
) -> socket.socket | None:
    """A non-blocking socket listening on ``sockaddr``; None if the kernel lacks the family."""
    try:
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        if exc.errno == errno.EAFNOSUPPORT:
            return None
        raise
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setblocking(False)
        sock.bind(sockaddr)
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


def _make_server(app: Application, config: Config, ssl_context: ssl.SSLContext | None) -> HTTPServer:
    """Tornado's server with our timeouts.

    ``timeouts.idle`` bounds a connection waiting for its next request; Tornado applies the
    same bound to reading that request's headers. ``timeouts.read`` bounds reading a body.
    ``timeouts.write`` is enforced per chunk by the handlers (a stall, not a whole download).
    """
    return HTTPServer(
        app,
        ssl_options=ssl_context,
        idle_connection_timeout=config.timeouts.idle.total_seconds(),
        body_timeout=config.timeouts.read.total_seconds(),
        max_body_size=_MAX_BODY_BYTES,
    )


async def _drain(server: HTTPServer, in_flight: InFlight, grace: timedelta, forced: asyncio.Event) -> None:
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


def _index_url(config: Config, sockets: list[socket.socket], ssl_context: ssl.SSLContext | None) -> str:
    """The simple index URL to show an operator; the port is the bound one (``listen: :0`` works)."""
    host = config.listen_address[0] or "0.0.0.0"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if ssl_context is not None else "http"
    return f"{scheme}://{host}:{sockets[0].getsockname()[1]}{config.prefix}/simple/"
