"""The server as an operator runs it: a real process, a synced mirror, real pip and uv, signals."""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fakeindex import FakeIndex
from installers import pip_install, uv_pip_install
from mirrorprocess import free_port, running_server, serve_command, wait_for, write_config
from mirrorprocess import sync_once as sync
from mirrorprocess import stop_server as stop
from sqlalchemy import select

from pypimirror.app import ServeError, serve_forever
from pypimirror.configreader import load_config
from pypimirror.db import Database
from pypimirror.schema import votes

pytestmark = pytest.mark.e2e

PREFIX = "/pypi"
LOG_FIELDS = ["time", "method", "path", "status", "bytes", "duration_ms",
              "client_ip", "user_agent", "referer", "proxied"]
BIG_RELPATH = "ab/cd/" + "ef" * 30 + "/big-1.0-py3-none-any.whl"


def voted_files(repo: Path) -> dict[str, set[str]]:
    db = Database.open(f"sqlite:///{repo / 'pypi-mirror.db'}")
    try:
        with db.connect() as conn:
            rows = conn.execute(select(votes.c.file_path, votes.c.ip_prefix)).all()
    finally:
        db.dispose()
    found: dict[str, set[str]] = {}
    for file_path, prefix in rows:
        found.setdefault(file_path, set()).add(prefix)
    return found


def log_lines(path: Path) -> list[dict[str, Any]]:
    """Every line as a JSON object whose keys are exactly the seed's, in its order."""
    entries = []
    for line in path.read_text().splitlines():
        pairs = json.loads(line, object_pairs_hook=list)
        assert [key for key, _ in pairs] == LOG_FIELDS, line
        entries.append(dict(pairs))
    return entries


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wheel_of(fake: FakeIndex, name: str) -> Any:
    return next(dist for dist in fake.files(name, "1.0") if dist.filename.endswith(".whl"))


@pytest.fixture
def pair(fake_index: FakeIndex) -> FakeIndex:
    fake_index.add_project("pkg-a", ["1.0"], dependencies=["pkg-b>=1"])
    fake_index.add_project("pkg-b", ["0.9", "1.0"])
    return fake_index


# --------------------------------------------------------------------------- installers


def test_pip_and_uv_install_through_the_mirror_and_votes_and_log_are_kept(pair: FakeIndex, tmp_path: Path):
    port = free_port()
    config = write_config(tmp_path, pair, listen=f"127.0.0.1:{port}")
    sync(config)
    index_url = f"http://127.0.0.1:{port}{PREFIX}/simple/"
    stderr_path = tmp_path / "serve.err"
    with running_server(config, stderr_path) as (process, _):
        pip_result = pip_install(index_url, tmp_path / "pip-target", "pkg-a")
        assert pip_result.returncode == 0, pip_result.stdout + pip_result.stderr
        uv_result = uv_pip_install(index_url, tmp_path / "uv-target", "pkg-a")
        assert uv_result.returncode == 0, uv_result.stdout + uv_result.stderr
        stderr = stop(process, stderr_path)
    assert f"serving {index_url}" in stderr
    for target in ("pip-target", "uv-target"):
        assert 'VERSION = "1.0"' in (tmp_path / target / "pkg_b" / "__init__.py").read_text()
        assert (tmp_path / target / "pkg_a" / "__init__.py").exists()
    wheels = {dist.path.removeprefix("/packages/") for name in ("pkg-a", "pkg-b") for dist in pair.files(name, "1.0")
              if dist.filename.endswith(".whl")}
    assert pair.count_requests(re.compile(r"\.whl$")) >= 4  # each installer got both wheels via 302
    assert voted_files(tmp_path / "repo") == {path: {"127.0.0.0"} for path in wheels}
    entries = log_lines(tmp_path / "access.log")
    page_requests = [e for e in entries if e["path"].startswith(f"{PREFIX}/simple/pkg-")]
    file_requests = [e for e in entries if e["path"].startswith(f"{PREFIX}/packages/")]
    assert page_requests and all(e["status"] == 200 and e["bytes"] > 0 for e in page_requests)
    assert file_requests and all(e["status"] == 302 and e["bytes"] == 0 for e in file_requests)
    assert {e["client_ip"] for e in entries} == {"127.0.0.1"} and {e["proxied"] for e in entries} == {"0"}


# --------------------------------------------------------------------------- graceful stop


@dataclass
class Burst:
    """A keep-alive client asking for pages and a listed file we do not hold until told to close;
    each file request comes from another network (``X-Forwarded-For``), so each is a new vote."""

    port: int
    file_path: str
    index: int
    responses: int = 0
    file_hits: int = 0
    saw_close: bool = False
    errors: list[str] = field(default_factory=list)

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            while not self.saw_close:
                is_file = self.responses % 2 == 1
                path = self.file_path if is_file else f"{PREFIX}/simple/pkg-a/"
                n = self.responses
                network = f"{10 + self.index}.{n // 256 % 256}.{n % 256}.1"
                connection.request("GET", path, headers={"User-Agent": "burst", "X-Forwarded-For": network})
                response = connection.getresponse()
                response.read()
                assert response.status == (302 if is_file else 200)
                self.responses += 1
                self.file_hits += is_file
                self.saw_close = response.will_close
        except Exception as exc:  # every failure is the finding
            self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            connection.close()


