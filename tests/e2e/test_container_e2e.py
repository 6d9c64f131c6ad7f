"""The image of ``contrib/Dockerfile``, built and run with Podman as an operator runs it.

The base is a minimal Debian built by ``mmdebstrap`` from the package archive (no container
registry is needed); its root file system and the image made from it are kept between runs in
``${XDG_CACHE_HOME:-~/.cache}/pypimirror-tests/`` (the rootfs tar, and a Podman store of its
own), so only the project's image is built each time. The container runs on the host network
against the fake upstream on 127.0.0.1, with the configuration mounted and the repo on a named
volume, and is told to stop as a runtime does (SIGTERM). Podman's ``--runtime runc
--cgroup-manager=cgroupfs`` and explicit ulimits make it run on machines whose cgroups or hard
limits the defaults refuse; without podman, runc or mmdebstrap the test skips, saying why.

Health: without systemd, Podman does not schedule health checks itself, so the test runs the
image's own check with ``podman healthcheck run`` (which also records the status Podman reports)
until it passes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakeindex import FakeIndex
from installers import pip_install, uv_pip_install
from mirrorprocess import PREFIX, free_port, request

from pypimirror.storage import TEMP_MARKER

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pypimirror-tests"
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
# Documentation, manual pages and translations are no use in a server image.
DPKG_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*")
# Below this sandbox's hard limits (the runtime's defaults exceed them and the start fails).
LIMITS = ("--ulimit", "nofile=10000:10000", "--ulimit", "nproc=1000:1000")
VOLUME_PATH = "/srv/pypimirror"
CONFIG_PATH = "/etc/pypimirror/config.yaml"
MARKER_AGENT = "container-e2e"
HEALTHY_WITHIN_S = 120
LOG_FIELDS = ["time", "method", "path", "status", "bytes", "duration_ms",
              "client_ip", "user_agent", "referer", "proxied"]


@dataclass(frozen=True)
class Podman:
    """Podman with a store of the tests' own and the options this machine needs."""

    command: tuple[str, ...]

    def run(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*self.command, *args], capture_output=True, text=True, timeout=timeout)
        if check:
            assert result.returncode == 0, f"podman {' '.join(args)}: {result.stderr}"
        return result

    def inspect(self, name: str, template: str) -> str:
        return self.run("inspect", "--format", template, name).stdout.strip()


def _missing_tools() -> list[str]:
    return [tool for tool in ("podman", "runc", "mmdebstrap") if shutil.which(tool) is None]


@pytest.fixture(scope="module")
def podman() -> Podman:
    if missing := _missing_tools():
        pytest.skip(f"{', '.join(missing)} not installed (.ci/run installs them with apt where it can)")
    store = CACHE / "containers"
    runroot = Path(tempfile.gettempdir()) / f"pypimirror-tests-podman-{os.getuid()}"
    found = Podman(("podman", "--root", str(store), "--runroot", str(runroot / "run"),
                    "--tmpdir", str(runroot / "libpod"), "--runtime", "runc", "--cgroup-manager=cgroupfs",
                    "--events-backend", "file"))
    info = found.run("info", check=False)
    if info.returncode != 0:
        pytest.skip(f"podman cannot run here: {info.stderr.strip()[-500:]}")
    return found


