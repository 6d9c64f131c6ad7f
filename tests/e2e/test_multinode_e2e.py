"""Several nodes on one PostgreSQL database, as real processes: global votes, one sync at a time,
and a database outage that costs no accepted vote and no request.

The topology is the one ``docs/deployment.md`` recommends for N nodes: one shared ``repo_path``
for the pages (NFS in production, one directory here), a ``cache.tiers`` directory per node,
and one database. Each test gets a throwaway database (``dbhelpers.postgres_database``) and is
skipped, with the reason, when no PostgreSQL answers on 127.0.0.1:5432.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path
from typing import Any

import psycopg
import pytest
from dbhelpers import PG_ADMIN, postgres_database
from fakeindex import FakeIndex
from mirrorprocess import PREFIX, request, run_cli, write_config

from pypimirror import queries as dbq
from pypimirror.db import Database
from pypimirror.queries import JobRun
from pypimirror.schema import votes

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

HOURLY = {"index_sync": "1h", "cache": "1h", "jitter": "0s", "run_on_start": True}
SERVING = r"serving https?://127\.0\.0\.1:(\d+)/"


@contextmanager
def mirror_process(args: list[str], log: Path, ready: str = SERVING) -> Iterator[tuple[subprocess.Popen[bytes], re.Match[str]]]:
    """``pypimirror ARGS`` in its own process, once ``ready`` is in its log; killed if left running."""
    with open(log, "wb") as stderr:
        process = subprocess.Popen([sys.executable, "-P", "-m", "pypimirror", *args], stderr=stderr)
    try:
        wait_until(lambda: process.poll() is None and re.search(ready, log.read_text()) is not None, what=ready)
        found = re.search(ready, log.read_text())
        assert found is not None
        yield process, found
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def terminate(process: subprocess.Popen[bytes], log: Path) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0, log.read_text()


def wait_until(condition: Callable[[], bool], timeout: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout}s"
        time.sleep(0.05)


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


def node_config(tmp_path: Path, fake: FakeIndex, pg_url: str, node: str, **overrides: Any) -> Path:
    """Node ``node``: the shared repo and database, a tier of its own, votes from X-Forwarded-For."""
    directory = tmp_path / node
    directory.mkdir(exist_ok=True)
    settings: dict[str, Any] = {
        "repo_path": str(tmp_path / "shared-repo"),
        "node_id": node,
        "database": {"url": pg_url},
        "cache": {"size_limit": None, "min_vote_count": 2, "tiers": [{"path": str(directory / "tier"), "size_limit": "1g"}]},
        "trusted_proxies": ["127.0.0.1/32"],
        "log": {"path": str(directory / "access.log")},
        "shutdown_grace": "5s",
        **overrides,
    }
    config: Path = write_config(directory, fake, **settings)
    return config


def job_runs(url: str) -> list[JobRun]:
    db = Database(url, pool_size=1)
    try:
        with db.connect() as conn:
            return list(reversed(dbq.latest_job_runs(conn, limit=1000)))
    finally:
        db.dispose()


def ok_runs(url: str, job: str) -> list[JobRun]:
    return [run for run in job_runs(url) if run.job == job and run.outcome == "ok"]


def wheel_path(fake: FakeIndex, project: str) -> str:
    dist = next(d for d in fake.files(project) if d.filename.endswith(".whl"))
    return dist.path.removeprefix("/packages/")


def metric(port: int, name: str) -> float:
    status, _, body = request(port, "/metrics")
    assert status == 200
    found = re.search(rf"^{name} (\S+)$", body.decode(), re.MULTILINE)
    assert found, f"{name} not in /metrics"
    return float(found[1])


def test_votes_from_two_nodes_count_toward_one_file_and_each_node_caches_into_its_own_tier(
    fake_index: FakeIndex, tmp_path: Path, pg_url: str
) -> None:
    fake_index.add_project("shared-hit", ["1.0"])
    fake_index.add_project("other", ["1.0"])
    hit = wheel_path(fake_index, "shared-hit")
    config_a = node_config(tmp_path, fake_index, pg_url, "node-a", schedule=HOURLY)
    config_b = node_config(tmp_path, fake_index, pg_url, "node-b")
    with mirror_process(["serve", "--with-scheduler", "-c", str(config_a)], tmp_path / "a.log") as (a, serving_a), \
         mirror_process(["serve", "-c", str(config_b)], tmp_path / "b.log") as (b, serving_b):
        port_a, port_b = int(serving_a[1]), int(serving_b[1])
        wait_until(lambda: len(ok_runs(pg_url, "index_sync")) == 1, what="node-a's index sync")
        # node-b never synced: it serves the pages node-a wrote into the shared repo.
        assert request(port_b, f"{PREFIX}/simple/shared-hit/")[0] == 200
        for port, network in ((port_a, "10.1.0.9"), (port_b, "10.2.0.9")):
            status, headers, _ = request(port, f"{PREFIX}/packages/{hit}", {"X-Forwarded-For": network})
            assert status == 302 and headers["location"] == f"{fake_index.packages_url}/{hit}"
        terminate(a, tmp_path / "a.log")
        terminate(b, tmp_path / "b.log")  # both drain their vote queues on the way out

    with Database(pg_url, pool_size=1) as db, db.connect() as conn:
        assert dbq.select_popular(conn, since=0, min_votes=2) == [(hit, 2)]
        assert dbq.select_popular(conn, since=0, min_votes=3) == []

    result = run_cli("sync", "--once", "-c", str(config_b))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "node-b" / "tier" / hit).is_file()
    assert not (tmp_path / "node-a" / "tier" / hit).exists()
    with Database(pg_url, pool_size=1) as db, db.connect() as conn:
        assert hit in dbq.load_local_files(conn, "node-b")
        assert hit not in dbq.load_local_files(conn, "node-a")


def test_two_schedulers_race_for_the_lease_and_index_syncs_never_overlap(
    fake_index: FakeIndex, tmp_path: Path, pg_url: str
) -> None:
    fake_index.add_many(5)
    fake_index.delay(re.compile(r"^/simple/$"), 0.6, times=None)  # each sync lasts long enough to collide
    schedule = {"index_sync": "1s", "cache": "1h", "jitter": "0s", "run_on_start": True}
    logs = [tmp_path / "x.log", tmp_path / "y.log"]
    configs = [node_config(tmp_path, fake_index, pg_url, node, schedule=schedule) for node in ("node-x", "node-y")]
    ready = r"scheduler: index_sync every"
    with mirror_process(["sync", "-c", str(configs[0])], logs[0], ready) as (x, _), \
         mirror_process(["sync", "-c", str(configs[1])], logs[1], ready) as (y, _):
        wait_until(lambda: len(ok_runs(pg_url, "index_sync")) >= 5, timeout=30, what="five index syncs")
        terminate(x, logs[0])
        terminate(y, logs[1])

    runs = job_runs(pg_url)
    ordered = sorted(runs, key=lambda run: run.started_at)
    for before, after in pairwise(ordered):  # every job of every node runs under the one lease
        assert before.finished_at is not None and before.finished_at <= after.started_at, (before, after)
    skipped = "".join(log.read_text() for log in logs).count("skipped: another sync holds the lease")
    assert skipped >= 1
    assert {run.node_id for run in runs if run.job == "index_sync"} <= {"node-x", "node-y"}


class _Traffic:
    """Misses (each from its own /24, so no vote is a duplicate) and page requests, in a thread."""

    def __init__(self, port: int, file_path: str) -> None:
        self.port, self.file_path = port, file_path
        self.redirects = self.pages = 0
        self.failures: list[str] = []
        self.during_outage = 0
        self.in_outage = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            network = f"10.{n // 250 % 250}.{n % 250}.7"
            status, _, _ = request(self.port, f"{PREFIX}/packages/{self.file_path}", {"X-Forwarded-For": network})
            self._count(status, 302, "miss")
            if n % 10 == 0:
                self._count(request(self.port, f"{PREFIX}/simple/steady/")[0], 200, "page")

    def _count(self, status: int, expected: int, what: str) -> None:
        if status != expected:
            self.failures.append(f"{what}: {status}")
        elif what == "miss":
            self.redirects += 1
            self.during_outage += self.in_outage
        else:
            self.pages += 1


def block_database(url: str, blocked: bool) -> None:
    """Refuse (or allow again) new connections to the test's database and, when blocking, cut
    every open one: what clients see of a stopped server, without touching anyone else's database."""
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"false" if blocked else "true"}')
        if blocked:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )


def test_database_outage_loses_no_accepted_vote_and_serving_never_stops(
    fake_index: FakeIndex, tmp_path: Path, pg_url: str
) -> None:
    fake_index.add_project("steady", ["1.0"])
    config = node_config(tmp_path, fake_index, pg_url, "node-a", votes={"queue_size": 100_000})
    assert run_cli("sync", "--once", "-c", str(config)).returncode == 0
    log = tmp_path / "serve.log"
    with mirror_process(["serve", "-c", str(config)], log) as (process, serving):
        port = int(serving[1])
        with _Traffic(port, wheel_path(fake_index, "steady")) as traffic:
            wait_until(lambda: traffic.redirects >= 200, what="traffic before the outage")
            try:
                block_database(pg_url, True)
                traffic.in_outage = True
                wait_until(lambda: "cannot record votes" in log.read_text(), timeout=5, what="the writer seeing the outage")
                time.sleep(2)
            finally:
                traffic.in_outage = False
                block_database(pg_url, False)
            before = traffic.redirects
            wait_until(lambda: traffic.redirects >= before + 200, what="traffic after the outage")
        wait_until(lambda: metric(port, "pypimirror_vote_queue_depth") == 0, timeout=15, what="the queue drained")
        dropped = metric(port, "pypimirror_votes_dropped_total")
        terminate(process, log)

    assert traffic.failures == []
    assert traffic.during_outage > 50 and traffic.pages > 0
    assert dropped == 0
    with Database(pg_url, pool_size=1) as db, db.connect() as conn:
        stored = conn.execute(votes.select().with_only_columns(votes.c.ip_prefix)).all()
    assert len(stored) == traffic.redirects
    text = log.read_text()
    assert "recording votes again after" in text and "Traceback" not in text
