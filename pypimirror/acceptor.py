"""A cap on open connections, and an accept loop that backs off when descriptors run out.

Tornado's accept loop (``tornado.netutil.add_accept_handler``) accepts whatever waits and lets
every error but "nothing left to accept" escape to the IOLoop. Out of descriptors (EMFILE,
ENFILE), the listening socket stays readable, so the loop wakes, fails, logs a traceback and
wakes again: a core spinning and megabytes of log a second, while the backlog fills with
clients no one will serve. :class:`CappedHTTPServer` accepts differently:

* At most ``max_connections`` connections are open at once. One more is accepted and closed
  at once (as nginx does when its ``worker_connections`` are used up): the client learns it at
  once instead of waiting in the backlog, and the backlog does not fill with dead clients.
* An accept that fails for any other reason than "none left" (EMFILE, ENFILE, ENOBUFS, ...)
  stops accepting for a moment: 50 ms, doubling while it keeps failing, up to 1 s. Such
  failures, and refusals, are logged at most once per ten seconds, with how many there were.
* What was refused and what failed is counted (:class:`ConnectionStats`, shown in /metrics).

The default cap (:func:`default_max_connections`) leaves the descriptors that everything
but client connections needs, and counts two per connection: its socket and the file it is
sent (or its transfer from the upstream).
"""

from __future__ import annotations

__all__ = [
    "MAX_CONNECTIONS",
    "RESERVED_DESCRIPTORS",
    "CappedHTTPServer",
    "ConnectionStats",
    "default_max_connections",
    "resolve_max_connections",
]

import errno
import logging
import resource
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream

logger = logging.getLogger(__name__)

#: Descriptors kept for what is not a client connection, per process: its own (standard
#: streams, epoll, the loop's wake-up pipe, listening sockets, access log, metrics files:
#: ~20), the database (a SQLAlchemy pool of up to 15 connections, each up to three files with
#: SQLite's WAL: ~45), the upstream (100 transfers at most, each a socket, plus curl's idle
#: connections kept for reuse: ~150), and the embedded scheduler's downloads and page writes.
#: An estimate: if the process still runs out, the accept loop backs off (see above).
RESERVED_DESCRIPTORS = 256
#: What a configured ``serve.max_connections`` may be at most (and the default with no limit).
MAX_CONNECTIONS = 1_000_000

# Connections taken per wake-up at most, as tornado does: the others wait their turn on the loop.
_ACCEPT_BATCH = 128
_FIRST_PAUSE_S = 0.05
_MAX_PAUSE_S = 1.0
_LOG_INTERVAL_S = 10.0
# What accept() reports for one connection (it died while queued, or Linux passes on a network
# error pending on it; accept(2) says to retry) or for a signal: go on with the next.
_SKIP_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("ECONNABORTED", "EINTR", "EPROTO", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN", "ENONET",
                 "EHOSTUNREACH", "EOPNOTSUPP", "ENETUNREACH")
    if hasattr(errno, name)
)


