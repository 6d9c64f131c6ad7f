"""Run wrk once and get exact figures back, not its rounded text.

wrk prints Transfer/sec to three significant digits and hides the error counts in prose, so
each run loads a tiny Lua ``done()`` hook that prints one JSON line with the raw totals
(requests, bytes, duration, errors, latency percentiles). Like wrk's own Transfer/sec, the
byte total includes responses still in flight when the run stops, which is what makes MB/s
the meaningful figure for large files.
"""

from __future__ import annotations

__all__ = ["WrkResult", "find_wrk", "run_wrk", "wrk_version"]

import json
import logging
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

_MARKER = "WRKJSON "
_DONE_HOOK = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,"connect":%.0f,"read":%.0f,'
    .. '"write":%.0f,"status":%.0f,"timeout":%.0f,"p50_us":%.0f,"p99_us":%.0f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""
# A run may overrun its -d by the slowest response; past this we call it hung.
_GRACE_S = 60.0


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One wrk run. ``bad_status`` counts responses outside 2xx/3xx; ``socket_errors`` the rest."""

    requests: int
    duration_s: float
    bytes: int
    socket_errors: int
    bad_status: int
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s

    @property
    def mib_per_s(self) -> float:
        """MiB/s, the unit wrk's Transfer/sec calls MB/s."""
        return self.bytes / self.duration_s / 2**20


def find_wrk() -> str | None:
    return shutil.which("wrk")


def wrk_version(wrk: str) -> str:
    """``wrk 4.1.0`` from the first line of ``--version`` (wrk exits 1 after printing it)."""
    done = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
    first = ((done.stdout or done.stderr).split() or ["wrk", "unknown"])[:2]
    return f"wrk {first[1].removeprefix('debian/')}"


def run_wrk(
    wrk: str,
    url: str,
    *,
    connections: int,
    duration_s: int,
    threads: int = 2,
    headers: Mapping[str, str] | None = None,
    pin: Sequence[str] = (),
    script: str = "",
    script_args: Sequence[str] = (),
) -> WrkResult:
    """Load ``url`` for ``duration_s`` seconds and return the totals; raises RuntimeError if wrk fails.

    ``pin`` prefixes the command (a CPU pin, as :func:`_serve_systems.pinned_to` makes).
    ``script`` is Lua run before the totals hook (``request()``, ``init(args)``, ...), and
    ``script_args`` reach its ``init``."""
    with tempfile.TemporaryDirectory(prefix="pypimirror-wrk-") as scratch:
        hook = Path(scratch) / "script.lua"
        hook.write_text(script + _DONE_HOOK)
        argv = [
            *pin,
            wrk,
            f"-t{min(threads, connections)}",
            f"-c{connections}",
            f"-d{duration_s}s",
            "--timeout",
            "30s",
            "-s",
            str(hook),
        ]
        for name, value in (headers or {}).items():
            argv += ["-H", f"{name}: {value}"]
        argv.append(url)
        if script_args:
            argv += ["--", *script_args]
        done = subprocess.run(
            argv, capture_output=True, text=True, check=False, timeout=duration_s + _GRACE_S
        )
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited {done.returncode} for {url}: {done.stderr.strip()}")
    return _parse_output(done.stdout, url)


def run_wrk_at_once(
    wrk: str,
    urls: Mapping[str, str],
    *,
    connections: int,
    duration_s: int,
    headers: Mapping[str, str] | None = None,
    pin: Sequence[str] = (),
) -> dict[str, WrkResult]:
    """Load each of ``urls`` (by name) with its own one-thread wrk, all at the same moment.

    The paired benchmarks put two servers on one CPU and load both at once: whatever else the
    machine does hits both alike, and the ratio of their req/s is the inverse ratio of their
    CPU cost per request. Raises RuntimeError naming a server that answered with errors.
    """
    with ThreadPoolExecutor(max_workers=len(urls)) as pool:
        runs = {
            name: pool.submit(run_wrk, wrk, url, connections=connections, duration_s=duration_s, threads=1,
                              headers=headers, pin=pin)
            for name, url in urls.items()
        }
        results = {name: run.result() for name, run in runs.items()}
    for name, result in results.items():
        if result.bad_status or result.socket_errors:
            raise RuntimeError(f"{name} answered {urls[name]} badly: {result}")
    return results


def _parse_output(stdout: str, url: str) -> WrkResult:
    """The result from the hook's JSON line; raises RuntimeError when wrk printed none."""
    for line in stdout.splitlines():
        if line.startswith(_MARKER):
            raw = json.loads(line[len(_MARKER) :])
            return WrkResult(
                requests=int(raw["requests"]),
                duration_s=raw["duration_us"] / 1e6,
                bytes=int(raw["bytes"]),
                socket_errors=int(raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]),
                bad_status=int(raw["status"]),
                p50_ms=raw["p50_us"] / 1000,
                p99_ms=raw["p99_us"] / 1000,
            )
    raise RuntimeError(f"wrk printed no summary for {url}: {stdout.strip()[-300:]!r}")
