"""``pypimirror sync --once`` as an operator runs it: a real process, real installers, real proxies."""

from __future__ import annotations

import http.server
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from socksproxy import SocksProxy
from fakeindex import FakeIndex
from installers import pip_install, uv_executable, uv_pip_install
from mirrorprocess import wait_for

from pypimirror import queries as dbq
from pypimirror.db import Database
from pypimirror.storage import TEMP_MARKER

pytestmark = pytest.mark.e2e

PREFIX = "/pypi"


def write_config(tmp_path: Path, fake: FakeIndex, **upstream: str) -> Path:
    config = {
        "repo_path": str(tmp_path / "repo"),
        "prefix": PREFIX,
        "upstream": {"pypi_url": fake.pypi_url, "packages_url": fake.packages_url, **upstream},
        "cache": {"size_limit": "1g"},
        "sync": {"concurrent_downloads": 4},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_sync(config: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-P", "-m", "pypimirror", "sync", "--once", "-c", str(config)],
        capture_output=True, text=True, timeout=timeout,
    )


def stored_serials(tmp_path: Path) -> dict[str, tuple[str, int]]:
    db = Database.open(f"sqlite:///{tmp_path / 'repo' / 'pypi-mirror.db'}")
    try:
        with db.connect() as conn:
            return dict(dbq.load_serials(conn))
    finally:
        db.dispose()


def assert_consistent_mirror(tmp_path: Path, fake: FakeIndex, expected: set[str]) -> None:
    """Every listed project has all its files, the DB agrees, and no temp file is left."""
    repo = tmp_path / "repo"
    serials = stored_serials(tmp_path)
    assert set(serials) == expected
    for project, (_, serial) in serials.items():
        assert serial == fake.project(project).last_serial
        for variant in ("index.html", "index.v1_html", "index.v1_json"):
            assert (repo / "simple" / project / variant).stat().st_size > 0
        assert (repo / "json" / project).stat().st_size > 0
    on_disk = {path.name for path in (repo / "simple").iterdir() if path.is_dir()}
    assert on_disk == expected
    assert [p for p in repo.rglob("*") if TEMP_MARKER in p.name] == []


# -- exit statuses ----------------------------------------------------------------------------


def test_sync_once_succeeds_and_records_the_run(fake_index: FakeIndex, tmp_path: Path) -> None:
    fake_index.add_many(30)
    result = run_sync(write_config(tmp_path, fake_index))
    assert result.returncode == 0, result.stderr
    assert "index sync: done" in result.stderr
    assert_consistent_mirror(tmp_path, fake_index, {f"proj-{i:04d}" for i in range(30)})
    db = Database.open(f"sqlite:///{tmp_path / 'repo' / 'pypi-mirror.db'}")
    try:
        with db.connect() as conn:
            run = dbq.last_job_run(conn, "index_sync")
            lease = dbq.read_lease(conn, "sync")
    finally:
        db.dispose()
    assert run is not None and run.outcome == "ok" and run.counts["fetched"] == 30
    assert lease is None  # released at the end


def test_failing_listing_exits_2_with_one_line_and_keeps_the_mirror(fake_index: FakeIndex, tmp_path: Path) -> None:
    fake_index.add_many(3)
    config = write_config(tmp_path, fake_index)
    assert run_sync(config).returncode == 0
    fake_index.fail_next("/simple/", status=500, times=None)
    result = run_sync(config)
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("pypimirror: error:")]
    assert len(error_lines) == 1 and "500" in error_lines[0]
    assert "Traceback" not in result.stderr
    assert_consistent_mirror(tmp_path, fake_index, {"proj-0000", "proj-0001", "proj-0002"})


