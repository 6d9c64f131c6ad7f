"""Sustained vote ingestion, on SQLite and on PostgreSQL: over HTTP, and into the writer alone.

Stage 1, over HTTP: wrk rotates over many distinct miss paths and ``X-Forwarded-For`` networks
(the mirror trusts 127.0.0.1 as a proxy), so no vote is a duplicate of an earlier one and each
becomes a row: the deduplication cannot hide the load, as it does in ``serve.py``'s one-URL
miss. For each database the script reports the 302 rate, the votes offered, dropped (queue
full) and stored, and checks that every vote the server accepted reached the database after its
SIGTERM drain. On a 2-vCPU machine this rate is bounded by CPU (the server, wrk's Lua script
and the database share two cores), not by the vote queue.

Stage 2, the writer alone: one thread offers distinct votes to a ``VoteRecorder`` with the
configured queue (1000 slots) at the serve benchmark's 302 rate, and at twice that, paced per
millisecond as a busy IOLoop would, for a few seconds; then the recorder is closed and the rows
are counted. This is the queue and database path at the rate the issue names, with no HTTP in
front to slow the offers down.

Targets: no dropped vote in either stage, every accepted vote stored; stage 2 at the serve
benchmark's 302 rate (``--serve-302-rps``; twice that is reported, not judged). PostgreSQL
needs a server on 127.0.0.1:5432 (user postgres, trust); the script makes a throwaway database
and drops it. Without one that column is skipped.
Exit status: 0 all targets met, 1 a target missed, 2 no wrk.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import timedelta
from contextlib import contextmanager
from functools import partial
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _serve_systems import Servers, fetch, free_port, mirror_command
from _wrk import find_wrk, run_wrk, wrk_version

from packaging.utils import NormalizedName

from pypimirror.config import VotesConfig
from pypimirror.db import Database
from pypimirror.pages import DistFile, ProjectPage, render_project_json, rewrite_file_url
from pypimirror.schema import votes
from pypimirror.storage import RepoLayout, atomic_write
from pypimirror.votes import VoteRecorder

logger = logging.getLogger(__name__)

PREFIX = "/pypi"
UPSTREAM = "http://127.0.0.1:9"  # discard port: a 302 never contacts it
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
_PATHS = 4096
_METRICS_LAG_S = 2.0
# Lua: each request gets the next (path, network) pair of its thread; threads interleave, so
# pairs never repeat within 4096 x 62,500 requests.
_REQUEST_SCRIPT = """
local paths = {%(paths)s}
local counter = 0
local stride = 1
local next_id = 0
setup = function(thread)
  thread:set("offset", next_id)
  next_id = next_id + 1
end
init = function(args)
  stride = tonumber(args[1]) or 1
