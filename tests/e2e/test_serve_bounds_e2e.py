"""The server against clients that hold on: more connections than it may open, and downloads
nobody reads. A real server process, real sockets, its CPU and memory read from /proc."""

from __future__ import annotations

import hashlib
import http.client
import resource
import selectors
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fakeindex import FakeIndex
from mirrorprocess import (
    PREFIX,
    cpu_seconds,
    request,
    rss_bytes,
    running_server,
    stop_server,
    sync_once,
    wait_for,
    write_config,
)
from prometheus_client.parser import text_string_to_metric_families

from pypimirror.acceptor import default_max_connections
from pypimirror.relay import HIGH_WATER, SMALL_HIGH_WATER, relay_footprint

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
# The server's descriptor limit in the connection tests, and how many idle clients go past it.
DESCRIPTORS = 200
IDLE_CLIENTS = 300
# How long the server's CPU time is watched while it is flooded; it may use a tenth of it.
CPU_WINDOW_S = 3.0


def limit_descriptors() -> None:
    """Run in the server's process before it starts: at most DESCRIPTORS open files."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (DESCRIPTORS, DESCRIPTORS))


@contextmanager
def idle_clients(port: int, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections that send nothing (the kernel completes them whether or not the
    server accepts), closed on the way out."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sockets.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def closed_by_server(sockets: list[socket.socket], expected: int, timeout: float) -> int:
    """How many of ``sockets`` the server closed, waiting up to ``timeout`` s for ``expected`` of them."""
    closed = 0
    with selectors.DefaultSelector() as selector:
        for sock in sockets:
            selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while closed < expected and (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(left):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    assert sock.recv(1) == b"", "the server answered a request never sent"
                except ConnectionResetError:
                    pass
                selector.unregister(sock)
                closed += 1
    return closed


def metric(port: int, name: str) -> float:
    status, _, body = request(port, "/metrics")
    assert status == 200
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} not in /metrics")


def cpu_used_meanwhile(pid: int, seconds: float) -> float:
    """The CPU seconds process ``pid`` uses over the next ``seconds`` (a measurement window)."""
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return cpu_seconds(pid) - before


def answers(port: int, path: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return request(port, path)[0] == 200
        except OSError:
            return False

    return check


# --------------------------------------------------------------------------- connections


def test_past_its_connection_cap_the_server_closes_new_connections_at_once_and_stays_idle(
    fake_index: FakeIndex, tmp_path: Path
) -> None:
    config = write_config(tmp_path, fake_index)  # max_connections derived from the descriptor limit
    stderr_path = tmp_path / "serve.err"
    cap = default_max_connections(DESCRIPTORS)
    with running_server(config, stderr_path, preexec_fn=limit_descriptors) as (process, port):
        with idle_clients(port, IDLE_CLIENTS) as idle:
            # The first `cap` are held (waiting for a request); every later one is closed at once.
            assert closed_by_server(idle, IDLE_CLIENTS - cap, timeout=20) == IDLE_CLIENTS - cap
            assert closed_by_server(idle[:cap], 1, timeout=0.5) == 0
            assert cpu_used_meanwhile(process.pid, CPU_WINDOW_S) < CPU_WINDOW_S / 10
        wait_for(answers(port, "/healthz"), timeout=20)
        wait_for(lambda: metric(port, "pypimirror_connections_refused_total") == IDLE_CLIENTS - cap)
        assert metric(port, "pypimirror_connections_limit") == cap
        log = stop_server(process, stderr_path)
    assert "Too many open files" not in log and "Traceback" not in log
    assert 1 <= log.count("closing new ones at once") <= 2, log


def test_out_of_descriptors_the_server_pauses_accepting_logs_rarely_and_recovers(
    fake_index: FakeIndex, tmp_path: Path
) -> None:
    config = write_config(tmp_path, fake_index, serve={"max_connections": 1000})  # more than the limit allows
    stderr_path = tmp_path / "serve.err"
    with running_server(config, stderr_path, preexec_fn=limit_descriptors) as (process, port):
        assert "serve.max_connections is 1000, but a limit of 200 descriptors" in stderr_path.read_text()
        with idle_clients(port, IDLE_CLIENTS):
            wait_for(lambda: "Too many open files" in stderr_path.read_text(), timeout=20)
            assert cpu_used_meanwhile(process.pid, CPU_WINDOW_S) < CPU_WINDOW_S / 10
            during = stderr_path.read_text()
        wait_for(answers(port, "/healthz"), timeout=20)
        assert metric(port, "pypimirror_accept_errors_total") >= 1
        log = stop_server(process, stderr_path)
    assert during.count("Too many open files") <= 2, during[-4000:]
    assert "Traceback" not in log
    assert len(log) < 20_000


# --------------------------------------------------------------------------- buffer memory

STALLED_CLIENTS = 100
BUDGET = 8 * MIB
SMALL_CHUNK = 64 * 1024


def stalled_download(port: int, path: str) -> socket.socket:
    """A GET of ``path`` whose client takes nothing (a small receive buffer keeps the kernel
    from taking much of the body on its behalf)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(20)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: mirror\r\n\r\n".encode())
    return sock


