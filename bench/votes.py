"""Sustained vote ingestion: 302 misses that each carry a new vote, on SQLite and on PostgreSQL.

wrk rotates over many distinct miss paths and ``X-Forwarded-For`` networks (the mirror trusts
127.0.0.1 as a proxy), so no vote is a duplicate of an earlier one and each becomes a row:
the deduplication cannot hide the load, as it does in ``serve.py``'s one-URL miss. For each
database the script reports the 302 rate, the votes offered, dropped (queue full) and stored,
and checks that every vote the server accepted reached the database after its SIGTERM drain.

Target: no dropped vote at this rate (at least the serve benchmark's 302 rate, ~3-5k req/s on
the project machine). PostgreSQL needs a server on 127.0.0.1:5432 (user postgres, trust);
the script makes a throwaway database and drops it. Without one that column is skipped.
Exit status: 0 all targets met, 1 a target missed, 2 no wrk.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _serve_systems import Servers, fetch, free_port, mirror_command
from _wrk import _DONE_HOOK, WrkResult, _parse_output, find_wrk, wrk_version

from pypimirror.db import Database
from pypimirror.schema import votes

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
    """Valid package paths no tier holds, each a different file."""
    return [
        f"{PREFIX}/packages/{i % 256:02x}/{i // 256 % 256:02x}/{i:060x}/votebench{i}-1.0-py3-none-any.whl"
        for i in range(count)
    ]


def request_script(paths: Sequence[str]) -> str:
    listed = ",".join(json.dumps(path) for path in paths)
    return _REQUEST_SCRIPT % {"paths": listed} + _DONE_HOOK


def run_wrk_script(wrk: str, url: str, script: Path, *, connections: int, threads: int, duration_s: int) -> WrkResult:
    argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", "--timeout", "30s", "-s", str(script), url,
            "--", str(threads)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=duration_s + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited {done.returncode}: {done.stderr.strip()}")
    return _parse_output(done.stdout, url)


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
        script = root / "votes.lua"
        script.write_text(request_script(miss_paths(_PATHS)))
        with Servers(root) as servers:
            server = servers.start("mirror", mirror_command(sys.executable, config), port, "/healthz")
            result = run_wrk_script(wrk, server.url("/"), script, connections=args.connections,
                                    threads=args.threads, duration_s=args.duration)
            time.sleep(_METRICS_LAG_S)  # each process copies its vote counters into /metrics once a second
            offered = metric(port, "pypimirror_votes_offered_total")
            dropped = metric(port, "pypimirror_votes_dropped_total")
            servers.stop(server)  # SIGTERM: the queue drains into the database first
        return Outcome(kind, result.rps, result.p99_ms, result.requests, result.bad_status, result.socket_errors,
                       offered, dropped, count_rows(url))


def report(outcomes: Sequence[Outcome], serve_302_rps: float) -> bool:
    print(f"{'database':<11}{'302 req/s':>11}{'p99 ms':>8}{'offered':>10}{'dropped':>9}{'stored':>9}  target")
    ok = True
    for o in outcomes:
        accepted = o.offered - o.dropped
        passed = o.dropped == 0 and o.stored_rows == accepted and o.bad_status == 0 and o.rps >= serve_302_rps
        ok &= passed
        print(f"{o.database:<11}{o.rps:>11,.0f}{o.p99_ms:>8.1f}{o.offered:>10,.0f}{o.dropped:>9,.0f}"
              f"{o.stored_rows:>9,}  {'PASS' if passed else 'FAIL'}")
    print(f"target: 0 dropped, stored == accepted, at >= {serve_302_rps:,.0f} req/s (the serve benchmark's 302 rate)")
    return ok


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per database (default 10)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="serve.workers (default 2, as serve.py)")
    parser.add_argument("--queue-size", type=int, default=1000, help="votes.queue_size (default: the config default)")
    parser.add_argument("--serve-302-rps", type=float, default=4825.0,
                        help="the serve benchmark's 302 rate to sustain (default: docs/performance.md, 2 workers)")
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
    with tempfile.TemporaryDirectory(prefix="pypimirror-votebench-") as scratch:
        for kind in kinds:
            outcome = measure(kind, args, wrk, Path(scratch))
            if outcome is not None:
                outcomes.append(outcome)
    ok = report(outcomes, args.serve_302_rps)
    if args.json:
        args.json.write_text(json.dumps([asdict(o) for o in outcomes], indent=2))
    return 0 if ok and outcomes else 1


if __name__ == "__main__":
    sys.exit(main())