end
request = function()
  local n = counter * stride + (offset or 0)
  counter = counter + 1
  local path = paths[(n %% #paths) + 1]
  local net = string.format("10.%%d.%%d.7", math.floor(n / 250) %% 250, n %% 250)
  return wrk.format("GET", path, {["X-Forwarded-For"] = net})
end
"""


@dataclass(frozen=True, slots=True)
class Outcome:
    """One database's run: wrk's figures and the vote counters."""

    database: str
    rps: float
    p99_ms: float
    requests: int
    bad_status: int
    socket_errors: int
    offered: float
    dropped: float
    stored_rows: int


def miss_paths(count: int) -> list[str]:
    """Valid package paths no tier holds, each a different file of the project ``votebench``."""
    return [
        f"{PREFIX}/packages/{i % 256:02x}/{i // 256 % 256:02x}/{i:060x}/votebench-1.{i}-py3-none-any.whl"
        for i in range(count)
    ]


def write_listing_page(repo: Path, paths: Sequence[str]) -> None:
    """The stored page of ``votebench`` listing every path, as a sync writes it: a vote counts
    only for a file a stored page lists."""
    files = tuple(
        DistFile(filename=path.rpartition("/")[2], url=f"{UPSTREAM}/packages/{path.removeprefix(PREFIX + '/packages/')}",
                 sha256="0" * 64, requires_python=None, size=1, upload_time=None, yanked=False,
                 core_metadata=False, provenance=None, version=None)
        for path in paths
    )
    page = ProjectPage(name=NormalizedName("votebench"), display_name="votebench", last_serial=1, files=files,
                       versions=())
    url_for = partial(rewrite_file_url, packages_url=f"{UPSTREAM}/packages", prefix=PREFIX)
    atomic_write(RepoLayout(repo).project_page(page.name, "index.v1_json"), render_project_json(page, url_for=url_for))


def request_script(paths: Sequence[str]) -> str:
    listed = ",".join(json.dumps(path) for path in paths)
    return _REQUEST_SCRIPT % {"paths": listed}


def write_config(root: Path, url: str, port: int, workers: int, queue_size: int) -> Path:
    config = {
        "listen": f"127.0.0.1:{port}",
        "repo_path": str(root / "repo"),
        "prefix": PREFIX,
        "shutdown_grace": "5s",
        "database": {"url": url},
        "upstream": {"pypi_url": UPSTREAM, "packages_url": f"{UPSTREAM}/packages"},
        "trusted_proxies": ["127.0.0.1/32"],
        "ip_modes": {"default": "302"},
        "cache": {"size_limit": "1g"},
        "votes": {"queue_size": queue_size},
        "serve": {"workers": workers},
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextmanager
def database_url(kind: str, root: Path) -> Iterator[str | None]:
    """A fresh database of ``kind``; None for PostgreSQL when no server answers."""
    if kind == "sqlite":
        yield f"sqlite:///{root / 'votes.db'}"
        return
    import psycopg

    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True)
    except psycopg.OperationalError as exc:
        logger.warning("PostgreSQL skipped: %s", " ".join(str(exc).split()))
        yield None
        return
    name = f"pypimirror_votebench_{uuid.uuid4().hex[:10]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield PG_URL.format(name=name)
        finally:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def metric(port: int, name: str) -> float:
    _, _, body = fetch(port, "/metrics")
    found = re.search(rf"^{name} (\S+)$", body.decode(), re.MULTILINE)
    return float(found[1]) if found else float("nan")


def count_rows(url: str) -> int:
    with Database(url, pool_size=1) as db, db.connect() as conn:
        return len(conn.execute(votes.select().with_only_columns(votes.c.ip_prefix)).all())


def measure(kind: str, args: argparse.Namespace, wrk: str, workdir: Path) -> Outcome | None:
    root = workdir / kind
    root.mkdir()
    with database_url(kind, root) as url:
        if url is None:
            return None
        Database.open(url).dispose()
        port = free_port()
        config = write_config(root, url, port, args.workers, args.queue_size)
        write_listing_page(root / "repo", miss_paths(_PATHS))
        with Servers(root) as servers:
            server = servers.start("mirror", mirror_command(sys.executable, config), port, "/healthz")
            result = run_wrk(wrk, server.url("/"), connections=args.connections, threads=args.threads,
                             duration_s=args.duration, script=request_script(miss_paths(_PATHS)),
                             script_args=[str(args.threads)])
            time.sleep(_METRICS_LAG_S)  # each process copies its vote counters into /metrics once a second
            offered = metric(port, "pypimirror_votes_offered_total")
            dropped = metric(port, "pypimirror_votes_dropped_total")
            servers.stop(server)  # SIGTERM: the queue drains into the database first
        return Outcome(kind, result.rps, result.p99_ms, result.requests, result.bad_status, result.socket_errors,
                       offered, dropped, count_rows(url))


@dataclass(frozen=True, slots=True)
class WriterOutcome:
    """Stage 2 for one database and rate: what was offered, at what pace, and what became rows."""

    database: str
    target_rate: float
    achieved_rate: float
    offered: int
    dropped: int
    stored_rows: int


def offer_at_rate(recorder: VoteRecorder, rate: float, duration_s: float, first: int) -> tuple[int, float]:
    """Offer distinct votes at ``rate`` per second for ``duration_s``, a millisecond's share at a
    time; returns how many were offered and the rate achieved."""
    offered = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < duration_s:
        due = int(elapsed * rate)
        while offered < due:
            n = first + offered
            recorder.offer(f"aa/bb/cc/writerbench{n % 4096}-1.0.tar.gz", f"10.{n // 250 % 250}.{n % 250}.0", None)
            offered += 1
        time.sleep(0.001)
    return offered, offered / (time.perf_counter() - started)


def measure_writer(kind: str, rates: Sequence[float], duration_s: float, workdir: Path) -> list[WriterOutcome]:
    """Stage 2 on a fresh database of ``kind``: one recorder per rate, each closed (drained) after."""
    root = workdir / f"writer-{kind}"
    root.mkdir()
    outcomes: list[WriterOutcome] = []
    with database_url(kind, root) as url:
        if url is None:
            return outcomes
        db = Database.open(url)
        try:
            first = 0
            for rate in rates:
                before = count_rows(url)
                recorder = VoteRecorder(db, dedup_window=timedelta(minutes=5), queue_size=VotesConfig().queue_size,
                                        bots=())
                recorder.start()
                offered, achieved = offer_at_rate(recorder, rate, duration_s, first)
                recorder.close()
                first += offered
                outcomes.append(WriterOutcome(kind, rate, achieved, offered, recorder.stats.dropped,
                                              count_rows(url) - before))
        finally:
            db.dispose()
    return outcomes


def report_writer(outcomes: Sequence[WriterOutcome], serve_302_rps: float) -> bool:
    print(f"\nwriter alone: {'database':<11}{'target/s':>10}{'achieved/s':>12}{'offered':>10}{'dropped':>9}"
          f"{'stored':>9}  target")
    ok = True
    for o in outcomes:
        judged = o.target_rate <= serve_302_rps
        passed = o.dropped == 0 and o.stored_rows == o.offered and o.achieved_rate >= 0.95 * o.target_rate
        ok &= passed or not judged
        verdict = ("PASS" if passed else "FAIL") if judged else ("ok" if passed else "drops (not judged)")
        print(f"              {o.database:<11}{o.target_rate:>10,.0f}{o.achieved_rate:>12,.0f}{o.offered:>10,}"
              f"{o.dropped:>9,}{o.stored_rows:>9,}  {verdict}")
    print(f"target: 0 dropped and every vote stored at the serve benchmark's 302 rate ({serve_302_rps:,.0f}/s), "
          f"queue of {VotesConfig().queue_size}")
    return ok


def report(outcomes: Sequence[Outcome], serve_302_rps: float) -> bool:
    print(f"{'database':<11}{'302 req/s':>11}{'p99 ms':>8}{'offered':>10}{'dropped':>9}{'stored':>9}  target")
    ok = True
    for o in outcomes:
        accepted = o.offered - o.dropped
        passed = o.dropped == 0 and o.stored_rows == accepted and o.bad_status == 0
        ok &= passed
        print(f"{o.database:<11}{o.rps:>11,.0f}{o.p99_ms:>8.1f}{o.offered:>10,.0f}{o.dropped:>9,.0f}"
              f"{o.stored_rows:>9,}  {'PASS' if passed else 'FAIL'}")
    print(f"target: 0 dropped and stored == accepted at the rate reached (for reference, the serve benchmark's "
          f"one-URL 302 rate is {serve_302_rps:,.0f} req/s)")
    return ok


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per database (default 10)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="serve.workers (default 2, as serve.py)")
    parser.add_argument("--queue-size", type=int, default=1000, help="votes.queue_size (default: the config default)")
    parser.add_argument("--serve-302-rps", type=float, default=4859.0,
                        help="the serve benchmark's 302 rate to sustain (default: docs/performance.md, 2 workers)")
    parser.add_argument("--writer-seconds", type=float, default=5.0, help="seconds per stage-2 rate (default 5)")
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    parser.add_argument("--json", type=Path, help="also save the raw figures here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    wrk = find_wrk()
    if wrk is None:
        print("wrk not found (apt-get install wrk)", file=sys.stderr)
        return 2
    print(f"{wrk_version(wrk)}, c{args.connections} t{args.threads} {args.duration}s, serve.workers {args.workers}, "
          f"votes.queue_size {args.queue_size}, {_PATHS} paths x 62,500 networks")
    kinds = [args.only] if args.only else ["sqlite", "postgresql"]
    outcomes: list[Outcome] = []
    writer_outcomes: list[WriterOutcome] = []
    rates = (args.serve_302_rps, 2 * args.serve_302_rps)
    with tempfile.TemporaryDirectory(prefix="pypimirror-votebench-") as scratch:
        for kind in kinds:
            outcome = measure(kind, args, wrk, Path(scratch))
            if outcome is not None:
                outcomes.append(outcome)
            writer_outcomes.extend(measure_writer(kind, rates, args.writer_seconds, Path(scratch)))
    ok = report(outcomes, args.serve_302_rps)
    ok &= report_writer(writer_outcomes, args.serve_302_rps)
    if args.json:
        figures = {"http": [asdict(o) for o in outcomes], "writer": [asdict(o) for o in writer_outcomes]}
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if ok and outcomes and writer_outcomes else 1

if __name__ == "__main__":
    sys.exit(main())