def has_body_bytes(sock: socket.socket) -> bool:
    """Whether body bytes have arrived after the head (peeked: nothing is taken from the socket)."""
    waiting = sock.recv(4096, socket.MSG_PEEK)
    head_end = waiting.find(b"\r\n\r\n")
    return head_end >= 0 and len(waiting) > head_end + 4


def download(port: int, path: str) -> bytes:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        assert response.status == 200
        return response.read()
    finally:
        connection.close()


def test_downloads_nobody_reads_hold_no_more_memory_than_the_buffer_budget_allows(
    fake_index: FakeIndex, tmp_path: Path
) -> None:
    fake_index.add_project("big", ["1.0"], payload_size=16 * MIB, sdist=False)
    (wheel,) = fake_index.files("big", "1.0")
    config = write_config(tmp_path, fake_index, serve={"buffer_budget": "8m"})
    sync_once(config)
    stored = tmp_path / "repo" / wheel.path.lstrip("/")
    stored.parent.mkdir(parents=True)
    stored.write_bytes(wheel.content)
    path = f"{PREFIX}{wheel.path}"
    expected = hashlib.sha256(wheel.content).hexdigest()
    stderr_path = tmp_path / "serve.err"
    with running_server(config, stderr_path) as (process, port):
        assert hashlib.sha256(download(port, path)).hexdigest() == expected  # warm: buffers, caches
        baseline = rss_bytes(process.pid)
        stalled = [stalled_download(port, path) for _ in range(STALLED_CLIENTS)]
        try:
            # Each holds its chunk buffer once its first body bytes are out.
            wait_for(lambda: all(has_body_bytes(sock) for sock in stalled), timeout=30)
            growth = max(rss_bytes(process.pid) for _ in range(5)) - baseline
            # While the budget is spent, another client still gets the whole file, right.
            assert hashlib.sha256(download(port, path)).hexdigest() == expected
            wait_for(lambda: metric(port, "pypimirror_buffer_budget_squeezed_total") >= STALLED_CLIENTS - 8)
            held = metric(port, "pypimirror_buffer_bytes")
        finally:
            for sock in stalled:
                sock.close()
        stop_server(process, stderr_path)
    # Within the budget, plus a small chunk and the bookkeeping (~100 KiB) of each connection;
    # 1 MiB a connection (what they held before the budget) is far beyond.
    assert growth < BUDGET + STALLED_CLIENTS * (SMALL_CHUNK + 160 * 1024), f"grew by {growth / MIB:.1f} MiB"
    assert held <= BUDGET + STALLED_CLIENTS * SMALL_CHUNK


STALLED_RELAYS = 30


def test_proxied_downloads_nobody_reads_hold_small_relay_queues_once_the_budget_is_spent(
    fake_index: FakeIndex, tmp_path: Path
) -> None:
    fake_index.add_project("big", ["1.0"], payload_size=16 * MIB, sdist=False)
    (wheel,) = fake_index.files("big", "1.0")
    config = write_config(tmp_path, fake_index, serve={"buffer_budget": "8m"}, ip_modes={"default": "proxy"})
    path = f"{PREFIX}{wheel.path}"
    expected = hashlib.sha256(wheel.content).hexdigest()
    stderr_path = tmp_path / "serve.err"
    with running_server(config, stderr_path) as (process, port):
        assert hashlib.sha256(download(port, path)).hexdigest() == expected  # warm: curl, buffers
        baseline = rss_bytes(process.pid)
        stalled = [stalled_download(port, path) for _ in range(STALLED_RELAYS)]
        try:
            wait_for(lambda: all(has_body_bytes(sock) for sock in stalled), timeout=30)
            samples = []
            for _ in range(20):  # a measurement window: the relays fill their queues, then pause
                samples.append(rss_bytes(process.pid) - baseline)
                time.sleep(0.1)
            growth = max(samples)
            squeezed = metric(port, "pypimirror_buffer_budget_squeezed_total")
            held = metric(port, "pypimirror_buffer_bytes")
            assert hashlib.sha256(download(port, path)).hexdigest() == expected
            wait_for(lambda: metric(port, "pypimirror_buffer_budget_squeezed_total") >= STALLED_RELAYS - 1)
        finally:
            for sock in stalled:
                sock.close()
        stop_server(process, stderr_path)
    # Each relay holds its share of the budget: the first the full one, the rest the small one.
    assert squeezed >= STALLED_RELAYS - 1
    full = STALLED_RELAYS - squeezed
    assert held == full * relay_footprint(HIGH_WATER) + squeezed * relay_footprint(SMALL_HIGH_WATER)
    # What they really hold: a relay within the budget ~6 MiB (queue, what arrives after its
    # pause, the batch being written), a squeezed one ~1.3 MiB (1.5 at most), and beside that
    # curl's own receive buffer and the piece it holds back while paused, and the allocator's
    # slack: 1 MiB a relay. Without the budget, 30 relays grow it by ~180 MiB (measured).
    allowance = MIB
    bound = BUDGET + STALLED_RELAYS * (relay_footprint(SMALL_HIGH_WATER) + allowance)
    assert growth < bound, f"grew by {growth / MIB:.1f} MiB"
