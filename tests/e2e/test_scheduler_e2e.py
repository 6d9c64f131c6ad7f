"""The embedded scheduler as operators run it: ``serve --with-scheduler``, ``sync`` and ``sync --once``
as real processes on one repo, against the fake upstream; the job history tells who ran when."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from fakeindex import FakeIndex
from mirrorprocess import PREFIX, request, run_cli, write_config

from pypimirror import queries as dbq
from pypimirror.db import Database
from pypimirror.errors import DatabaseError
from pypimirror.queries import SYNC_LEASE as LEASE_NAME
from pypimirror.queries import JobRun, Lease
from pypimirror.storage import TEMP_MARKER

pytestmark = pytest.mark.e2e

EVERY_2S = {"index_sync": "2s", "cache": "2s", "jitter": "0s", "run_on_start": True}
HOURLY = {"index_sync": "1h", "cache": "1h", "jitter": "0s", "run_on_start": True}


def mirror_config(tmp_path: Path, fake: FakeIndex, schedule: dict[str, Any]) -> Path:
    path: Path = write_config(tmp_path, fake, schedule=schedule, sync={"concurrent_downloads": 4}, shutdown_grace="5s")
    return path


@contextmanager
def mirror_process(
    args: list[str], stderr_path: Path, ready: str = r"serving https?://127\.0\.0\.1:(\d+)/"
) -> Iterator[tuple[subprocess.Popen[bytes], re.Match[str]]]:
    """``pypimirror ARGS`` in its own process, once its log shows ``ready``; killed if left running."""
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen([sys.executable, "-P", "-m", "pypimirror", *args], stderr=stderr)
    try:
        yield process, wait_for_log(process, stderr_path, ready)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_for_log(process: subprocess.Popen[bytes], stderr_path: Path, pattern: str, timeout: float = 20) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, stderr_path.read_text())
        if found:
            return found
        assert process.poll() is None, stderr_path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{pattern!r} not logged in time: {stderr_path.read_text()}")


def terminate(process: subprocess.Popen[bytes], stderr_path: Path) -> float:
    """SIGTERM; asserts a clean exit and returns how long it took."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0, stderr_path.read_text()
    return time.monotonic() - started


def read_db(tmp_path: Path) -> tuple[list[JobRun], Lease | None]:
    """Every job run, oldest first, and the sync lease as stored."""
    db = Database(f"sqlite:///{tmp_path / 'repo' / 'pypi-mirror.db'}")
    try:
        with db.connect() as conn:
            return list(reversed(dbq.latest_job_runs(conn, limit=1000))), dbq.read_lease(conn, LEASE_NAME)
    finally:
        db.dispose()


def wait_until(condition: Callable[[], bool], timeout: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout}s"
        time.sleep(0.1)


def read_db_when_ready(tmp_path: Path) -> tuple[list[JobRun], Lease | None]:
    """:func:`read_db`, or nothing while the process under test has not created the database yet."""
    if not (tmp_path / "repo" / "pypi-mirror.db").exists():
        return [], None
    try:
        return read_db(tmp_path)
    except DatabaseError as exc:  # the file exists, its tables not yet
        assert "no such table" in str(exc), exc
        return [], None


def ok_runs(tmp_path: Path, job: str) -> list[JobRun]:
    return [run for run in read_db_when_ready(tmp_path)[0] if run.job == job and run.outcome == "ok"]


def lease_holder(tmp_path: Path) -> str | None:
    _, lease = read_db_when_ready(tmp_path)
    return None if lease is None or lease.expires_at < time.time() else lease.holder


def assert_never_concurrent(runs: list[JobRun]) -> None:
    """No two runs (any job, any process) were ever under way at the same time."""
    ordered = sorted(runs, key=lambda run: run.started_at)
    for before, after in pairwise(ordered):
        assert before.finished_at is not None, before
        assert before.finished_at <= after.started_at, (before, after)


def serve_args(config: Path) -> list[str]:
    return ["serve", "--with-scheduler", "-c", str(config)]


# -- serve --with-scheduler -------------------------------------------------------------------------


def test_serve_with_scheduler_syncs_by_itself_and_repeats_on_schedule_without_overlap(
    fake_index: FakeIndex, tmp_path: Path
) -> None:
    fake_index.add_many(10)
    config = mirror_config(tmp_path, fake_index, EVERY_2S)
    log = tmp_path / "serve.log"
    with mirror_process(serve_args(config), log) as (process, serving):
        port = int(serving[1])
        wait_until(lambda: len(ok_runs(tmp_path, "index_sync")) >= 1, what="the first index sync")
        assert request(port, f"{PREFIX}/simple/proj-0003/")[0] == 200
        fake_index.add_project("late-comer")
        wait_until(lambda: request(port, f"{PREFIX}/simple/late-comer/")[0] == 200, what="the late project")
        wait_until(lambda: len(ok_runs(tmp_path, "index_sync")) >= 4, what="four index syncs")
        terminate(process, log)
    runs, lease = read_db(tmp_path)
    assert lease is None
    assert_never_concurrent(runs)
    starts = [run.started_at for run in runs if run.job == "index_sync"]
    assert all(1.5 < later - earlier < 4 for earlier, later in pairwise(starts[1:])), starts
    assert {run.job for run in runs} == {"index_sync", "advisories", "cache"}  # the first pass runs every job
    assert "Traceback" not in log.read_text()


