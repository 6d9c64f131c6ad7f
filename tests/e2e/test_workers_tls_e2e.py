"""Several workers on one port, over TLS: each answers and votes, /metrics sums them, signals reach all.

Which worker takes a connection is the kernel's choice (each listens on its own SO_REUSEPORT
socket). The test keeps its connections open and asks ``/proc`` which worker holds the other
end of each: no header or log line has to say who answered.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fakeindex import FakeIndex
import mirrorprocess
from installers import installer_env
from mirrorprocess import sync_once as sync
from mirrorprocess import wait_for
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from pypimirror.db import Database
from pypimirror.schema import votes

pytestmark = pytest.mark.e2e

PREFIX = "/pypi"
CONNECTIONS = 24  # all on one of two workers: a chance of 2 in 2**24


def missing_file(fake: FakeIndex, n: int) -> str:
    """The n-th wheel of ``many``: on a stored page (votes count only then), held by no tier."""
    return PREFIX + fake.files("many", f"1.{n}")[0].path


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA, so ``--cert`` accepts it)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed: cannot make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


@pytest.fixture
def mirror(fake_index: FakeIndex) -> FakeIndex:
    fake_index.add_project("pkg-a", ["1.0"], dependencies=["pkg-b>=1"])
    fake_index.add_project("pkg-b", ["1.0"])
    fake_index.add_project("many", [f"1.{n}" for n in range(CONNECTIONS)], sdist=False)
    return fake_index


def write_config(tmp_path: Path, fake: FakeIndex, certificate: tuple[Path, Path], **extra: Any) -> Path:
    """Two TLS workers over :func:`mirrorprocess.write_config`'s mirror."""
    tls = {"cert": str(certificate[0]), "key": str(certificate[1])}
    return mirrorprocess.write_config(tmp_path, fake, shutdown_grace="10s", tls=tls, serve={"workers": 2}, **extra)


