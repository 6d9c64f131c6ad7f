"""The live hit rate with real traffic: a served mirror, pip installing through it, plain GETs;
``/metrics`` while it runs, ``pypimirror status`` after it stopped, the info page after a restart."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fakeindex import FakeIndex
from installers import pip_install
from mirrorprocess import PREFIX, request, run_cli, running_server, stop_server, sync_once, write_config
from prometheus_client.parser import text_string_to_metric_families

from pypimirror.hitchart import format_rate
from pypimirror.byteunits import format_bytes

pytestmark = pytest.mark.e2e

BOT_UA = "Mozilla/5.0 (compatible; Googlebot/2.1)"


def file_counters(port: int) -> dict[tuple[str, str], float]:
    status, _, body = request(port, "/metrics")
    assert status == 200
    return {(s.name, s.labels["outcome"]): s.value for family in text_string_to_metric_families(body.decode())
            for s in family.samples if s.name in ("pypimirror_file_requests_total", "pypimirror_file_bytes_total")}


def downloads_in_log(log: Path) -> dict[str, tuple[int, int]]:
    """What the access log says the hit rate must count: (requests, body bytes) per outcome."""
    found = {"local": (0, 0), "redirect": (0, 0)}
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        if (entry["method"] != "GET" or not entry["path"].startswith(f"{PREFIX}/packages/")
                or entry["path"].endswith(".metadata") or "googlebot" in entry["user_agent"].lower()):
            continue
        outcome = {200: "local", 206: "local", 304: "local", 302: "redirect"}[entry["status"]]
        requests, sent = found[outcome]
        found[outcome] = (requests + 1, sent + entry["bytes"])
    return found


def test_counters_status_info_page_and_metrics_move_with_real_traffic(fake_index: FakeIndex, tmp_path: Path):
    fake_index.add_project("pkg-a", ["1.0"], dependencies=["pkg-b>=1"])
    fake_index.add_project("pkg-b", ["1.0"])
    local = next(d for d in fake_index.files("pkg-a", "1.0") if d.filename.endswith(".whl"))
    remote = next(d for d in fake_index.files("pkg-b", "1.0") if d.filename.endswith(".whl"))
    config = write_config(tmp_path, fake_index)
    sync_once(config)
    repo = tmp_path / "repo"
    held = repo / "packages" / local.path.removeprefix("/packages/")  # the only tier: what the cache job fills
    held.parent.mkdir(parents=True, exist_ok=True)
    held.write_bytes(local.content)

    stderr = tmp_path / "serve.err"
    with running_server(config, stderr) as (process, port):
        assert file_counters(port) == {(f"pypimirror_file_{kind}_total", outcome): 0.0
                                       for kind in ("requests", "bytes") for outcome in ("local", "redirect", "proxy")}
        installed = pip_install(f"http://127.0.0.1:{port}{PREFIX}/simple/", tmp_path / "target", "pkg-a")
        assert installed.returncode == 0, installed.stdout + installed.stderr
        assert request(port, PREFIX + local.path)[0] == 200
        assert request(port, PREFIX + local.path, {"Range": "bytes=0-99"})[0] == 206
        assert request(port, PREFIX + local.path, method="HEAD")[0] == 200  # not a download
        assert request(port, PREFIX + local.path, {"User-Agent": BOT_UA})[0] == 200  # a bot: not counted
        assert request(port, PREFIX + remote.path)[0] == 302
        deadline = time.monotonic() + 15  # /metrics takes the counts in once a second
        while file_counters(port)[("pypimirror_file_requests_total", "redirect")] < 2:
            assert time.monotonic() < deadline, file_counters(port)
            time.sleep(0.1)
        expected = downloads_in_log(tmp_path / "access.log")
        (local_n, local_bytes), (redirect_n, _) = expected["local"], expected["redirect"]
        assert local_n >= 3 and redirect_n >= 2  # pip's wheel of pkg-a, the GET and the range; pkg-b twice
        live = file_counters(port)
        assert live[("pypimirror_file_requests_total", "local")] == local_n
        assert live[("pypimirror_file_bytes_total", "local")] == local_bytes
        assert live[("pypimirror_file_requests_total", "redirect")] == redirect_n
        stop_server(process, stderr)  # the counts still in memory are written on the way out

    redirect_bytes = redirect_n * remote.size  # a redirect counts the size the synced page lists
    request_rate = format_rate(local_n / (local_n + redirect_n))
    byte_rate = format_rate(local_bytes / (local_bytes + redirect_bytes))
    status = run_cli("status", "-c", str(config))
    assert status.returncode == 0, status.stderr
    total_bytes = format_bytes(local_bytes + redirect_bytes)
    line = f"requests {request_rate} of {local_n + redirect_n}, bytes {byte_rate} of {total_bytes}"
    assert f"  last 24 h: {line}\n" in status.stdout and f"  last 7 d : {line}\n" in status.stdout

    with running_server(config, stderr) as (process, port):  # the figures are the database's, not a process's
        code, _, body = request(port, f"{PREFIX}/")
        page = body.decode()
        assert code == 200
        assert f'<tr id="hits-day"><th>Last 24 hours</th><td>{local_n + redirect_n}</td><td>{request_rate}</td>' in page
        assert f"<td>{byte_rate}</td></tr>" in page
        assert '<svg id="hit-chart"' in page and f"{local_n + redirect_n} downloads from" in page
        stop_server(process, stderr)


def test_workers_add_their_downloads_to_the_same_hourly_rows(fake_index: FakeIndex, tmp_path: Path):
    fake_index.add_project("pkg-a", ["1.0"])
    wheel = next(d for d in fake_index.files("pkg-a", "1.0") if d.filename.endswith(".whl"))
    sdist = next(d for d in fake_index.files("pkg-a", "1.0") if not d.filename.endswith(".whl"))
    config = write_config(tmp_path, fake_index, serve={"workers": 2})
    sync_once(config)
    held = tmp_path / "repo" / "packages" / wheel.path.removeprefix("/packages/")
    held.parent.mkdir(parents=True, exist_ok=True)
    held.write_bytes(wheel.content)
    stderr = tmp_path / "serve.err"
    with running_server(config, stderr) as (process, port):
        deadline = time.monotonic() + 20
        while stderr.read_text().count("serving http://") < 2:  # both workers listen before traffic starts
            assert time.monotonic() < deadline, stderr.read_text()
            time.sleep(0.05)
        # A new connection per request: the kernel spreads them over both workers' sockets.
        for _ in range(12):
            assert request(port, PREFIX + wheel.path)[0] == 200
            assert request(port, PREFIX + sdist.path)[0] == 302
        stop_server(process, stderr)
    status = run_cli("status", "-c", str(config))
    assert status.returncode == 0, status.stderr
    byte_rate = format_rate(wheel.size / (wheel.size + sdist.size))
    line = f"requests 50.0 % of 24, bytes {byte_rate} of {format_bytes(12 * (wheel.size + sdist.size))}"
    assert f"  last 24 h: {line}\n" in status.stdout, status.stdout