def test_sync_once_beside_the_scheduler_exits_3_or_waits_and_never_runs_concurrently(
    fake_index: FakeIndex, tmp_path: Path
) -> None:
    fake_index.add_many(40)
    # The scheduler's first pass holds the lease, stuck on the upstream, until the waiting
    # `sync --once` says it waits: however slow the machine, the lease is held when both ask.
    fake_index.hold("/simple/proj-")
    config = mirror_config(tmp_path, fake_index, EVERY_2S)
    log = tmp_path / "serve.log"
    with mirror_process(serve_args(config), log) as (process, _):
        wait_until(lambda: f"/{process.pid}/index_sync" in (lease_holder(tmp_path) or ""), what="the server's lease")
        refused = run_cli("sync", "--once", "-c", str(config))
        assert refused.returncode == 3, refused.stderr
        assert refused.stderr.splitlines()[-1].startswith(
            f"pypimirror: error: another sync holds the lease: {lease_holder(tmp_path) or ''}"[:60]
        ), refused.stderr
        assert "Traceback" not in refused.stderr
        waited_log = tmp_path / "waited.log"
        with waited_log.open("w") as stderr:
            waited = subprocess.Popen(
                [sys.executable, "-P", "-m", "pypimirror", "sync", "--once", "--wait", "-c", str(config)],
                stdout=subprocess.DEVNULL, stderr=stderr,
            )
        try:
            wait_until(lambda: "waiting for it to be released" in waited_log.read_text(), timeout=60,
                       what="the waiting sync's message")
            fake_index.let_go()
            assert waited.wait(timeout=120) == 0, waited_log.read_text()
        finally:
            if waited.poll() is None:
                waited.kill()
                waited.wait()
        terminate(process, log)
    runs, lease = read_db(tmp_path)
    assert lease is None
    assert_never_concurrent(runs)
    assert len({run.id for run in runs if run.job == "index_sync" and run.outcome == "ok"}) >= 2
    first = next(run for run in runs if run.job == "index_sync")
    assert first.counts["fetched"] == 40  # the server's pass; the waiting sync found nothing left


def test_a_killed_lease_holder_is_taken_over_and_the_next_run_proceeds(fake_index: FakeIndex, tmp_path: Path) -> None:
    fake_index.add_many(40)
    fake_index.delay("/simple/proj-", 0.4, times=None)
    config = mirror_config(tmp_path, fake_index, HOURLY)
    once = subprocess.Popen([sys.executable, "-P", "-m", "pypimirror", "sync", "--once", "-c", str(config)],
                            stderr=subprocess.DEVNULL)
    try:
        # The lease is taken first and the run recorded just after: kill it once both are stored.
        wait_until(
            lambda: f"/{once.pid}/index_sync" in (lease_holder(tmp_path) or "")
            and any(run.job == "index_sync" for run in read_db_when_ready(tmp_path)[0]),
            what="the sync's lease and its run",
        )
    finally:
        once.kill()
        once.wait()
    fake_index.clear_faults()
    log = tmp_path / "serve.log"
    with mirror_process(serve_args(config), log) as (process, _):
        wait_until(lambda: len(ok_runs(tmp_path, "index_sync")) >= 1, what="the next index sync")
        terminate(process, log)
    assert re.search(rf"taking over the sync lease of \S+/{once.pid}/index_sync, whose process is gone", log.read_text())
    runs, lease = read_db(tmp_path)
    killed, resumed = [run for run in runs if run.job == "index_sync"][:2]
    assert killed.finished_at is None and resumed.outcome == "ok"
    assert lease is None
    assert len(list((tmp_path / "repo" / "simple").glob("proj-*/index.v1_json"))) == 40


