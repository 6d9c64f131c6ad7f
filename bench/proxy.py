"""Proxy-mode benchmark: a 50 MiB file relayed by the mirror, next to the same file from its upstream.

Why: proxy mode copies every byte through Python (libcurl → the relay's queue → Tornado's
socket), with back-pressure; this measures what that costs against fetching the file from the
upstream directly. The upstream is nginx (one worker, sendfile) serving the file; the mirror
runs ``pypimirror serve`` with ``ip_modes.default: proxy`` and an empty cache, so every request
is relayed from that nginx. Both are measured the same ways, alternating, medians over rounds:

* ``curl``: one download at a time (``-o /dev/null``), its average speed;
* ``wrk``: several connections for a few seconds, MB/s including responses in flight;

and the mirror's peak RSS while it relays. Targets: single-download proxy MB/s >= 0.25x the
direct figure (one Python process against nginx's sendfile) and peak RSS growth under load
< 50 MiB (back-pressure holds).

Run ``.venv/bin/python bench/proxy.py`` (about 1 min; ``--quick`` about 20 s). Traffic goes
to 127.0.0.1 only; every process it starts is stopped on exit. Exit status: 0 all targets
met, 1 a target missed, 2 a tool (nginx, wrk, curl) missing.
"""

from __future__ import annotations

__all__ = ["main"]

import argparse
import hashlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _serve_systems import (  # noqa: E402
    Server,
    Servers,
    fetch,
    free_port,
    mirror_command,
    nginx_binary,
    nginx_main_conf,
)
from _wrk import find_wrk, run_wrk  # noqa: E402

PREFIX = "/pypi"
FILE_BYTES = 50 * 2**20
RELPATH = f"ab/cd/{'e' * 60}/benchproxy-1.0-py3-none-any.whl"
SPEED_TARGET = 0.25  # proxied single-download MB/s against direct
RSS_TARGET_MIB = 50.0


@dataclass(frozen=True, slots=True)
class Figures:
    """Medians over rounds for one way of fetching the file."""

    curl_mib_s: float
    wrk_mib_s: float


def _nginx_conf(confdir: Path, port: int, root: Path) -> str:
    return nginx_main_conf(confdir, f"    server {{ listen 127.0.0.1:{port}; root {root}; }}", worker_connections=1024)