def test_a_sync_in_which_every_project_fails_exits_2_and_shows_as_failed_in_status(
    fake_index: FakeIndex, tmp_path: Path
) -> None:
    fake_index.add_many(3)
    for i in range(3):
        fake_index.fail_next(f"/pypi/proj-{i:04d}/json", status=403, times=None)
    config = write_config(tmp_path, fake_index)
    result = run_sync(config)
    assert result.returncode == 2, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("pypimirror: error:")]
    assert len(error_lines) == 1 and "index sync failed: 3 of 3 projects failed" in error_lines[0]
    assert "Traceback" not in result.stderr
    assert "cache: done" not in result.stderr  # cache management does not follow a failed sync
    status = subprocess.run([sys.executable, "-P", "-m", "pypimirror", "status", "-c", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    assert "last run:      failed" in status.stdout
    assert "error: 3 of 3 projects failed, more than sync.max_error_share (50%)" in status.stdout
    assert "last success:  never" in status.stdout

    fake_index.clear_faults()
    assert run_sync(config).returncode == 0
    assert_consistent_mirror(tmp_path, fake_index, {"proj-0000", "proj-0001", "proj-0002"})


def test_sigterm_interrupts_with_exit_1_and_the_next_run_completes(fake_index: FakeIndex, tmp_path: Path) -> None:
    fake_index.add_many(60)
    fake_index.delay("/simple/proj-", 0.5, times=None)  # 60 projects, 4 at a time: ~8 s
    config = write_config(tmp_path, fake_index)
    process = subprocess.Popen([sys.executable, "-P", "-m", "pypimirror", "sync", "--once", "-c", str(config)],
                               stderr=subprocess.PIPE, text=True)
    # Signal once the run fetches projects (its handlers are installed by then), however slow
    # the machine is to start the process; ~7 s of fetching are still ahead of it.
    wait_for(lambda: fake_index.count_requests("/simple/proj-") > 0 or process.poll() is not None, timeout=60)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1, stderr
    assert "stopping at the next safe point" in stderr
    fake_index.clear_faults()
    assert run_sync(config).returncode == 0
    assert_consistent_mirror(tmp_path, fake_index, {f"proj-{i:04d}" for i in range(60)})


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_at_a_random_point_then_a_new_run_gives_a_complete_consistent_mirror(
    fake_index: FakeIndex, tmp_path: Path, seed: int
) -> None:
    fake_index.add_many(80)
    fake_index.delay("/pypi/proj-", 0.02, times=None)
    config = write_config(tmp_path, fake_index)
    assert run_sync(config).returncode == 0
    for i in range(0, 80, 3):  # a second run with work to do, killed part-way
        fake_index.bump(f"proj-{i:04d}")
    for i in range(80, 100):
        fake_index.add_project(f"proj-{i:04d}")
    fake_index.remove_project("proj-0001")
    process = subprocess.Popen([sys.executable, "-P", "-m", "pypimirror", "sync", "--once", "-c", str(config)],
                               stderr=subprocess.DEVNULL)
    time.sleep(random.Random(seed).uniform(0.8, 2.5))
    process.kill()
    process.wait(timeout=30)
    fake_index.clear_faults()
    result = run_sync(config)
    assert result.returncode == 0, result.stderr
    assert_consistent_mirror(tmp_path, fake_index, {f"proj-{i:04d}" for i in range(100)} - {"proj-0001"})


# -- installers through the generated pages ----------------------------------------------------


class MirrorPagesHandler(http.server.SimpleHTTPRequestHandler):
    """A plain static server over the repo, like nginx in front of a bandersnatch tree.

    ``negotiate`` picks ``index.v1_json`` when Accept names the JSON type (the banderx rule);
    package files are 302s to the upstream, as the mirror does on a cache miss.
    """

    repo: Path
    packages_url: str
    negotiate: bool

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path.startswith(f"{PREFIX}/packages/"):
            self.send_response(302)
            self.send_header("Location", self.packages_url + path.removeprefix(f"{PREFIX}/packages"))
            self.end_headers()
            return
        if not path.startswith(f"{PREFIX}/simple/") or not path.endswith("/"):
            self.send_error(404)
            return
        wants_json = self.negotiate and "application/vnd.pypi.simple.v1+json" in self.headers.get("Accept", "")
        variant, content_type = (
            ("index.v1_json", "application/vnd.pypi.simple.v1+json") if wants_json
            else ("index.html", "text/html; charset=utf-8")
        )
        page = self.repo / path.removeprefix(f"{PREFIX}/").rstrip("/") / variant
        if not page.is_file():
            self.send_error(404)
            return
        body = page.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(params=["json", "html"])
def static_mirror(request: pytest.FixtureRequest, fake_index: FakeIndex, tmp_path: Path) -> Iterator[str]:
    """Sync the fake, then serve the generated pages; yields the index URL for installers."""
    fake_index.add_project("pkg-a", ["1.0"], dependencies=["pkg-b>=1"], requires_python=">=3.8")
    fake_index.add_project("pkg-b", ["0.9", "1.0"])
    fake_index.yank("pkg-b", "1.0", "do not use")
    fake_index.add_release("pkg-b", "1.1")
    assert run_sync(write_config(tmp_path, fake_index)).returncode == 0
    handler = type("Handler", (MirrorPagesHandler,), {
        "repo": tmp_path / "repo", "packages_url": fake_index.packages_url, "negotiate": request.param == "json",
    })
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}{PREFIX}/simple/"
    server.shutdown()
    server.server_close()


def installed(target: Path) -> set[str]:
    return {path.name for path in target.iterdir() if path.name.endswith(".dist-info")}


def test_pip_installs_through_the_generated_pages(static_mirror: str, tmp_path: Path) -> None:
    target = tmp_path / "target"
    result = pip_install(static_mirror, target, "pkg-a")
    assert result.returncode == 0, result.stdout + result.stderr
    assert installed(target) == {"pkg_a-1.0.dist-info", "pkg_b-1.1.dist-info"}


@pytest.mark.skipif(uv_executable() is None, reason="uv is not installed beside this Python")
def test_uv_installs_through_the_generated_pages(static_mirror: str, tmp_path: Path) -> None:
    target = tmp_path / "target"
    result = uv_pip_install(static_mirror, target, "pkg-a")
    assert result.returncode == 0, result.stdout + result.stderr
    assert installed(target) == {"pkg_a-1.0.dist-info", "pkg_b-1.1.dist-info"}


def test_pip_honours_the_yank_in_the_generated_pages(static_mirror: str, tmp_path: Path) -> None:
    target = tmp_path / "target"
    result = pip_install(static_mirror, target, "pkg-b==1.0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "yanked" in (result.stdout + result.stderr).lower()


# -- outbound proxies ---------------------------------------------------------------------------


def test_sync_goes_through_a_socks5_proxy_and_fails_clearly_without_it(
    fake_index: FakeIndex, tmp_path: Path, socks_proxy: SocksProxy
) -> None:
    fake_index.add_many(5)
    config = write_config(tmp_path, fake_index, proxy=socks_proxy.url)
    result = run_sync(config)
    assert result.returncode == 0, result.stderr
    assert len(stored_serials(tmp_path)) == 5

    output = socks_proxy.stop()
    assert "127.0.0.1" in output and "socks5" in output.lower()  # pproxy saw our connections

    fake_index.add_project("later")
    result = run_sync(config)
    assert result.returncode == 2
    assert "proxy" in result.stderr.lower()
    assert "later" not in stored_serials(tmp_path)
    assert os.path.exists(tmp_path / "repo" / "simple" / "proj-0000" / "index.html")
