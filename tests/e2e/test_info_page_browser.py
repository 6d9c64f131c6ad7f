"""The info page in a real browser (Debian's headless Chromium): it tells pip and uv this mirror's
URL, and no script smuggled in through a header or the job history ever runs.

A script here would set ``document.title`` to "pwned"; the DOM Chromium dumps after loading
shows whether it did. A control page with a bare script proves that this check can fail.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fakeindex import FakeIndex

from pypimirror.db import Database
from pypimirror.queries import finish_job_run, start_job_run

pytestmark = pytest.mark.e2e

PREFIX = "/pypi"
SCRIPT = "<script>document.title='pwned'</script>"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if found is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium): no browser to load the page in")
    return found


def dump_dom(chromium: str, url: str, profile: Path) -> str:
    """The DOM after Chromium loaded ``url`` and ran its scripts, if any."""
    done = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def title_of(dom: str) -> str:
    match = re.search(r"<title>(.*?)</title>", dom, re.S)
    assert match is not None, dom[:500]
    return match[1]


@pytest.fixture
def server(fake_index: FakeIndex, tmp_path: Path) -> Iterator[int]:
    """A mirror (behind a "trusted proxy" at 127.0.0.1) whose last sync failed on a hostile name."""
    repo = tmp_path / "repo"
    repo.mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "listen": "127.0.0.1:0",
        "repo_path": str(repo),
        "prefix": PREFIX,
        "trusted_proxies": ["127.0.0.1/32"],
        "upstream": {"pypi_url": fake_index.pypi_url, "packages_url": fake_index.packages_url},
        "cache": {"size_limit": "1g"},
    }))
    db = Database.open(f"sqlite:///{repo / 'pypi-mirror.db'}")
    try:
        with db.begin() as conn:
            run_id = start_job_run(conn, "index_sync", "node", time.time() - 60)
            finish_job_run(conn, run_id, time.time() - 30, "failed", {"projects": 1},
                           f"project 'evil{SCRIPT}': malformed upstream answer")
    finally:
        db.dispose()
    stderr_path = tmp_path / "serve.err"
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen([sys.executable, "-P", "-m", "pypimirror", "serve", "-c", str(config)], stderr=stderr)
    try:
        yield _wait_port(process, stderr_path)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def _wait_port(process: subprocess.Popen[bytes], stderr_path: Path) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, stderr_path.read_text()
        started = re.search(r"serving http://127\.0\.0\.1:(\d+)/", stderr_path.read_text())
        if started:
            return int(started[1])
        time.sleep(0.05)
    raise AssertionError(f"server did not start: {stderr_path.read_text()}")


def fetch_page(port: int, headers: dict[str, str]) -> bytes:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest("GET", f"{PREFIX}/", skip_host="Host" in headers)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 200
        return response.read()
    finally:
        connection.close()


def test_the_check_would_see_a_script_that_ran(chromium: str, tmp_path: Path):
    control = tmp_path / "control.html"
    control.write_text(f"<!DOCTYPE html><html><head><title>safe</title></head><body>{SCRIPT}</body></html>")
    assert title_of(dump_dom(chromium, control.as_uri(), tmp_path / "profile")) == "pwned"


def test_the_page_shows_pip_and_uv_this_mirrors_url_and_runs_no_script(chromium: str, server: int, tmp_path: Path):
    dom = dump_dom(chromium, f"http://127.0.0.1:{server}{PREFIX}/", tmp_path / "profile")
    url = f"http://127.0.0.1:{server}{PREFIX}/simple/"
    assert title_of(dom) == f"PyPI mirror — 127.0.0.1:{server}"
    assert f"pip install --index-url {url} &lt;package&gt;" in dom
    assert f"[global]\nindex-url = {url}" in dom
    assert f'[[tool.uv.index]]\nname = "mirror"\nurl = "{url}"' in dom and f"export UV_INDEX_URL={url}" in dom
    assert "project 'evil&lt;script&gt;document.title='pwned'&lt;/script&gt;': malformed" in dom  # shown as text
    assert "pwned" not in title_of(dom)


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "127.0.0.1", "X-Forwarded-Host": f"mirror{SCRIPT}", "X-Forwarded-Proto": f"https{SCRIPT}"},
        {"Host": "mirror&x='y'", "X-Forwarded-For": f"{SCRIPT}"},
    ],
    ids=["forwarded-host", "host"],
)
def test_hostile_host_headers_never_run_in_the_browser(chromium: str, server: int, tmp_path: Path, headers):
    page = tmp_path / "page.html"
    page.write_bytes(fetch_page(server, headers))  # the bytes the server sent, opened as a file
    dom = dump_dom(chromium, page.as_uri(), tmp_path / "profile")
    assert "pwned" not in title_of(dom)
    assert "<script" not in dom
    assert re.search(r"pip install --index-url http://127\.0\.0\.1(:\d+)?/pypi/simple/", dom)
