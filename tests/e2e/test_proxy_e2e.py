"""Proxy mode as an operator runs it: a real server process, real pip and uv, a real SOCKS5 proxy,
and a slow client reading a 200 MB file while the server's memory is watched."""

from __future__ import annotations

import functools
import hashlib
import http.client
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakeindex import FakeIndex
from installers import pip_install, uv_pip_install
from mirrorprocess import rss_bytes
from mirrorprocess import sync_once as sync
from socksproxy import SocksProxy

pytestmark = pytest.mark.e2e

PREFIX = "/pypi"
MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(tmp_path: Path, *, pypi_url: str, packages_url: str, **extra: Any) -> Path:
    """A proxy-mode mirror whose ``redirect_url`` is a closed port: only proxying can succeed."""
    config = {
        "listen": "127.0.0.1:0",
        "repo_path": str(tmp_path / "repo"),
        "prefix": PREFIX,
        "upstream": {"pypi_url": pypi_url, "packages_url": packages_url,
                     "redirect_url": f"http://127.0.0.1:{free_port()}/packages", **extra.pop("upstream", {})},
        "ip_modes": {"default": "proxy"},
        "cache": {"size_limit": "1g"},
        "log": {"path": str(tmp_path / "access.log"), "format": "mirror-json"},
        **extra,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextmanager
def running_server(config: Path, stderr_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``pypimirror serve`` in its own process and the port it announced; stopped with SIGTERM."""
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen([sys.executable, "-P", "-m", "pypimirror", "serve", "-c", str(config)], stderr=stderr)
    try:
        deadline = time.monotonic() + 20
        while not (started := re.search(r"serving http://127\.0\.0\.1:(\d+)/", stderr_path.read_text())):
            assert process.poll() is None and time.monotonic() < deadline, stderr_path.read_text()
            time.sleep(0.05)
        yield process, int(started[1])
        process.terminate()
        assert process.wait(timeout=60) == 0, stderr_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def file_log_entries(path: Path) -> list[dict[str, Any]]:
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    return [entry for entry in entries if entry["path"].startswith(f"{PREFIX}/packages/")]


@pytest.fixture
def pair(fake_index: FakeIndex) -> FakeIndex:
    fake_index.add_project("pkg-a", ["1.0"], dependencies=["pkg-b>=1"])
    fake_index.add_project("pkg-b", ["0.9", "1.0"])
    return fake_index


def install_with_pip_and_uv(tmp_path: Path, port: int) -> None:
    index_url = f"http://127.0.0.1:{port}{PREFIX}/simple/"
    for name, install in (("pip", pip_install), ("uv", uv_pip_install)):
        result = install(index_url, tmp_path / f"{name}-target", "pkg-a")
        assert result.returncode == 0, result.stdout + result.stderr
        assert 'VERSION = "1.0"' in (tmp_path / f"{name}-target" / "pkg_b" / "__init__.py").read_text()
        assert (tmp_path / f"{name}-target" / "pkg_a" / "__init__.py").exists()


def assert_files_were_proxied(entries: list[dict[str, Any]], fake: FakeIndex) -> None:
    wheels = [entry for entry in entries if entry["path"].endswith(".whl")]
    assert len(wheels) >= 4  # both wheels, for each installer
    assert all(entry["status"] == 200 and entry["proxied"] == "1" for entry in entries)
    assert fake.count_requests(re.compile(r"\.whl$"), "GET") == len(wheels)


def test_pip_and_uv_install_through_proxy_mode(pair: FakeIndex, tmp_path: Path) -> None:
    config = write_config(tmp_path, pypi_url=pair.pypi_url, packages_url=pair.packages_url)
    sync(config)
    with running_server(config, tmp_path / "serve.err") as (_, port):
        install_with_pip_and_uv(tmp_path, port)
    assert_files_were_proxied(file_log_entries(tmp_path / "access.log"), pair)


def test_pip_and_uv_install_through_proxy_mode_via_a_socks5_proxy(
    pair: FakeIndex, tmp_path: Path, socks_proxy: SocksProxy
) -> None:
    config = write_config(tmp_path, pypi_url=pair.pypi_url, packages_url=pair.packages_url,
                          upstream={"proxy": socks_proxy.url})
    sync(config)
    carried_by_sync = len(socks_proxy.log().splitlines())
    wheel = next(dist for dist in pair.files("pkg-a") if dist.filename.endswith(".whl"))
    with running_server(config, tmp_path / "serve.err") as (_, port):
        install_with_pip_and_uv(tmp_path, port)
        carried_by_serve = socks_proxy.stop().splitlines()[carried_by_sync:]
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", PREFIX + wheel.path)
        assert connection.getresponse().status == 502  # the proxy is gone, and there is no way around it
        connection.close()
    upstream_port = pair.url.rsplit(":", 1)[1]
    assert sum(f"-> 127.0.0.1:{upstream_port}" in line for line in carried_by_serve) >= 1
    *installs, after_stop = file_log_entries(tmp_path / "access.log")
    assert_files_were_proxied(installs, pair)
    assert (after_stop["status"], after_stop["proxied"]) == (502, "1")


# --------------------------------------------------------------------------- memory


@pytest.fixture
def static_upstream(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A plain file server (stdlib) in a thread: ``(packages_url, directory it serves)``."""
    root = tmp_path / "upstream"
    (root / "packages").mkdir(parents=True)
    handler = functools.partial(_QuietFileHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/packages", root / "packages"
    server.shutdown()
    server.server_close()
    thread.join()


class _QuietFileHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def read_slowly(port: int, target: str, *, bytes_per_second: float) -> tuple[int, str]:
    """GET ``target`` through a small receive buffer at about ``bytes_per_second``: (length, sha256)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: mirror\r\nConnection: close\r\n\r\n".encode())
        reader = sock.makefile("rb")
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += reader.readline()
        assert head.startswith(b"HTTP/1.1 200 OK"), head
        digest, received, started = hashlib.sha256(), 0, time.monotonic()
        while chunk := reader.read1(256 * 1024):
            digest.update(chunk)
            received += len(chunk)
            ahead = received / bytes_per_second - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        return received, digest.hexdigest()


def test_a_slow_client_of_a_200mb_proxied_file_costs_the_server_little_memory(
    static_upstream: tuple[str, Path], tmp_path: Path
) -> None:
    packages_url, directory = static_upstream
    relpath = f"ab/cd/{'e' * 60}/huge-1.0-py3-none-any.whl"
    block = os.urandom(MIB)
    (directory / relpath).parent.mkdir(parents=True)
    with open(directory / relpath, "wb") as handle:
        for index in range(200):
            handle.write(index.to_bytes(4, "big") + block[4:])
    expected = hashlib.sha256(b"".join(index.to_bytes(4, "big") + block[4:] for index in range(200))).hexdigest()
    warm_relpath = f"ab/cd/{'f' * 60}/warm-1.0-py3-none-any.whl"
    (directory / warm_relpath).parent.mkdir(parents=True)
    (directory / warm_relpath).write_bytes(b"w" * MIB)
    config = write_config(tmp_path, pypi_url="http://127.0.0.1:9", packages_url=packages_url)
    with running_server(config, tmp_path / "serve.err") as (process, port):
        # curl, its buffers and the first request's allocations are in place before the baseline
        assert read_slowly(port, f"{PREFIX}/packages/{warm_relpath}", bytes_per_second=1e9)[0] == MIB
        baseline = rss_bytes(process.pid)
        peak, done = baseline, threading.Event()

        def watch() -> None:
            nonlocal peak
            while not done.wait(0.05):
                peak = max(peak, rss_bytes(process.pid))

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            received, digest = read_slowly(port, f"{PREFIX}/packages/{relpath}", bytes_per_second=30 * MIB)
        finally:
            done.set()
            watcher.join()
    assert (received, digest) == (200 * MIB, expected)
    assert peak - baseline < 50 * MIB, f"RSS grew by {(peak - baseline) / MIB:.1f} MiB"
