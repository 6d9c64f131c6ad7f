"""The connection cap: its default from the descriptor limit, the throttled warnings, and a real
server in the test's loop that refuses past its cap and counts connections back down."""

from __future__ import annotations

import asyncio
import logging
import resource

import pytest
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

from pypimirror.acceptor import (
    MAX_CONNECTIONS,
    CappedHTTPServer,
    ConnectionStats,
    _ThrottledWarning,
    default_max_connections,
    resolve_max_connections,
)


@pytest.mark.parametrize(
    ("soft_limit", "expected"),
    [
        (65536, (65536 - 256) // 2),  # the systemd unit's LimitNOFILE
        (1024, 384),  # a common default
        (200, 50),  # too few for the reserve: a quarter
        (1, 1),
        (resource.RLIM_INFINITY, MAX_CONNECTIONS),
        (2**40, MAX_CONNECTIONS),
    ],
)
def test_the_default_cap_leaves_the_reserve_and_two_descriptors_per_connection(soft_limit, expected):
    assert default_max_connections(soft_limit) == expected


def test_without_a_configured_cap_the_default_applies(caplog):
    assert resolve_max_connections(None, 1024) == 384
    assert caplog.records == []


def test_a_configured_cap_within_the_limit_is_taken_quietly(caplog):
    assert resolve_max_connections(100, 1024) == 100
    assert caplog.records == []


def test_a_configured_cap_beyond_the_limit_is_kept_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="pypimirror.acceptor"):
        assert resolve_max_connections(1000, 200) == 1000
    assert [r.getMessage() for r in caplog.records] == [
        "serve.max_connections is 1000, but a limit of 200 descriptors per process leaves room for about 50 "
        "connections: the limit will be reached first (raise it: ulimit -n, systemd's LimitNOFILE=)"
    ]


def test_a_repeated_warning_is_logged_once_per_interval_with_how_many_were_held_back(caplog):
    now = [100.0]
    warning = _ThrottledWarning(clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="pypimirror.acceptor"):
        for step in range(5):
            warning.warn("cannot accept: %s", "EMFILE")
            now[0] += 3.0  # five warnings in 15 s: at 100 and at 112
    assert [r.getMessage() for r in caplog.records] == [
        "cannot accept: EMFILE",
        "cannot accept: EMFILE (3 more since the last such message)",
    ]


class _Hello(RequestHandler):
    def get(self) -> None:
        self.finish(b"hello")


async def _get(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """A keep-alive connection that has had one answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"hello"), 5)
    return reader, writer, head


async def _wait_for(condition, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@pytest.mark.gen_test(timeout=20)
async def test_past_the_cap_a_connection_is_closed_at_once_and_a_slot_that_frees_is_reused():
    server = CappedHTTPServer(Application([(r"/", _Hello)]), max_connections=2)
    sockets = bind_sockets(0, "127.0.0.1")
    port = sockets[0].getsockname()[1]
    server.add_sockets(sockets)
    writers = []
    try:
        for _ in range(2):
            _, writer, head = await _get(port)
            assert head.startswith(b"HTTP/1.1 200 OK")
            writers.append(writer)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writers.append(writer)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed unanswered, at once
        assert server.connection_stats == ConnectionStats(limit=2, open=2, refused=1, accept_errors=0)
        writers.pop(0).close()
        await _wait_for(lambda: server.connection_stats.open == 1)
        _, writer, head = await _get(port)
        writers.append(writer)
        assert head.startswith(b"HTTP/1.1 200 OK")
    finally:
        for writer in writers:
            writer.close()
        await _wait_for(lambda: server.connection_stats.open == 0)
        server.stop()
        await server.close_all_connections()