def _base_rootfs() -> Path:
    """The minimal Debian root file system as a tar, built once and then taken from the cache."""
    options = ["--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
               *(f"--dpkgopt=path-exclude={pattern}" for pattern in DPKG_EXCLUDES), SUITE]
    key = hashlib.sha256("\0".join(options).encode()).hexdigest()[:16]
    tar = CACHE / f"debian-{SUITE}-{key}.tar"
    if not tar.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = tar.with_name(f"partial-{uuid.uuid4().hex}-{tar.name}")  # renamed once complete
        result = subprocess.run(["mmdebstrap", "--quiet", "--format=tar", *options, str(partial)],
                                capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            partial.unlink(missing_ok=True)
            pytest.skip(f"mmdebstrap cannot build a Debian base here: {result.stderr.strip()[-500:]}")
        partial.rename(tar)
    return tar


@pytest.fixture(scope="module")
def base_image(podman: Podman) -> str:
    """The Debian base as an image in the tests' store; imported once per rootfs tar."""
    tar = _base_rootfs()
    name = f"localhost/pypimirror-test-base:{tar.stem.rpartition('-')[2]}"
    if podman.run("image", "exists", name, check=False).returncode != 0:
        podman.run("import", str(tar), name, timeout=300)
    probe = podman.run("run", "--rm", *LIMITS, name, "python3", "-c", "print('ok')", check=False)
    if probe.returncode != 0:
        pytest.skip(f"podman cannot start a container here: {probe.stderr.strip()[-500:]}")
    return name


def _registry_tls_options() -> list[str]:
    """The host's CA bundle for pip inside the build, as a user behind a TLS-intercepting proxy gives it."""
    bundle = os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
    if not Path(bundle).is_file():
        return []
    target = "/etc/ssl/certs/ca-certificates.crt"
    return ["--volume", f"{bundle}:{target}:ro", "--env", f"PIP_CERT={target}"]


@pytest.fixture(scope="module")
def image(podman: Podman, base_image: str) -> Iterator[str]:
    """The project's image, built from the checkout's contrib/Dockerfile on the Debian base."""
    name = f"localhost/pypimirror-test:{uuid.uuid4().hex[:12]}"
    started = time.monotonic()
    podman.run("build", "--format", "docker", "--network", "host", "--layers=false", *LIMITS,
               *_registry_tls_options(), "--build-arg", f"BASE_IMAGE={base_image}",
               "--file", str(REPO / "contrib" / "Dockerfile"), "--tag", name, str(REPO), timeout=600)
    print(f"image built in {time.monotonic() - started:.0f} s; "
          f"{podman.inspect(name, '{{.Size}}')} bytes")  # shown with -s; docs/deployment.md quotes it
    yield name
    podman.run("rmi", "--force", name, check=False)
    podman.run("image", "prune", "--force", check=False)  # the builder stage


@pytest.fixture
def volume(podman: Podman) -> Iterator[tuple[str, Path]]:
    """A fresh named volume and where its files are on this host."""
    name = f"pypimirror-test-{uuid.uuid4().hex[:12]}"
    podman.run("volume", "create", name)
    try:
        yield name, Path(podman.inspect(name, "{{.Mountpoint}}"))
    finally:
        podman.run("volume", "rm", "--force", name, check=False)


def write_container_config(tmp_path: Path, fake: FakeIndex, port: int, access_log: str,
                           dedup_window: str = "1h") -> Path:
    """contrib's container configuration, pointed at the fake upstream and a free port."""
    data: dict[str, Any] = yaml.safe_load((REPO / "contrib" / "config.docker.yaml").read_text())
    data.update(listen=f"127.0.0.1:{port}", shutdown_grace="20s")
    data["upstream"] = {"pypi_url": fake.pypi_url, "packages_url": fake.packages_url}
    data["cache"] = {"size_limit": "1g", "dedup_window": dedup_window}
    data["schedule"]["jitter"] = "0s"
    data["log"] = {"path": access_log, "format": "mirror-json"}
    path = tmp_path / f"config-{port}.yaml"
    path.write_text(yaml.safe_dump(data))
    path.chmod(0o644)
    return path


@dataclass
class Container:
    podman: Podman
    name: str
    port: int
    started_at: float  # time.monotonic() before `podman run`

    def logs(self) -> str:
        result = self.podman.run("logs", self.name)
        return result.stdout + result.stderr

    def wait_healthy(self) -> float:
        """Run the image's health check until it passes; the seconds since `podman run` was called."""
        started = time.monotonic()
        while True:
            check = self.podman.run("healthcheck", "run", self.name, check=False, timeout=60)
            if check.returncode == 0:
                return time.monotonic() - self.started_at
            running = self.podman.inspect(self.name, "{{.State.Running}}")
            assert running == "true", f"the container stopped before it was healthy:\n{self.logs()}"
            assert time.monotonic() - started < HEALTHY_WITHIN_S, f"not healthy: {check.stdout}{check.stderr}"
            time.sleep(0.5)

    def wait_for_log(self, pattern: str, timeout: float = 120) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while not (found := re.search(pattern, self.logs())):
            assert time.monotonic() < deadline, f"{pattern!r} not logged:\n{self.logs()}"
            time.sleep(0.5)
        return found

    def stop(self) -> int:
        """``podman stop`` (SIGTERM, then SIGKILL after more than shutdown_grace) and the exit status."""
        self.podman.run("stop", "--time", "45", self.name, timeout=90)
        return int(self.podman.inspect(self.name, "{{.State.ExitCode}}"))


@pytest.fixture
def start_container(podman: Podman, image: str, volume: tuple[str, Path]) -> Iterator[Any]:
    """Starts containers of the image on the volume; removes them afterwards."""
    started: list[str] = []

    def start(config: Path, port: int) -> Container:
        name = f"pypimirror-test-{uuid.uuid4().hex[:12]}"
        started_at = time.monotonic()
        podman.run("run", "--detach", "--name", name, "--network", "host", *LIMITS,
                   "--volume", f"{volume[0]}:{VOLUME_PATH}", "--volume", f"{config}:{CONFIG_PATH}:ro", image)
        started.append(name)
        return Container(podman, name, port, started_at)

    yield start
    for name in started:
        podman.run("rm", "--force", "--time", "0", name, check=False)


# docs/deployment.md's backup of the SQLite database while the server runs: SQLite's online
# backup API, one step, so the copy is one consistent snapshot even as the server writes (WAL).
BACKUP_SCRIPT = """\
import sqlite3
with sqlite3.connect("/srv/pypimirror/pypi-mirror.db") as src, sqlite3.connect("/srv/pypimirror/backup.db") as dst:
    src.backup(dst)
"""


def vote_rows(db_path: Path) -> list[tuple[str, str]]:
    """(file, client network) of every vote row in the database (the container is stopped)."""
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as connection:
        return connection.execute("SELECT file_path, ip_prefix FROM votes").fetchall()


def voted_files(db_path: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for file_path, prefix in vote_rows(db_path):
        found.setdefault(file_path, set()).add(prefix)
    return found


def log_entries(lines: list[str]) -> list[dict[str, Any]]:
    entries = []
    for line in lines:
        pairs = json.loads(line, object_pairs_hook=list)
        assert [key for key, _ in pairs] == LOG_FIELDS, line
        entries.append(dict(pairs))
    return entries


def ask_marked_pages(port: int, count: int) -> None:
    for n in range(count):
        status, _, _ = request(port, f"{PREFIX}/simple/pkg-a/?n={n}", {"User-Agent": MARKER_AGENT})
        assert status == 200


def install_with_pip_and_uv(port: int, target: Path) -> None:
    index_url = f"http://127.0.0.1:{port}{PREFIX}/simple/"
    for installer, into in ((pip_install, target / "pip"), (uv_pip_install, target / "uv")):
        result = installer(index_url, into, "pkg-a")
        assert result.returncode == 0, result.stdout + result.stderr
        assert 'VERSION = "1.0"' in (into / "pkg_b" / "__init__.py").read_text()  # the dependency came too
        assert (into / "pkg_a" / "__init__.py").exists()


def test_the_image_serves_installs_keeps_votes_stops_cleanly_and_restarts_on_its_volume(
    fake_index: FakeIndex, start_container: Any, volume: tuple[str, Path], tmp_path: Path
) -> None:
    fake_index.add_project("pkg-a", ["1.0"], dependencies=["pkg-b>=1"])
    fake_index.add_project("pkg-b", ["0.9", "1.0"])
    repo = volume[1]

    # First container: the access log to a file on the volume.
    port = free_port()
    first = start_container(write_container_config(tmp_path, fake_index, port, f"{VOLUME_PATH}/log/access.log"),
                            port)
    healthy_after = first.wait_healthy()
    assert first.podman.inspect(first.name, "{{.State.Health.Status}}") == "healthy"
    print(f"healthy {healthy_after:.1f} s after podman run was called")  # docs/deployment.md quotes it
    first.wait_for_log(r"index sync: done: listed=2 planned=2 fetched=2 removed=0 errors=0")
    install_with_pip_and_uv(port, tmp_path / "first")
    backup = subprocess.run([*first.podman.command, "exec", "--interactive", first.name, "python", "-"],
                            input=BACKUP_SCRIPT, capture_output=True, text=True, timeout=60)
    assert backup.returncode == 0, backup.stderr
    with contextlib.closing(sqlite3.connect(f"file:{repo / 'backup.db'}?mode=ro", uri=True)) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert sorted(name for (name,) in copy.execute("SELECT name FROM serials")) == ["pkg-a", "pkg-b"]
    (repo / "backup.db").unlink()
    ask_marked_pages(port, 20)  # the last requests before the stop: their lines must not be lost
    assert first.stop() == 0, first.logs()

    logs = first.logs()
    assert "Traceback" not in logs and " ERROR " not in logs, logs
    wheels = {dist.path.removeprefix("/packages/") for name in ("pkg-a", "pkg-b")
              for dist in fake_index.files(name, "1.0") if dist.filename.endswith(".whl")}
    assert voted_files(repo / "pypi-mirror.db") == {path: {"127.0.0.0"} for path in wheels}
    entries = log_entries((repo / "log" / "access.log").read_text().splitlines())
    assert [e["path"] for e in entries if e["user_agent"] == MARKER_AGENT] == [
        f"{PREFIX}/simple/pkg-a/" for _ in range(20)
    ]
    redirected = {e["path"].removeprefix(f"{PREFIX}/packages/") for e in entries
                  if e["status"] == 302 and e["path"].endswith(".whl")}
    assert redirected == wheels  # every download the installers made is in the log
    assert [path for path in repo.rglob("*") if TEMP_MARKER in path.name] == []
    pages = {path.relative_to(repo): path.read_bytes() for path in (repo / "simple").rglob("*") if path.is_file()}
    assert Path("simple/pkg-a/index.v1_json") in pages

    # Second container on the same volume: the access log to stdout this time, and a dedup
    # window short enough that its installs add vote rows of their own.
    project_pages_fetched = fake_index.count_requests(re.compile(r"^/(simple|pypi)/pkg-"))
    votes_before = len(vote_rows(repo / "pypi-mirror.db"))
    port = free_port()
    second = start_container(write_container_config(tmp_path, fake_index, port, "-", dedup_window="1s"), port)
    second.wait_healthy()
    second.wait_for_log(r"index sync: done: listed=2 planned=0 fetched=0 removed=0 errors=0")
    assert fake_index.count_requests(re.compile(r"^/(simple|pypi)/pkg-")) == project_pages_fetched
    install_with_pip_and_uv(port, tmp_path / "second")
    ask_marked_pages(port, 5)
    assert second.stop() == 0, second.logs()
    assert "Traceback" not in second.logs() and " ERROR " not in second.logs(), second.logs()
    stdout = second.podman.run("logs", second.name).stdout.splitlines()
    marked = [e for e in log_entries([line for line in stdout if line.startswith("{")])
              if e["user_agent"] == MARKER_AGENT]
    assert len(marked) == 5
    assert {path.relative_to(repo): path.read_bytes() for path in (repo / "simple").rglob("*")
            if path.is_file()} == pages  # the mirror is as the first container left it
    assert voted_files(repo / "pypi-mirror.db") == {path: {"127.0.0.0"} for path in wheels}
    assert len(vote_rows(repo / "pypi-mirror.db")) > votes_before  # the second container's votes
    assert [path for path in repo.rglob("*") if TEMP_MARKER in path.name] == []
