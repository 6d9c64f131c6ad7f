"""Run pypimirror as operators do: ``sync --once`` and ``serve`` as real processes on a temp repo."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from fakeindex import FakeIndex

__all__ = [
    "PREFIX", "cpu_seconds", "free_port", "request", "rss_bytes", "run_cli", "running_server", "serve_command",
    "stop_server", "sync_once", "wait_for", "write_config",
]

PREFIX = "/pypi"


def write_config(tmp_path: Path, fake: FakeIndex, **overrides: Any) -> Path:
    """A config for a mirror of ``fake`` in ``tmp_path/repo``, listening on a free port."""
    config: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "repo_path": str(tmp_path / "repo"),
        "prefix": PREFIX,
        "shutdown_grace": "20s",
        "upstream": {"pypi_url": fake.pypi_url, "packages_url": fake.packages_url},
        "cache": {"size_limit": "1g"},
        "log": {"path": str(tmp_path / "access.log"), "format": "mirror-json"},
    }
    for key, value in overrides.items():
        config[key] = {**config[key], **value} if isinstance(config.get(key), dict) else value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def free_port() -> int:
    """A port that was free a moment ago (for tests that need to know it before the server starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_command(config: Path) -> list[str]:
    return [sys.executable, "-P", "-m", "pypimirror", "serve", "-c", str(config)]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-P", "-m", "pypimirror", *args], capture_output=True, text=True,
                          timeout=timeout)


def sync_once(config: Path) -> None:
    """``pypimirror sync --once``, which must succeed."""
    result = run_cli("sync", "--once", "-c", str(config))
    assert result.returncode == 0, result.stderr


@contextmanager
def running_server(
    config: Path, stderr_path: Path, preexec_fn: Callable[[], None] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """The server in its own process and the port it serves on, once it answers; killed if the
    test left it running. The port comes from the start-up line, so ``listen: 127.0.0.1:0`` works.
    ``preexec_fn`` runs in the child before the server starts (e.g. to lower a resource limit)."""
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(serve_command(config), stderr=stderr, preexec_fn=preexec_fn)
    try:
        yield process, _wait_serving(process, stderr_path)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _wait_serving(process: subprocess.Popen[bytes], stderr_path: Path) -> int:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, stderr_path.read_text()
        started = re.search(r"serving https?://127\.0\.0\.1:(\d+)/", stderr_path.read_text())
        if started:
            return int(started[1])
        time.sleep(0.05)
    raise AssertionError(f"server did not start: {stderr_path.read_text()}")


def stop_server(process: subprocess.Popen[bytes], stderr_path: Path) -> str:
    """SIGTERM, a clean exit within the grace period, and the server's log."""
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0, stderr_path.read_text()
    return stderr_path.read_text()


def wait_for(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    """Poll ``predicate`` until it is true; fail the test if it is not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def rss_bytes(pid: int) -> int:
    """The resident memory of process ``pid``."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB$", status, re.MULTILINE)
    assert match is not None, status
    return int(match[1]) * 1024


def cpu_seconds(pid: int) -> float:
    """The CPU time process ``pid`` has used so far, user and system (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def request(port: int, path: str, headers: dict[str, str] | None = None,
            method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()
