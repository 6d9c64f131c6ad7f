"""Benchmark (not a test): does the server keep answering quickly while its scheduler syncs?

The real ``pypimirror serve --with-scheduler`` runs as a subprocess on a repo that already
holds N projects (``sync --once`` put them there). Every project then gets a new serial
upstream, so the scheduler's first pass re-fetches all N in the server's own process, while
a client here asks for index pages (project pages, HTML and PEP 691 JSON alternately, and now
and then the root page) at a steady rate over a few keep-alive connections. The latency of
those requests is reported for a quiet server (the same server without the scheduler) and
for the time the sync runs, against the target: p99 under 100 ms during the sync.

The fake upstream (``tests/fakeindex.py``) runs in a child process of its own, so neither it
nor the client competes with the other for one interpreter lock; only 127.0.0.1 is contacted.

Run: ``.venv/bin/python bench/responsiveness.py [--projects 2000] [--rate 100] [--json FILE]``.
"""

from __future__ import annotations

__all__: list[str] = []

import argparse
import http.client
import json
import logging
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the fake upstream lives with the tests

logger = logging.getLogger(__name__)

TARGET_P99_MS = 100.0
PREFIX = "/pypi"
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
CONNECTIONS = 4
QUIET_SECONDS = 10.0
_SERVING = re.compile(r"serving http://127\.0\.0\.1:(\d+)/")


# --------------------------------------------------------------------------------------------
# the fake upstream, in a child process steered over stdin/stdout


def fake_child(projects: int) -> None:
    """Serve N projects; on the line ``bump`` give every one a new serial; stop at end of input."""
    from fakeindex import FakeIndex

    with FakeIndex() as fake:
        names = [project.name for project in fake.add_many(projects)]
        print(fake.url, flush=True)
        for line in sys.stdin:
            if line.strip() == "bump":
                for name in names:
                    fake.bump(name)
                print("bumped", flush=True)