def default_max_connections(soft_limit: int | None = None) -> int:
    """The connection cap for a process allowed ``soft_limit`` descriptors (default: this one's).

    Two descriptors per connection after :data:`RESERVED_DESCRIPTORS`; with a limit so low
    that this leaves little, a quarter of it.
    """
    if soft_limit is None:
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft_limit == resource.RLIM_INFINITY or soft_limit > 2 * MAX_CONNECTIONS + RESERVED_DESCRIPTORS:
        return MAX_CONNECTIONS
    return max((soft_limit - RESERVED_DESCRIPTORS) // 2, soft_limit // 4, 1)


def resolve_max_connections(configured: int | None, soft_limit: int | None = None) -> int:
    """``serve.max_connections`` if set, else :func:`default_max_connections`; a configured cap
    that the descriptor limit cannot hold is kept, with a warning that the limit will bind first."""
    if soft_limit is None:
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    fitting = default_max_connections(soft_limit)
    if configured is None:
        return fitting
    if configured > fitting:
        logger.warning(
            "serve.max_connections is %d, but a limit of %d descriptors per process leaves room for about %d "
            "connections: the limit will be reached first (raise it: ulimit -n, systemd's LimitNOFILE=)",
            configured, soft_limit, fitting,
        )
    return configured


@dataclass(frozen=True, slots=True)
class ConnectionStats:
    """A snapshot of one server's connection counts (``refused`` and ``accept_errors`` only grow)."""

    limit: int
    open: int
    refused: int
    accept_errors: int


class _ThrottledWarning:
    """One warning logged at most once per :data:`_LOG_INTERVAL_S`, saying how many were held back."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._next_at = 0.0
        self._held = 0

    def warn(self, message: str, *args: object) -> None:
        now = self._clock()
        if now < self._next_at:
            self._held += 1
            return
        held, self._held = self._held, 0
        self._next_at = now + _LOG_INTERVAL_S
        if held:
            logger.warning("%s (%d more since the last such message)", message % args, held)
        else:
            logger.warning(message, *args)


class CappedHTTPServer(HTTPServer):
    """Tornado's HTTP server with at most ``max_connections`` open connections and a robust
    accept loop (see the module docstring); ``max_connections`` is given as a keyword."""

    def initialize(self, *args: Any, max_connections: int = MAX_CONNECTIONS, **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        self.max_connections = max_connections
        self._open = 0
        self._refused = 0
        self._accept_errors = 0
        self._acceptors: list[_AcceptLoop] = []
        self._refusals = _ThrottledWarning()
        self._failures = _ThrottledWarning()

    @property
    def connection_stats(self) -> ConnectionStats:
        return ConnectionStats(self.max_connections, self._open, self._refused, self._accept_errors)

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        for sock in sockets:
            self._acceptors.append(_AcceptLoop(sock, self))

    def stop(self) -> None:
        """Stop accepting and close the listening sockets, as tornado's ``stop`` does."""
        for acceptor in self._acceptors:
            acceptor.close()
        self._acceptors.clear()
        super().stop()

    def handle_stream(self, stream: IOStream, address: tuple[Any, ...]) -> None:
        super().handle_stream(stream, address)
        self._open += 1  # until on_close, which tornado calls once for each connection it serves, later

    def on_close(self, server_conn: object) -> None:
        self._open -= 1
        super().on_close(server_conn)

    def _accept(self, connection: socket.socket, address: Any) -> None:
        if self._open >= self.max_connections:
            connection.close()
            self._refused += 1
            self._refusals.warn(
                "%d connections open, the most serve.max_connections allows: closing new ones at once",
                self._open,
            )
            return
        self._handle_connection(connection, address)  # tornado's: TLS wrapping, then handle_stream

    def _accept_failed(self, exc: OSError) -> None:
        self._accept_errors += 1
        self._failures.warn(
            "cannot accept connections: %s (%d open); pausing accepts", exc.strerror or exc, self._open
        )


class _AcceptLoop:
    """Accepts the connections of one listening socket and hands each to ``server``."""

    def __init__(self, sock: socket.socket, server: CappedHTTPServer) -> None:
        self._sock = sock
        self._server = server
        self._io_loop = IOLoop.current()
        self._pause_s = _FIRST_PAUSE_S
        self._resume_handle: object | None = None
        self._io_loop.add_handler(sock, self._on_readable, IOLoop.READ)
        self._watching = True

    def close(self) -> None:
        """Stop accepting and close the socket: connecting clients are refused, not queued."""
        if self._watching:
            self._io_loop.remove_handler(self._sock)
            self._watching = False
        if self._resume_handle is not None:
            self._io_loop.remove_timeout(self._resume_handle)
            self._resume_handle = None
        self._sock.close()

    def _on_readable(self, _sock: socket.socket, _events: int) -> None:
        for _ in range(_ACCEPT_BATCH):
            if not self._watching:  # closed by what the last connection set off
                return
            try:
                connection, address = self._sock.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in _SKIP_ERRNOS:
                    continue
                self._server._accept_failed(exc)
                self._pause()
                return
            self._pause_s = _FIRST_PAUSE_S
            self._server._accept(connection, address)

    def _pause(self) -> None:
        """Stop watching the socket for a while; each pause in a row is twice as long, up to 1 s."""
        self._io_loop.remove_handler(self._sock)
        self._watching = False
        self._resume_handle = self._io_loop.call_later(self._pause_s, self._resume)
        self._pause_s = min(self._pause_s * 2, _MAX_PAUSE_S)

    def _resume(self) -> None:
        self._resume_handle = None
        self._io_loop.add_handler(self._sock, self._on_readable, IOLoop.READ)
        self._watching = True