def test_sigterm_during_a_scheduled_sync_stops_within_the_grace_period_and_the_next_start_resumes(
    fake_index: FakeIndex, tmp_path: Path
) -> None:
    fake_index.add_many(60)
    fake_index.delay("/simple/proj-", 0.5, times=None)  # 60 projects, 4 at a time: ~7.5 s
    config = mirror_config(tmp_path, fake_index, HOURLY)
    log = tmp_path / "serve.log"
    with mirror_process(serve_args(config), log) as (process, _):
        wait_until(lambda: lease_holder(tmp_path) is not None, what="the scheduled sync")
        time.sleep(1.5)
        took = terminate(process, log)
    assert took < 5 + 2, f"stopping took {took:.1f}s with a 5 s grace period"
    text = log.read_text()
    assert "scheduler: stopping; waiting for 1 job run(s) to reach a safe point" in text
    assert "Traceback" not in text
    runs, lease = read_db(tmp_path)
    assert lease is None
    assert [(run.job, run.outcome) for run in runs] == [("index_sync", "interrupted")]
    fetched_before = int(runs[0].counts["fetched"])
    assert 0 < fetched_before < 60
    assert [p for p in (tmp_path / "repo").rglob("*") if TEMP_MARKER in p.name] == []

    fake_index.clear_faults()
    with mirror_process(serve_args(config), log) as (process, _):
        wait_until(lambda: len(ok_runs(tmp_path, "cache")) >= 1, what="the resumed pass")
        terminate(process, log)
    resumed = ok_runs(tmp_path, "index_sync")[0]
    assert resumed.counts["fetched"] == 60 - fetched_before
    assert len(list((tmp_path / "repo" / "simple").glob("proj-*/index.v1_json"))) == 60


def test_the_server_keeps_answering_while_a_sync_runs_in_the_same_process(
    fake_index: FakeIndex, tmp_path: Path
) -> None:
    fake_index.add_many(300)
    config = mirror_config(tmp_path, fake_index, HOURLY)
    assert run_cli("sync", "--once", "-c", str(config)).returncode == 0
    for index in range(300):
        fake_index.bump(f"proj-{index:04d}")
    fake_index.delay("/simple/proj-", 0.05, times=None)  # the in-process sync of 300 takes ~4 s
    log = tmp_path / "serve.log"
    answered: list[int] = []
    with mirror_process(serve_args(config), log) as (process, serving):
        port = int(serving[1])
        wait_until(lambda: lease_holder(tmp_path) is not None, what="the scheduled sync")
        index = 0
        while lease_holder(tmp_path) is not None:
            for path in (f"{PREFIX}/simple/proj-{index % 300:04d}/", f"{PREFIX}/simple/"):
                answered.append(request(port, path)[0])
            index += 1
        terminate(process, log)
    assert len(answered) >= 20 and set(answered) == {200}, answered
    synced = ok_runs(tmp_path, "index_sync")[-1]
    assert synced.counts["fetched"] == 300


# -- pypimirror sync (foreground scheduler) and status -----------------------------------------------


def test_sync_without_once_runs_the_scheduler_in_the_foreground_until_sigterm(
    fake_index: FakeIndex, tmp_path: Path
) -> None:
    fake_index.add_many(5)
    config = mirror_config(tmp_path, fake_index, EVERY_2S)
    log = tmp_path / "sync.log"
    with mirror_process(["sync", "-c", str(config)], log, ready="sync scheduler running") as (process, _):
        wait_until(lambda: len(ok_runs(tmp_path, "index_sync")) >= 2 and len(ok_runs(tmp_path, "cache")) >= 1,
                   what="scheduled runs")
        status = run_cli("status", "-c", str(config))
        terminate(process, log)
    assert "stopped" in log.read_text()
    assert status.returncode == 0, status.stderr
    out = status.stdout
    assert re.search(r"index_sync:\n    last run:      ok in [\d.]+s, started ", out), out
    assert "cache:" in out and "listed=5" in out
    assert re.search(r"tier 0 \S+/repo/packages: 0 B of 1\.0 GiB \(0\.0 %\), 0 files", out), out
    assert re.search(r"sync lease: (free|held by \S+/\d+/(index_sync|cache) since)", out), out


def test_status_without_a_database_is_one_line_and_creates_nothing(fake_index: FakeIndex, tmp_path: Path) -> None:
    config = mirror_config(tmp_path, fake_index, HOURLY)
    (tmp_path / "repo").mkdir()
    result = run_cli("status", "-c", str(config))
    assert result.returncode == 2
    assert result.stderr.startswith("pypimirror: error: cannot open database ")
    assert "no such file" in result.stderr and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "repo" / "pypi-mirror.db").exists()


@pytest.mark.parametrize("flag", ["--wait", "--dry-run"])
def test_sync_flags_that_need_once_are_refused_without_it(fake_index: FakeIndex, tmp_path: Path, flag: str) -> None:
    config = mirror_config(tmp_path, fake_index, HOURLY)
    result = run_cli("sync", flag, "-c", str(config))
    assert result.returncode == 2
    assert "--wait and --dry-run need --once" in result.stderr