def slow_download(port: int, relpath: str, received: bytearray, errors: list[str]) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", f"{PREFIX}/packages/{relpath}", headers={"User-Agent": "slow"})
        response = connection.getresponse()
        while chunk := response.read(256 * 1024):
            received += chunk
            time.sleep(0.03)  # about 8 MB/s: 20 MB take some 2.5 s
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        connection.close()


def test_sigterm_lets_requests_in_flight_finish_and_keeps_every_vote_and_line(pair: FakeIndex, tmp_path: Path):
    (big_dist,) = pair.add_project("big", ["1.0"], sdist=False, payload_size=20 << 20).releases["1.0"].files
    config = write_config(tmp_path, pair, trusted_proxies=["127.0.0.1/32"])
    sync(config)  # votes count only for files a stored page lists: every file asked for here is listed
    big_relpath = big_dist.path.removeprefix("/packages/")
    big = tmp_path / "repo" / "packages" / big_relpath
    big.parent.mkdir(parents=True)
    content = big_dist.content
    big.write_bytes(content)
    wanted = f"{PREFIX}{wheel_of(pair, 'pkg-b').path}"
    stderr_path = tmp_path / "serve.err"
    with running_server(config, stderr_path) as (process, port):
        received, download_errors = bytearray(), []
        downloader = threading.Thread(target=slow_download, args=(port, big_relpath, received, download_errors))
        bursts = [Burst(port, wanted, i) for i in range(4)]
        threads = [downloader, *(threading.Thread(target=b.run) for b in bursts)]
        for thread in threads:
            thread.start()
        wait_for(lambda: len(received) > 2 << 20 and all(b.responses >= 10 for b in bursts))
        process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(timeout=60)
        assert process.wait(timeout=60) == 0, stderr_path.read_text()
    assert download_errors == [] and hashlib.sha256(received).digest() == hashlib.sha256(content).digest()
    assert [b.errors for b in bursts] == [[]] * 4
    assert all(b.saw_close for b in bursts)  # told to leave, never cut off
    voted = voted_files(tmp_path / "repo")
    assert set(voted) == {big_relpath, wanted.removeprefix(f"{PREFIX}/packages/")}
    assert sum(len(networks) for networks in voted.values()) == sum(b.file_hits for b in bursts) + 1
    entries = log_lines(tmp_path / "access.log")
    assert len(entries) == sum(b.responses for b in bursts) + 1
    (download,) = [e for e in entries if e["user_agent"] == "slow"]
    assert (download["status"], download["bytes"]) == (200, len(content))
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_requests_still_running_after_the_grace_period_are_cut_off(fake_index: FakeIndex, tmp_path: Path):
    config = write_config(tmp_path, fake_index, shutdown_grace="1s")
    big = tmp_path / "repo" / "packages" / BIG_RELPATH
    big.parent.mkdir(parents=True)
    big.write_bytes(b"\0" * (64 << 20))
    stderr_path = tmp_path / "serve.err"
    with running_server(config, stderr_path) as (process, port):
        stalled = socket.create_connection(("127.0.0.1", port))
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.sendall(f"GET {PREFIX}/packages/{BIG_RELPATH} HTTP/1.1\r\nHost: m\r\n\r\n".encode())
        assert stalled.recv(1024).startswith(b"HTTP/1.1 200 OK")  # then it reads no more
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, stderr_path.read_text()
        assert 1 <= time.monotonic() - started < 10
        stalled.close()
    assert "grace period over with 1 requests in flight: closing their connections" in stderr_path.read_text()
    (entry,) = log_lines(tmp_path / "access.log")
    assert entry["status"] == 200 and entry["bytes"] < 64 << 20


def test_sigusr1_reopens_the_access_log(pair: FakeIndex, tmp_path: Path):
    config = write_config(tmp_path, pair)
    sync(config)
    log = tmp_path / "access.log"
    stderr_path = tmp_path / "serve.err"
    with running_server(config, stderr_path) as (process, port):
        assert get(port, f"{PREFIX}/simple/pkg-a/")[0] == 200
        wait_for(lambda: log.exists() and len(log.read_text().splitlines()) == 1)
        log.rename(tmp_path / "access.log.1")
        process.send_signal(signal.SIGUSR1)
        wait_for(log.exists)  # reopened under the old name
        assert get(port, f"{PREFIX}/simple/pkg-b/")[0] == 200
        stderr = stop(process, stderr_path)
    assert "reopening the access log" in stderr
    assert [e["path"] for e in log_lines(tmp_path / "access.log.1")] == [f"{PREFIX}/simple/pkg-a/"]
    assert [e["path"] for e in log_lines(log)] == [f"{PREFIX}/simple/pkg-b/"]


# --------------------------------------------------------------------------- start-up failures


def test_port_in_use_is_a_one_line_error(fake_index: FakeIndex, tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config_path = write_config(tmp_path, fake_index, listen=f"127.0.0.1:{port}")
        with pytest.raises(ServeError, match=rf"^cannot listen on 127\.0\.0\.1:{port}: address already in use$"):
            serve_forever(load_config(config_path))
        result = subprocess.run(serve_command(config_path), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    expected = f"pypimirror: error: cannot listen on 127.0.0.1:{port}: address already in use"
    assert result.stderr.splitlines()[-1] == expected
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "repo" / "pypi-mirror.db").exists()  # nothing was started