def _mirror_config(workdir: Path, port: int, packages_url: str) -> Path:
    config = {
        "listen": f"127.0.0.1:{port}",
        "repo_path": str(workdir / "repo"),
        "prefix": PREFIX,
        "shutdown_grace": "5s",
        "upstream": {"pypi_url": "http://127.0.0.1:9", "packages_url": packages_url},
        "ip_modes": {"default": "proxy"},
        "cache": {"size_limit": "1g"},
        "schedule": {"index_sync": "7d", "cache": "7d", "run_on_start": False},
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _curl_mib_s(curl: str, url: str) -> float:
    done = subprocess.run([curl, "-s", "-f", "-o", os.devnull, "-w", "%{size_download} %{speed_download}", url],
                          capture_output=True, text=True, check=False, timeout=120)
    size, speed = done.stdout.split()
    if done.returncode != 0 or int(size) != FILE_BYTES:
        raise RuntimeError(f"curl {url}: exit {done.returncode}, {size} bytes")
    return float(speed) / 2**20


def _rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB$", status, re.MULTILINE)
    return int(match[1]) * 1024 if match else 0


@contextmanager
def _peak_rss(pid: int) -> Iterator[Callable[[], int]]:
    """Samples ``pid``'s RSS every 20 ms while inside; yields a function returning the peak."""
    peak, done = _rss_bytes(pid), threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.wait(0.02):
            peak = max(peak, _rss_bytes(pid))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield lambda: peak
    finally:
        done.set()
        watcher.join()


def _measure(curl: str, wrk: str, url: str, args: argparse.Namespace) -> tuple[float, float]:
    curl_runs = [_curl_mib_s(curl, url) for _ in range(args.downloads)]
    result = run_wrk(wrk, url, connections=args.connections, duration_s=args.duration)
    if result.socket_errors or result.bad_status:
        raise RuntimeError(f"wrk {url}: {result.socket_errors} socket errors, {result.bad_status} bad statuses")
    return statistics.median(curl_runs), result.mib_per_s


def _check_same_bytes(direct: Server, mirror: Server, digest: str) -> None:
    for server, path in ((direct, f"/packages/{RELPATH}"), (mirror, f"{PREFIX}/packages/{RELPATH}")):
        status, _, body = fetch(server.port, path)
        if status != 200 or hashlib.sha256(body).hexdigest() != digest:
            raise RuntimeError(f"{server.name} answered {status} with other bytes for {path}")


def run(args: argparse.Namespace, curl: str, wrk: str, nginx: str, workdir: Path) -> int:
    data = os.urandom(FILE_BYTES)
    target = workdir / "upstream" / "packages" / RELPATH
    target.parent.mkdir(parents=True)
    target.write_bytes(data)
    confdir = workdir / "nginx"
    confdir.mkdir()
    nginx_port, mirror_port = free_port(), free_port()
    (confdir / "nginx.conf").write_text(_nginx_conf(confdir, nginx_port, workdir / "upstream"))
    config = _mirror_config(workdir, mirror_port, f"http://127.0.0.1:{nginx_port}/packages")
    with Servers(workdir) as servers:
        direct = servers.start("nginx-upstream", [nginx, "-c", str(confdir / "nginx.conf")], nginx_port, "/")
        mirror = servers.start("pypimirror-proxy", mirror_command(sys.executable, config), mirror_port,
                               f"{PREFIX}/simple/")
        _check_same_bytes(direct, mirror, hashlib.sha256(data).hexdigest())
        baseline = _rss_bytes(mirror.process.pid)
        rounds: dict[str, list[tuple[float, float]]] = {"direct": [], "proxy": []}
        with _peak_rss(mirror.process.pid) as peak:
            for number in range(args.rounds):
                order = [("direct", direct.url(f"/packages/{RELPATH}")),
                         ("proxy", mirror.url(f"{PREFIX}/packages/{RELPATH}"))]
                for name, url in order if number % 2 == 0 else reversed(order):
                    rounds[name].append(_measure(curl, wrk, url, args))
            growth_mib = (peak() - baseline) / 2**20
    figures = {name: Figures(statistics.median(c for c, _ in runs), statistics.median(w for _, w in runs))
               for name, runs in rounds.items()}
    return _report(figures, growth_mib, baseline / 2**20, args)


def _report(figures: dict[str, Figures], growth_mib: float, baseline_mib: float, args: argparse.Namespace) -> int:
    direct, proxy = figures["direct"], figures["proxy"]
    print(f"50 MiB file, medians of {args.rounds} rounds ({args.downloads} curl downloads, "
          f"wrk -c{args.connections} -d{args.duration}s per round)")
    print(f"{'':24}{'curl, 1 download':>20}{f'wrk, {args.connections} conns':>20}")
    for label, row in (("upstream directly", direct), ("through proxy mode", proxy)):
        print(f"{label:24}{row.curl_mib_s:>14.0f} MiB/s{row.wrk_mib_s:>14.0f} MiB/s")
    print(f"{'proxy / direct':24}{proxy.curl_mib_s / direct.curl_mib_s:>19.2f}x"
          f"{proxy.wrk_mib_s / direct.wrk_mib_s:>19.2f}x")
    print(f"mirror RSS: {baseline_mib:.0f} MiB before, peak growth {growth_mib:.1f} MiB while relaying")
    checks = [
        (f"single-download proxy MB/s >= {SPEED_TARGET}x direct", proxy.curl_mib_s >= SPEED_TARGET * direct.curl_mib_s),
        (f"peak RSS growth < {RSS_TARGET_MIB:.0f} MiB", growth_mib < RSS_TARGET_MIB),
    ]
    for label, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {label}")
    return 0 if all(ok for _, ok in checks) else 1


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round, 3 downloads, 3 s of wrk (about 20 s)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--downloads", type=int, default=5, help="curl downloads per round (default 5)")
    parser.add_argument("--connections", type=int, default=4, help="wrk connections (default 4)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, configs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.downloads, args.duration = 1, 3, 3
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    curl, wrk, nginx = shutil.which("curl"), find_wrk(), nginx_binary()
    if curl is None or wrk is None or nginx is None:
        print("needs curl, wrk and nginx (bench/serve.py can install the last two)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="pypimirror-bench-proxy-"))
    try:
        return run(args, curl, wrk, nginx, workdir)
    finally:
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    started = time.monotonic()
    status = main()
    print(f"({time.monotonic() - started:.0f} s)", file=sys.stderr)
    sys.exit(status)