@contextmanager
def running_server(config: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """The server (TMPDIR inside tmp_path, to see its metrics directory go) and its port once
    both workers serve; killed with its workers if the test left it running."""
    stderr_path, scratch = tmp_path / "serve.err", tmp_path / "scratch"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen([sys.executable, "-P", "-m", "pypimirror", "serve", "-c", str(config)],
                                   stderr=stderr, env=env, start_new_session=True)
    try:
        yield process, wait_serving(process, stderr_path, workers=2), stderr_path
    finally:
        if process.poll() is None:
            for pid in children_of(process.pid):
                os.kill(pid, signal.SIGKILL)
            process.kill()
            process.wait()


def wait_serving(process: subprocess.Popen[bytes], stderr_path: Path, workers: int) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, stderr_path.read_text()
        ports = re.findall(r"serving https://127\.0\.0\.1:(\d+)/", stderr_path.read_text())
        if len(ports) >= workers:
            assert len(set(ports)) == 1, ports
            return int(ports[0])
        time.sleep(0.05)
    raise AssertionError(f"workers did not start: {stderr_path.read_text()}")


def children_of(parent: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``parent``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        if int(ppid) == parent and state != "Z":
            found.append(int(entry.name))
    return sorted(found)


def connect(port: int, cert: Path) -> http.client.HTTPSConnection:
    context = ssl.create_default_context(cafile=str(cert))
    connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    connection.connect()
    return connection


def request(connection: http.client.HTTPSConnection, path: str) -> tuple[int, bytes]:
    """One GET on a kept-alive connection."""
    connection.request("GET", path)
    response = connection.getresponse()
    return response.status, response.read()


def get(port: int, path: str, cert: Path) -> tuple[int, bytes]:
    connection = connect(port, cert)
    try:
        return request(connection, path)
    finally:
        connection.close()


def owner_of(connection: http.client.HTTPSConnection, workers: list[int]) -> int:
    """The worker holding the server end of ``connection`` (from /proc/net/tcp and the workers' fds)."""
    assert connection.sock is not None
    client_port = connection.sock.getsockname()[1]
    server_port = connection.sock.getpeername()[1]
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port, remote_port = (int(address.rsplit(":", 1)[1], 16) for address in fields[1:3])
        if (local_port, remote_port) == (server_port, client_port):
            inode = fields[9]
    assert inode is not None, "the server end of the connection is not in /proc/net/tcp"
    for pid in workers:
        fds = Path(f"/proc/{pid}/fd")
        if any(os.readlink(fd) == f"socket:[{inode}]" for fd in fds.iterdir() if fd.is_symlink()):
            return pid
    raise AssertionError(f"no worker holds socket {inode}")


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def voted_paths(repo: Path) -> set[str]:
    db = Database.open(f"sqlite:///{repo / 'pypi-mirror.db'}")
    try:
        with db.connect() as conn:
            return {path for (path,) in conn.execute(select(votes.c.file_path))}
    finally:
        db.dispose()


def stop(process: subprocess.Popen[bytes], stderr_path: Path) -> str:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0, stderr_path.read_text()
    return stderr_path.read_text()


def test_each_tls_worker_answers_and_votes_metrics_sum_them_and_sigterm_stops_all(
    mirror: FakeIndex, certificate: tuple[Path, Path], tmp_path: Path
):
    cert = certificate[0]
    config = write_config(tmp_path, mirror, certificate)
    sync(config)
    with running_server(config, tmp_path) as (process, port, stderr_path):
        workers = children_of(process.pid)
        assert len(workers) == 2
        assert len(list((tmp_path / "scratch").iterdir())) == 1  # the metrics directory
        connections = [connect(port, cert) for _ in range(CONNECTIONS)]
        answers = [(request(c, f"{PREFIX}/simple/pkg-a/")[0], request(c, missing_file(mirror, n))[0])
                   for n, c in enumerate(connections)]
        owners = [owner_of(c, workers) for c in connections]
        # Each worker adds its request counts to the shared files once a second.
        pages_served = ("pypimirror_http_requests_total", (("route", "simple_project"), ("status", "200")))
        redirected = ("pypimirror_package_responses_total", (("kind", "redirected"),))
        deadline = time.monotonic() + 5
        while True:
            status, body = request(connections[0], "/metrics")
            found = metric_values(body.decode())
            if found.get(pages_served) == CONNECTIONS or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for connection in connections:
            connection.close()
        stderr = stop(process, stderr_path)
    assert answers == [(200, 302)] * CONNECTIONS
    assert set(owners) == set(workers)  # both workers answered
    assert status == 200
    assert found[pages_served] == CONNECTIONS
    assert found[redirected] == CONNECTIONS
    assert "worker 0 of 2, primary" in stderr and "worker 1 of 2)" in stderr
    assert "all 2 workers stopped" in stderr
    assert all(not Path(f"/proc/{pid}").exists() for pid in workers)  # no orphan left behind
    assert list((tmp_path / "scratch").iterdir()) == []
    wanted = {missing_file(mirror, n).removeprefix(f"{PREFIX}/packages/") for n in range(CONNECTIONS)}
    assert voted_paths(tmp_path / "repo") == wanted  # each worker stored the votes it took
    entries = [json.loads(line) for line in (tmp_path / "access.log").read_text().splitlines()]
    assert all(entry["client_ip"] == "127.0.0.1" for entry in entries)
    assert len([entry for entry in entries if entry["path"] != "/metrics"]) == 2 * CONNECTIONS


def pip_env() -> dict[str, str]:
    """installer_env() without the CA bundles this machine exports: requests lets
    REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE override pip's ``--cert``."""
    return {k: v for k, v in installer_env().items() if k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")}


def test_pip_installs_through_tls_workers_with_the_certificate(
    mirror: FakeIndex, certificate: tuple[Path, Path], tmp_path: Path
):
    config = write_config(tmp_path, mirror, certificate)
    sync(config)
    with running_server(config, tmp_path) as (process, port, stderr_path):
        index_url = f"https://127.0.0.1:{port}{PREFIX}/simple/"
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--no-cache-dir", "--index-url", index_url,
             "--cert", str(certificate[0]), "--target", str(tmp_path / "target"), "pkg-a"],
            env=pip_env(), capture_output=True, text=True, timeout=180,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        stop(process, stderr_path)
    assert (tmp_path / "target" / "pkg_a" / "__init__.py").exists()
    assert (tmp_path / "target" / "pkg_b" / "__init__.py").exists()


def test_a_worker_that_dies_is_replaced_and_the_port_keeps_answering(
    mirror: FakeIndex, certificate: tuple[Path, Path], tmp_path: Path
):
    config = write_config(tmp_path, mirror, certificate)
    (tmp_path / "repo").mkdir()
    with running_server(config, tmp_path) as (process, port, stderr_path):
        first, second = children_of(process.pid)
        os.kill(first, signal.SIGKILL)
        # One snapshot per check: two could see the killed worker alive, then gone before its
        # replacement exists.
        wait_for(lambda: len(set(children_of(process.pid)) - {first, second}) == 1)
        (replacement,) = set(children_of(process.pid)) - {first, second}
        wait_for(lambda: f"(pid {replacement}, worker 0 of 2, primary)" in stderr_path.read_text())
        answered_by = set()
        for _ in range(CONNECTIONS):
            connection = connect(port, certificate[0])
            assert request(connection, "/healthz") == (200, b"ok\n")
            answered_by.add(owner_of(connection, [replacement, second]))
            connection.close()
        stderr = stop(process, stderr_path)
    assert answered_by == {replacement, second}
    assert f"worker 0 (pid {first}) was killed by SIGKILL unexpectedly; restarting it in 1 s" in stderr


def slow_download(connection: http.client.HTTPSConnection, path: str, received: bytearray) -> None:
    """About 8 MB/s: a download that is still running when the stop comes."""
    connection.request("GET", path)
    response = connection.getresponse()
    assert response.status == 200
    while chunk := response.read(256 * 1024):
        received += chunk
        time.sleep(0.03)


def test_sigterm_to_the_whole_group_stops_gracefully_like_one_signal(
    mirror: FakeIndex, certificate: tuple[Path, Path], tmp_path: Path
):
    """systemd signals every process of the service: each worker then gets SIGTERM twice (directly
    and from its supervisor) and must still let a download in flight finish."""
    config = write_config(tmp_path, mirror, certificate)
    relpath = f"ab/cd/{'ef' * 30}/big-1.0-py3-none-any.whl"
    big = tmp_path / "repo" / "packages" / relpath
    big.parent.mkdir(parents=True)
    content = os.urandom(1 << 20) * 16
    big.write_bytes(content)
    received = bytearray()
    with running_server(config, tmp_path) as (process, port, stderr_path):
        workers = children_of(process.pid)
        connection = connect(port, certificate[0])
        downloader = threading.Thread(target=slow_download,
                                      args=(connection, f"{PREFIX}/packages/{relpath}", received))
        downloader.start()
        wait_for(lambda: len(received) > 2 << 20)
        os.killpg(process.pid, signal.SIGTERM)  # the server runs in its own session: only its processes
        downloader.join(timeout=30)
        connection.close()
        assert process.wait(timeout=30) == 0, stderr_path.read_text()
        stderr = stderr_path.read_text()
    assert bytes(received) == content  # not cut off by the duplicate
    assert "closing the remaining connections now" not in stderr
    assert all(f"worker {index} (pid {pid}) exited with 0" in stderr for index, pid in enumerate(workers))


def test_a_worker_that_cannot_start_stops_the_server_with_one_error(
    mirror: FakeIndex, certificate: tuple[Path, Path], tmp_path: Path
):
    (tmp_path / "file").write_text("not a directory")
    (tmp_path / "repo").mkdir()
    config = write_config(tmp_path, mirror, certificate, log={"path": str(tmp_path / "file" / "access.log")})
    result = subprocess.run([sys.executable, "-P", "-m", "pypimirror", "serve", "-c", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "cannot open access log" in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "pypimirror: error: serve.workers: a worker could not start (its error is logged above)"
    )
