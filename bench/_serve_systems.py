"""The three servers of the serve benchmark, started side by side and always stopped.

Each server runs in its own session (process group), so stopping it with one ``killpg``
also stops the workers it forked, and nothing else. :class:`Servers` is a context manager:
leaving it, by success, exception or Ctrl-C, stops every server it started, by process
group id, then waits for them.
"""

from __future__ import annotations

__all__ = [
    "Server",
    "ServerUnavailable",
    "Servers",
    "ensure_tools",
    "fetch",
    "free_port",
    "load_average",
    "machine_summary",
    "mirror_command",
    "nginx_binary",
    "nginx_conf",
    "nginx_main_conf",
    "nginx_version",
    "pinned_to",
    "terminate_as_interrupt",
]

import http.client
import logging
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType, TracebackType

import tornado

logger = logging.getLogger(__name__)

_START_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 20.0
_LOG_TAIL = 1500


class ServerUnavailable(Exception):
    """A server could not be started; the message says why (with its log's tail)."""


@dataclass
class Server:
    """A started server: its label, port, process and log file."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    notes: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def session_stats(self) -> dict[int, list[str]]:
        """``/proc/<pid>/stat`` of each process in the server's session (the master and its forked
        workers), as the fields after the command name: state ppid pgrp session ... utime stime ..."""
        found: dict[int, list[str]] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[3]) == self.process.pid:
                found[int(entry.name)] = fields
        return found

    def process_count(self) -> int:
        """Live processes in the server's session (the master and its forked workers)."""
        return sum(1 for fields in self.session_stats().values() if fields[0] != "Z")


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1 (the server binds it soon after)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def fetch(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One GET without following redirects: (status, headers with lower-case names, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


class Servers:
    """Starts servers and stops all of them on exit."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[Server] = []

    def __enter__(self) -> Servers:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_all()

    def start(self, name: str, argv: list[str], port: int, ready_path: str) -> Server:
        """Start ``argv`` in a new session and wait until ``ready_path`` answers over HTTP."""
        log_path = self.workdir / f"{name}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        server = Server(name, port, process, log_path)
        self.started.append(server)
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ServerUnavailable(f"{name} exited with {process.returncode}: {self.log_tail(server)}")
            try:
                fetch(port, ready_path)
                return server
            except OSError:
                time.sleep(0.2)
        self.stop(server)
        raise ServerUnavailable(
            f"{name} did not answer within {_START_TIMEOUT_S:.0f} s: {self.log_tail(server)}"
        )

    def stop(self, server: Server) -> int | None:
        """SIGTERM the server's process group, SIGKILL it if it lingers; returns the exit status."""
        if server not in self.started:
            return server.process.returncode
        self.started.remove(server)
        _signal_group(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop within %.0f s; killing it", server.name, _STOP_TIMEOUT_S)
            _signal_group(server.process.pid, signal.SIGKILL)
            server.process.wait()
        # Forked workers may outlive their master by a moment; do not leave any behind.
        _signal_group(server.process.pid, signal.SIGKILL)
        return server.process.returncode

    def stop_all(self) -> None:
        for server in list(reversed(self.started)):
            self.stop(server)

    @staticmethod
    def log_tail(server: Server) -> str:
        text = server.log_path.read_text(errors="replace").strip()
        return text[-_LOG_TAIL:] or "(empty log)"


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


# -- tools -----------------------------------------------------------------------------------


def ensure_tools(install: bool) -> list[str]:
    """Install nginx and wrk from apt when missing (root only); returns notes on what happened."""
    missing = [tool for tool in ("nginx", "wrk") if _which(tool) is None]
    if not missing:
        return []
    if not install or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return [f"missing {', '.join(missing)} and not installing them (needs root and apt-get)"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    apt = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    print(f"installing {' '.join(missing)} with apt-get ...", file=sys.stderr)
    done = subprocess.run(apt, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
        done = subprocess.run(apt, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return [f"apt-get install {' '.join(missing)} failed: {done.stderr.strip()[-300:]}"]
    return [f"installed {' '.join(missing)} with apt-get"]


def _which(tool: str) -> str | None:
    # nginx lives in /usr/sbin, which a non-login PATH may lack.
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")


def nginx_binary() -> str | None:
    return _which("nginx")


def nginx_version(nginx: str) -> str:
    done = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False)
    return done.stderr.strip().removeprefix("nginx version: ").removeprefix("nginx/")


# -- nginx and the mirror ----------------------------------------------------------------------


def nginx_conf(
    *,
    confdir: Path,
    port: int,
    repo: Path,
    page_url: str,
    page_file: str,
    page_type: str,
    packages_url: str,
    tier: Path,
    redirects: dict[str, str],
) -> str:
    """One worker, sendfile on, no access log: the anchors' nginx, serving the mirror's bytes.

    ``page_file`` is relative to ``repo``; ``try_files`` serves it in place (no internal
    redirect) with ``page_type``. Each redirect is a ``location =`` with ``return 302``.
    """
    returns = "\n".join(
        f"        location = {path} {{ return 302 {url}; }}" for path, url in sorted(redirects.items())
    )
    server = f"""    server {{
        listen 127.0.0.1:{port};
        location = {page_url} {{
            root {repo};
            types {{ }}
            default_type {page_type};
            try_files /{page_file} =404;
        }}
{returns}
        location {packages_url}/ {{ alias {tier}/; }}
    }}"""
    return nginx_main_conf(
        confdir, server, worker_connections=4096, http_extra="    keepalive_requests 1000000; keepalive_timeout 65;\n"
    )


def nginx_main_conf(confdir: Path, server: str, *, worker_connections: int, http_extra: str = "") -> str:
    """An nginx.conf for one worker in the foreground, everything it writes under ``confdir``,
    sendfile on and no access log, around ``server`` (a ``server {...}`` block)."""
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read our 0700 temp dir
    temp_paths = "\n".join(
        f"    {kind}_temp_path {confdir / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""{user}worker_processes 1;
daemon off;
pid {confdir / "nginx.pid"};
error_log {confdir / "error.log"} warn;
events {{ worker_connections {worker_connections}; }}
http {{
    default_type application/octet-stream;
    sendfile on; tcp_nopush on; access_log off;
{http_extra}{temp_paths}
{server}
}}
"""


def machine_summary() -> str:
    """Now, and what the figures were measured on: CPUs, kernel, Python, Tornado (for a report's head)."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {len(os.sched_getaffinity(0))} vCPU {cpu}, kernel "
        f"{platform.release()}, Python {platform.python_version()}, Tornado {tornado.version}"
    )


def load_average() -> str:
    """The 1/5/15-minute load averages, as ``0.74 / 0.60 / 0.25``."""
    return " / ".join(f"{load:.2f}" for load in os.getloadavg())


def pinned_to(cpus: Iterable[int]) -> list[str]:
    """A command prefix that runs what follows on ``cpus`` only (its children inherit the pin)."""
    listed = ",".join(str(cpu) for cpu in cpus)
    shim = "import os, sys; os.sched_setaffinity(0, map(int, sys.argv[1].split(','))); os.execvp(sys.argv[2], sys.argv[2:])"
    return [sys.executable, "-c", shim, listed]


def mirror_command(python: str, config: Path) -> list[str]:
    """How to start ``pypimirror serve``; raises ServerUnavailable when the code has no server yet.

    Prefers the CLI's ``serve`` command, then ``pypimirror.app.serve_forever`` directly.
    """
    cli = subprocess.run(
        [python, "-P", "-m", "pypimirror", "serve", "--help"], capture_output=True, text=True, check=False
    )
    if cli.returncode == 0:
        return [python, "-P", "-m", "pypimirror", "serve", "-c", str(config)]
    probe = subprocess.run(
        [python, "-c", "from pypimirror.app import serve_forever"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode == 0:
        code = (
            "import logging, sys; from pypimirror.configreader import load_config; "
            "logging.basicConfig(level=logging.WARNING); "
            "from pypimirror.app import serve_forever; sys.exit(serve_forever(load_config(sys.argv[1])))"
        )
        return [python, "-c", code, str(config)]
    reason = (probe.stderr.strip().splitlines() or ["unknown error"])[-1]
    raise ServerUnavailable(f"no 'pypimirror serve' command and no pypimirror.app.serve_forever ({reason})")


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the servers are stopped either way."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