@dataclass
class FakeUpstream:
    process: subprocess.Popen[str]
    url: str

    @classmethod
    def start(cls, projects: int) -> FakeUpstream:
        process = subprocess.Popen(
            [sys.executable, __file__, "--child-fake", str(projects)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert process.stdout is not None
        return cls(process, process.stdout.readline().strip())

    def bump_all(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("bump\n")
        self.process.stdin.flush()
        if self.process.stdout.readline().strip() != "bumped":
            raise RuntimeError("the fake upstream did not bump its projects")

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


# --------------------------------------------------------------------------------------------
# the mirror


def write_config(work: Path, upstream: str, concurrency: int) -> Path:
    config = {
        "listen": "127.0.0.1:0",
        "repo_path": str(work / "repo"),
        "prefix": PREFIX,
        "upstream": {"pypi_url": upstream, "packages_url": upstream + "/packages"},
        "cache": {"size_limit": "1g"},
        "sync": {"concurrent_downloads": concurrency},
        "schedule": {"index_sync": "1h", "cache": "1h", "jitter": "0s", "run_on_start": True},
        "shutdown_grace": "10s",
    }
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    log: Path
    port: int

    @classmethod
    def start(cls, config: Path, log: Path, *, with_scheduler: bool) -> Server:
        args = ["serve", "-c", str(config)] + (["--with-scheduler"] if with_scheduler else [])
        with open(log, "wb") as stderr:
            process = subprocess.Popen([sys.executable, "-P", "-m", "pypimirror", *args], stderr=stderr)
        deadline = time.monotonic() + 30
        while not (serving := _SERVING.search(log.read_text())):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
        return cls(process, log, int(serving[1]))

    def wait_for(self, marker: str, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while marker not in self.log.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{marker!r} not logged:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.02)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        if self.process.wait(timeout=60) != 0:
            raise RuntimeError(f"the server exited {self.process.returncode}:\n{self.log.read_text()[-3000:]}")


# --------------------------------------------------------------------------------------------
# the client


@dataclass
class Sample:
    at: float  # time.time() when the request was sent
    ms: float
    status: int


@dataclass
class Load:
    """``rate`` requests/s spread over CONNECTIONS keep-alive connections, each paced on its own."""

    port: int
    projects: int
    rate: float
    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for index in range(CONNECTIONS):
            thread = threading.Thread(target=self._run, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _run(self, index: int) -> None:
        rng = random.Random(index)
        interval = CONNECTIONS / self.rate
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        due = time.monotonic() + rng.random() * interval
        count = 0
        while not self._stop.is_set():
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            due += interval
            path, headers = self._pick(rng, count)
            count += 1
            sent_at, started = time.time(), time.perf_counter()
            try:
                connection.request("GET", path, headers=headers)
                response = connection.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as exc:
                self.errors.append(f"{path}: {exc!r}")
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                continue
            self.samples.append(Sample(sent_at, (time.perf_counter() - started) * 1000, status))
        connection.close()

    def _pick(self, rng: random.Random, count: int) -> tuple[str, dict[str, str]]:
        if count % 20 == 19:
            return f"{PREFIX}/simple/", {}
        name = f"proj-{rng.randrange(self.projects):04d}"
        accept = {"Accept": SIMPLE_JSON} if count % 2 else {}
        return f"{PREFIX}/simple/{name}/", accept


def summarize(samples: list[Sample]) -> dict[str, Any]:
    latencies = sorted(sample.ms for sample in samples)
    if len(latencies) < 2:
        return {"requests": len(latencies)}
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "requests": len(latencies),
        "not_200": sum(1 for sample in samples if sample.status != 200),
        "p50_ms": round(quantiles[49], 2),
        "p90_ms": round(quantiles[89], 2),
        "p99_ms": round(quantiles[98], 2),
        "max_ms": round(latencies[-1], 2),
    }


# --------------------------------------------------------------------------------------------
# the run


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ", re.MULTILINE)


def log_time(log: str, marker: str) -> float:
    """When the first line containing ``marker`` was logged (the log's local time, to the ms)."""
    line = next(line for line in log.splitlines() if marker in line)
    match = _LOG_TIME.match(line)
    if match is None:
        raise RuntimeError(f"no time stamp in {line!r}")
    return time.mktime(time.strptime(match[1], "%Y-%m-%d %H:%M:%S")) + int(match[2]) / 1000


def measure_sync(config: Path, upstream: FakeUpstream, projects: int, rate: float, log: Path) -> dict[str, Any]:
    """Bump every project, start the server with its scheduler, and time requests during its sync."""
    upstream.bump_all()
    print(f"server with scheduler: requests while it re-fetches {projects} projects ...", flush=True)
    server = Server.start(config, log, with_scheduler=True)
    load = Load(server.port, projects, rate)
    load.start()
    server.wait_for("index sync: done")
    load.stop()
    server.stop()
    text = server.log.read_text()
    begin, end = log_time(text, "index sync: upstream lists"), log_time(text, "index sync: done")
    fetched = int(re.search(r"index sync: done: .*fetched=(\d+)", text)[1])  # type: ignore[index]
    during = [sample for sample in load.samples if begin <= sample.at <= end]
    return summarize(during) | {"errors": len(load.errors), "sync_seconds": round(end - begin, 2), "fetched": fetched}


def run(projects: int, rate: float, concurrency: int, runs: int, work: Path) -> dict[str, Any]:
    upstream = FakeUpstream.start(projects)
    try:
        config = write_config(work, upstream.url, concurrency)
        print(f"syncing {projects} projects into {work / 'repo'} ...", flush=True)
        once = subprocess.run([sys.executable, "-P", "-m", "pypimirror", "sync", "--once", "-c", str(config)],
                              check=False, capture_output=True, text=True, timeout=1800)
        if once.returncode != 0:
            raise RuntimeError(f"sync --once exited {once.returncode}:\n{once.stderr[-3000:]}")

        print(f"quiet server: {QUIET_SECONDS:.0f} s of requests at {rate:.0f}/s ...", flush=True)
        server = Server.start(config, work / "quiet.log", with_scheduler=False)
        load = Load(server.port, projects, rate)
        load.start()
        time.sleep(QUIET_SECONDS)
        load.stop()
        server.stop()
        quiet = summarize(load.samples) | {"errors": len(load.errors)}

        busy_runs = [measure_sync(config, upstream, projects, rate, work / f"busy-{n}.log") for n in range(runs)]
        return {
            "projects": projects,
            "rate_per_s": rate,
            "connections": CONNECTIONS,
            "sync_concurrency": concurrency,
            "quiet": quiet,
            "during_sync": busy_runs,
        }
    finally:
        upstream.stop()


def report(figures: dict[str, Any]) -> bool:
    quiet, busy = figures["quiet"], figures["during_sync"]
    print(f"\nindex-page requests at {figures['rate_per_s']:.0f}/s over {figures['connections']} connections, "
          f"sync.concurrent_downloads={figures['sync_concurrency']}:")
    print(f"{'':16}{'sync s':>8}{'requests':>9}{'not 200':>9}{'errors':>8}"
          f"{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    rows = [("quiet", quiet)] + [(f"during sync {n + 1}", row) for n, row in enumerate(busy)]
    for label, row in rows:
        sync = f"{row['sync_seconds']:.1f}" if "sync_seconds" in row else "-"
        print(f"{label:16}{sync:>8}{row['requests']:>9}{row.get('not_200', 0):>9}{row['errors']:>8}"
              f"{row.get('p50_ms', 0):>9}{row.get('p90_ms', 0):>9}{row.get('p99_ms', 0):>9}{row.get('max_ms', 0):>9}")
    p99 = statistics.median(row.get("p99_ms", float("inf")) for row in busy)
    ok = p99 < TARGET_P99_MS and all(row["errors"] == 0 and row.get("not_200") == 0 for row in busy)
    verdict = "PASS" if ok else "FAIL"
    print(f"\ntarget: p99 < {TARGET_P99_MS:.0f} ms during the sync (median of runs: {p99} ms), every request 200: {verdict}")
    return ok


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--projects", type=int, default=2000, help="projects re-fetched during the measurement")
    parser.add_argument("--rate", type=float, default=100.0, help="index-page requests per second (default 100)")
    parser.add_argument("--concurrency", type=int, default=4, help="sync.concurrent_downloads (default 4)")
    parser.add_argument("--runs", type=int, default=3, help="syncs measured; the verdict uses the median p99 (default 3)")
    parser.add_argument("--json", type=Path, help="also write the raw figures to this file")
    parser.add_argument("--child-fake", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.child_fake is not None:
        fake_child(args.child_fake)
        return 0
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="pypimirror-bench-") as work:
        figures = run(args.projects, args.rate, args.concurrency, args.runs, Path(work))
    figures["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    ok = report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
