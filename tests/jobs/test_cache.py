"""Cache management end to end: index sync against the fake upstream, votes, then run_cache.

Real parts throughout: the fake upstream on 127.0.0.1, libcurl, SQLite files and tier
directories (one on /dev/shm where that is another filesystem), a subprocess killed with
SIGKILL in the middle of its downloads.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from fakedists import BuiltDist
from fakeindex import FakeIndex
from readonly import read_only
from pypimirror.jobs.cache import CacheReport, format_plan, run_cache
from pypimirror.jobs.index_sync import run_index_sync
from tornado.httpclient import AsyncHTTPClient

from pypimirror import queries as dbq
from pypimirror.config import Config
from pypimirror.configreader import parse_config
from pypimirror.db import Database
from pypimirror.queries import Vote
from pypimirror.storage import TEMP_MARKER
from pypimirror.upstream import UpstreamClient, UpstreamSettings

PAYLOAD = 20_000
DAY = 86_400


async def no_sleep(_seconds: float) -> None:
    """Back-off without waiting."""


def config_data(tmp_path: Path, fake: FakeIndex, tiers: list[tuple[Path, int]], **cache: Any) -> dict[str, Any]:
    return {
        "repo_path": str(tmp_path / "repo"),
        "prefix": "/pypi",
        "node_id": "node-a",
        "upstream": {"pypi_url": fake.pypi_url, "packages_url": fake.packages_url},
        "cache": {"tiers": [{"path": str(p), "size_limit": n} for p, n in tiers], **cache},
        "sync": {"concurrent_downloads": 4, "retry": 2},
    }


def relpath(dist: BuiltDist) -> str:
    return dist.path.removeprefix("/packages/")


def wheel(fake: FakeIndex, name: str) -> BuiltDist:
    return next(d for d in fake.files(name) if d.filename.endswith(".whl"))


def cost(dist: BuiltDist) -> int:
    """What a cached wheel costs its tier: the wheel and its metadata file."""
    return dist.size + len(dist.metadata or b"")


def files_in(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def tier_total(root: Path) -> int:
    return sum(files_in(root).values())


class Mirror:
    """One mirror under test: its config (tiers changeable), database and upstream client."""

    def __init__(self, tmp_path: Path, fake: FakeIndex, db: Database) -> None:
        self.tmp_path, self.fake, self.db = tmp_path, fake, db
        self.tiers = [(tmp_path / "t0", 10**9), (tmp_path / "t1", 10**9)]
        self.cache: dict[str, Any] = {}
        self.client = UpstreamClient(
            UpstreamSettings(user_agent="pypimirror-test", proxy=None, connect_timeout=5, stall_timeout=5, attempts=2),
            sleep=no_sleep,
        )

    @property
    def config(self) -> Config:
        return parse_config(config_data(self.tmp_path, self.fake, self.tiers, **self.cache), base_dir=self.tmp_path)

    @property
    def roots(self) -> list[Path]:
        return [root for root, _ in self.tiers]

    async def sync_index(self) -> None:
        report = await run_index_sync(self.config, self.db, self.client, sleep=no_sleep)
        assert report.errors == 0

    async def vote(self, dist: BuiltDist | str, networks: int, at: float | None = None) -> None:
        path = dist if isinstance(dist, str) else relpath(dist)
        when = int(time.time() if at is None else at)
        votes = [Vote(path, f"10.0.{i}.0", when) for i in range(networks)]
        await self.db.run(lambda conn: dbq.record_votes(conn, votes, dedup_window_s=300))

    async def run(self, **kwargs: Any) -> CacheReport:
        return await run_cache(self.config, self.db, self.client, **kwargs)

    async def rows(self) -> dict[str, tuple[int, int]]:
        return await self.db.run_read(lambda conn: dbq.load_local_files(conn, "node-a"))

    async def assert_rows_match_disk(self) -> None:
        on_disk = {path: (size, t) for t, root in enumerate(self.roots) for path, size in files_in(root).items()}
        assert await self.rows() == on_disk


@pytest.fixture
def mirror(tmp_path: Path, fake_index: FakeIndex, database: Database, curl_client: AsyncHTTPClient) -> Mirror:
    for name in ("alpha", "beta", "gamma"):
        fake_index.add_project(name, ["1.0"], sdist=False, payload_size=PAYLOAD)
    return Mirror(tmp_path, fake_index, database)


# -- popular files, verified, in the right tiers --------------------------------------------


@pytest.mark.gen_test(timeout=30)
async def test_popular_files_are_downloaded_verified_into_the_tiers_by_votes(mirror: Mirror) -> None:
    mirror.cache = {"policy": "seed"}  # the seed's rule, whatever the default policy is
    alpha, beta, gamma = (wheel(mirror.fake, n) for n in ("alpha", "beta", "gamma"))
    mirror.tiers = [(mirror.tmp_path / "t0", cost(alpha) + 100), (mirror.tmp_path / "t1", 10**9)]
    await mirror.sync_index()
    await mirror.vote(alpha, 3)
    await mirror.vote(beta, 2)
    await mirror.vote(gamma, 1)  # below min_vote_count (2)
    report = await mirror.run()

    t0, t1 = mirror.roots
    assert hashlib.sha256((t0 / relpath(alpha)).read_bytes()).hexdigest() == alpha.sha256
    assert (t0 / (relpath(alpha) + ".metadata")).read_bytes() == alpha.metadata
    assert hashlib.sha256((t1 / relpath(beta)).read_bytes()).hexdigest() == beta.sha256
    assert not (t0 / relpath(gamma)).exists() and not (t1 / relpath(gamma)).exists()
    assert report.ok
    counts = report.counts()
    assert (counts["downloaded"], counts["downloaded_bytes"]) == (2, cost(alpha) + cost(beta))
    assert (counts["tier0_bytes"], counts["tier1_bytes"]) == (cost(alpha), cost(beta))
    assert (counts["tier0_files"], counts["tier1_files"]) == (1, 1)
    assert counts["head_requests"] == 2  # the metadata sizes, which pages do not give
    await mirror.assert_rows_match_disk()
    assert "downloaded 2" in report.summary()

    # A second run has nothing to do, and the metadata sizes come from the database.
    mirror.fake.reset_log()
    again = await mirror.run()
    assert again.counts()["downloaded"] == 0 and again.counts()["moved"] == 0
    assert mirror.fake.requests == []


@pytest.mark.gen_test(timeout=30)
async def test_downloaded_file_gets_the_upstream_last_modified_as_mtime(mirror: Mirror) -> None:
    alpha = wheel(mirror.fake, "alpha")
    await mirror.sync_index()
    await mirror.vote(alpha, 2)
    await mirror.run()
    upload = mirror.fake.release("alpha", "1.0").upload_time
    expected = upload.replace(microsecond=0).timestamp() - time.timezone  # naive UTC datetime
    assert (mirror.roots[0] / relpath(alpha)).stat().st_mtime == expected


@pytest.mark.gen_test(timeout=30)
async def test_many_requests_from_one_network_never_make_a_file_popular(mirror: Mirror) -> None:
    mirror.cache = {"policy": "seed"}  # the seed's rule, whatever the default policy is
    alpha = wheel(mirror.fake, "alpha")
    await mirror.sync_index()
    now = int(time.time())
    for minutes_ago in (0, 10, 20, 30):  # each outside the 5-minute dedup window: 4 rows
        await mirror.vote(alpha, 1, at=now - 60 * minutes_ago)
    report = await mirror.run()
    assert report.counts()["popular"] == 0
    assert files_in(mirror.roots[0]) == {}


@pytest.mark.gen_test(timeout=30)
async def test_corrupted_upstream_body_is_discarded_and_counted(mirror: Mirror) -> None:
    alpha = wheel(mirror.fake, "alpha")
    await mirror.sync_index()
    await mirror.vote(alpha, 2)
    mirror.fake.corrupt_next(alpha.path, times=None)
    report = await mirror.run()
    assert (report.counts()["download_errors"], report.counts()["integrity_errors"]) == (1, 1)
    assert files_in(mirror.roots[0]) == {}
    await mirror.assert_rows_match_disk()


@pytest.mark.gen_test(timeout=30)
async def test_truncated_upstream_body_is_discarded_and_counted(mirror: Mirror) -> None:
    alpha = wheel(mirror.fake, "alpha")
    await mirror.sync_index()
    await mirror.vote(alpha, 2)
    mirror.fake.truncate_next(alpha.path, at_bytes=5000, times=None)
    report = await mirror.run()
    assert report.counts()["download_errors"] == 1
    assert files_in(mirror.roots[0]) == {}


@pytest.mark.gen_test(timeout=30)
async def test_bad_metadata_is_dropped_but_the_verified_wheel_kept(mirror: Mirror) -> None:
    alpha = wheel(mirror.fake, "alpha")
    await mirror.sync_index()
    await mirror.vote(alpha, 2)
    mirror.fake.corrupt_next(alpha.path + ".metadata", times=None)
    report = await mirror.run()
    assert files_in(mirror.roots[0]) == {relpath(alpha): alpha.size}
    assert report.counts()["metadata_errors"] == 1
    await mirror.assert_rows_match_disk()


@pytest.mark.gen_test(timeout=30)
async def test_popular_path_no_page_lists_costs_no_upstream_request(mirror: Mirror) -> None:
    await mirror.sync_index()
    bogus = f"ab/cd/{'0' * 60}/alpha-9.9-py3-none-any.whl"
    await mirror.vote(bogus, 5)
    mirror.fake.reset_log()
    report = await mirror.run()
    assert report.counts()["unlisted"] == 1
    assert mirror.fake.requests == []


# -- budgets ---------------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=30)
async def test_shrinking_budgets_demote_and_evict_and_no_tier_ends_over(mirror: Mirror) -> None:
    alpha, beta, gamma = (wheel(mirror.fake, n) for n in ("alpha", "beta", "gamma"))
    await mirror.sync_index()
    await mirror.vote(alpha, 4)
    await mirror.vote(beta, 3)
    await mirror.vote(gamma, 2)
    await mirror.run()
    t0, t1 = mirror.roots
    assert len(files_in(t0)) == 6  # three wheels with their metadata
    mirror.tiers = [(t0, cost(alpha) + 10), (t1, cost(beta) + 10)]
    report = await mirror.run()
    assert set(files_in(t0)) == {relpath(alpha), relpath(alpha) + ".metadata"}
    assert set(files_in(t1)) == {relpath(beta), relpath(beta) + ".metadata"}
    assert (report.counts()["moved"], report.counts()["evicted"]) == (1, 1)
    for root, limit in mirror.tiers:
        assert tier_total(root) <= limit
    await mirror.assert_rows_match_disk()
    assert not (t0 / relpath(gamma)).parent.exists()  # its emptied hash directory is pruned
    mirror.tiers = [(t0, 0), (t1, 0)]
    await mirror.run()
    assert tier_total(t0) == tier_total(t1) == 0


@pytest.mark.gen_test(timeout=30)
async def test_error_threshold_stops_downloads_but_evictions_still_happen(mirror: Mirror) -> None:
    alpha, beta, gamma = (wheel(mirror.fake, n) for n in ("alpha", "beta", "gamma"))
    mirror.cache = {"min_vote_count": 1}
    await mirror.sync_index()
    await mirror.vote(gamma, 1)
    await mirror.run()
    assert relpath(gamma) in files_in(mirror.roots[0])
    mirror.tiers = [(mirror.roots[0], cost(alpha) + cost(beta)), (mirror.roots[1], 0)]
    await mirror.vote(alpha, 3)
    await mirror.vote(beta, 2)
    mirror.fake.fail_next(alpha.path, status=404, times=None)
    mirror.fake.fail_next(beta.path, status=404, times=None)
    data = config_data(mirror.tmp_path, mirror.fake, mirror.tiers, min_vote_count=1)
    data["sync"].update(download_error_threshold=1, concurrent_downloads=1)
    config = parse_config(data, base_dir=mirror.tmp_path)
    report = await run_cache(config, mirror.db, mirror.client)
    counts = report.counts()
    assert (counts["evicted"], counts["download_errors"], counts["skipped_downloads"]) == (1, 1, 1)
    assert not report.ok
    assert mirror.fake.count_requests(beta.path, method="GET") == 0
    assert "download error threshold reached" in report.summary()


# -- tiers that cannot be written ----------------------------------------------------------------


def temp_files(*roots: Path) -> list[Path]:
    return [path for root in roots for path in root.rglob("*") if TEMP_MARKER in path.name]


@pytest.mark.gen_test(timeout=30)
async def test_a_tier_that_cannot_be_written_is_reported_and_skipped_while_the_others_work_goes_on(
    mirror: Mirror, caplog: pytest.LogCaptureFixture
) -> None:
    alpha, beta = wheel(mirror.fake, "alpha"), wheel(mirror.fake, "beta")
    t0, t1 = mirror.roots
    mirror.tiers[0] = (t0, cost(alpha) + 10)  # alpha goes to tier 0, beta to tier 1
    await mirror.sync_index()
    await mirror.vote(alpha, 3)
    await mirror.vote(beta, 2)
    t1.mkdir()
    with read_only(t1):
        report = await mirror.run()
    assert files_in(t0) == {relpath(alpha): alpha.size, relpath(alpha) + ".metadata": len(alpha.metadata or b"")}
    assert files_in(t1) == {}
    assert list(report.unwritable) == [1] and str(t1) in report.unwritable[1]
    counts = report.counts()
    assert (counts["downloaded"], counts["unwritable_tiers"], counts["skipped_unwritable"]) == (1, 1, 1)
    assert counts["download_errors"] == 0
    assert not report.ok and not report.interrupted
    assert report.failure_reason is not None and report.failure_reason.startswith("tier 1 not writable")
    assert "tier 1 not writable, skipped" in report.summary()
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR" and "tier 1" in r.getMessage()] != []
    assert all(record.exc_info is None for record in caplog.records)
    assert temp_files(t0, t1) == []
    await mirror.assert_rows_match_disk()

    report = await mirror.run()  # writable again: the skipped work is done
    assert report.ok and report.counts()["downloaded"] == 1
    assert relpath(beta) in files_in(t1)


@pytest.mark.gen_test(timeout=30)
async def test_a_download_whose_directory_cannot_be_made_is_counted_and_the_other_downloads_go_on(
    mirror: Mirror,
) -> None:
    alpha, beta = wheel(mirror.fake, "alpha"), wheel(mirror.fake, "beta")
    t0 = mirror.roots[0]
    blocked, other = relpath(alpha).split("/")[0], relpath(beta).split("/")[0]
    assert blocked != other
    await mirror.sync_index()
    await mirror.vote(alpha, 3)
    await mirror.vote(beta, 2)
    t0.mkdir()
    (t0 / blocked).write_bytes(b"a file where alpha's directory must go")
    report = await mirror.run()
    counts = report.counts()
    assert (counts["downloaded"], counts["download_errors"]) == (1, 1)
    assert relpath(beta) in files_in(t0) and relpath(alpha) not in files_in(t0)
    assert report.unwritable == {}  # the tier itself takes files
    assert temp_files(t0) == []
    assert set(await mirror.rows()) == {relpath(beta), relpath(beta) + ".metadata"}


# -- cached files changed on disk -----------------------------------------------------------------


def flip_a_byte(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
@pytest.mark.gen_test(timeout=30)
async def test_a_cached_file_changed_on_disk_is_evicted_counted_and_downloaded_again(
    damage: str, mirror: Mirror, caplog: pytest.LogCaptureFixture
) -> None:
    alpha = wheel(mirror.fake, "alpha")
    await mirror.sync_index()
    await mirror.vote(alpha, 2)
    await mirror.run()
    cached = mirror.roots[0] / relpath(alpha)
    if damage == "truncated":
        cached.write_bytes(alpha.content[:-100])
    else:
        flip_a_byte(cached, len(alpha.content) // 2)
    mirror.fake.reset_log()
    report = await mirror.run()
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == alpha.sha256  # downloaded again, intact
    counts = report.counts()
    mismatch = "size_mismatches" if damage == "truncated" else "hash_mismatches"
    assert (counts[mismatch], counts["corrupt_evicted"], counts["downloaded"]) == (1, 1, 1)
    assert "1 cached files differed from their pages (1 evicted)" in report.summary()
    assert mirror.fake.count_requests(re.compile(re.escape(alpha.path) + "$"), method="GET") == 1
    assert any(r.levelname == "ERROR" and relpath(alpha) in r.getMessage() for r in caplog.records)
    await mirror.assert_rows_match_disk()
    assert (await mirror.rows())[relpath(alpha)] == (alpha.size, 0)


@pytest.mark.gen_test(timeout=30)
async def test_each_run_rehashes_the_least_recently_checked_slice_so_the_whole_cache_is_covered(mirror: Mirror) -> None:
    dists = sorted((wheel(mirror.fake, n) for n in ("alpha", "beta", "gamma")), key=relpath)
    mirror.cache = {"verify_bytes_per_run": max(d.size for d in dists)}  # one file per run
    await mirror.sync_index()
    for dist in dists:
        await mirror.vote(dist, 2)
    start = time.time()
    await mirror.run(clock=lambda: start)  # downloads all three: each counts as just checked
    last = mirror.roots[0] / relpath(dists[-1])
    flip_a_byte(last, 10)
    intact = []
    for hour in (1, 2, 3):
        report = await mirror.run(clock=lambda: start + hour * 3600)
        intact.append(hashlib.sha256(last.read_bytes()).hexdigest() == dists[-1].sha256)
        assert report.counts()["verified"] == 1
    assert intact == [False, False, True]  # the third run reached the damaged file and replaced it


@pytest.mark.gen_test(timeout=30)
async def test_verify_bytes_per_run_0_checks_sizes_only(mirror: Mirror) -> None:
    alpha = wheel(mirror.fake, "alpha")
    mirror.cache = {"verify_bytes_per_run": 0}
    await mirror.sync_index()
    await mirror.vote(alpha, 2)
    await mirror.run()
    flip_a_byte(mirror.roots[0] / relpath(alpha), 10)
    report = await mirror.run()
    assert (report.counts()["verified"], report.counts()["hash_mismatches"]) == (0, 0)


# -- phase A: the disk wins ---------------------------------------------------------------------


@pytest.mark.gen_test(timeout=30)
async def test_inventory_cleans_temp_duplicates_strays_and_stale_rows(mirror: Mirror, caplog: pytest.LogCaptureFixture) -> None:
    alpha, beta = wheel(mirror.fake, "alpha"), wheel(mirror.fake, "beta")
    t0, t1 = mirror.roots
    mirror.tiers[0] = (t0, alpha.size)  # room for alpha only, the one with votes
    await mirror.vote(alpha, 2)
    for root, dist in ((t0, alpha), (t1, alpha), (t1, beta)):
        (root / relpath(dist)).parent.mkdir(parents=True, exist_ok=True)
        (root / relpath(dist)).write_bytes(dist.content)
    temp = t0 / relpath(beta).replace(beta.filename, f".{beta.filename}{TEMP_MARKER}x")
    temp.parent.mkdir(parents=True)
    temp.write_bytes(b"partial")
    stray = t0 / (relpath(beta) + ".metadata")
    stray.write_bytes(b"lost")
    foreign = t1 / "README"
    foreign.write_text("operator notes")
    await mirror.db.run(lambda conn: dbq.upsert_local_files(conn, "node-a", [
        (relpath(alpha), 1, 1), ("ab/cd/ef/gone-1.0.tar.gz", 9, 0),
    ]))
    report = await mirror.run()
    counts = report.counts()
    assert (counts["temp_removed"], counts["duplicates_removed"], counts["orphans_removed"]) == (1, 1, 1)
    assert (counts["rows_updated"], counts["rows_removed"]) == (2, 1)
    assert files_in(t0) == {relpath(alpha): alpha.size}
    assert files_in(t1) == {relpath(beta): beta.size, "README": foreign.stat().st_size}
    assert "left alone 1 entries that are not package files, e.g. 'README'" in caplog.text
    await mirror.db.run(lambda conn: dbq.delete_local_files(conn, "node-a", []))
    assert await mirror.rows() == {relpath(alpha): (alpha.size, 0), relpath(beta): (beta.size, 1)}


@pytest.mark.gen_test(timeout=30)
async def test_dry_run_plans_but_changes_nothing(mirror: Mirror) -> None:
    alpha = wheel(mirror.fake, "alpha")
    await mirror.sync_index()
    await mirror.vote(alpha, 2)
    await mirror.vote("ab/cd/ef/old-1.0.tar.gz", 2, at=time.time() - 30 * DAY)
    temp = mirror.roots[0] / "ab" / f".x{TEMP_MARKER}1"
    temp.parent.mkdir(parents=True)
    temp.write_bytes(b"partial")
    await mirror.db.run(lambda conn: dbq.upsert_local_files(conn, "node-a", [("ab/cd/ef/gone-1.0.tar.gz", 9, 0)]))
    mirror.fake.reset_log()
    report = await mirror.run(dry_run=True)
    assert report.plan is not None
    assert [d.file.path for d in report.plan.downloads] == [relpath(alpha)]
    assert f"download {relpath(alpha)} to tier 0" in format_plan(report.plan)
    assert temp.exists()
    assert files_in(mirror.roots[0]) == {f"ab/.x{TEMP_MARKER}1": 7}
    assert await mirror.rows() == {"ab/cd/ef/gone-1.0.tar.gz": (9, 0)}
    assert await mirror.db.run_read(lambda conn: dbq.select_popular(conn, 0, 1)) == [
        (relpath(alpha), 2), ("ab/cd/ef/old-1.0.tar.gz", 2)
    ]
    assert mirror.fake.count_requests("/packages/", method="GET") == 0
    assert report.counts()["downloaded"] == 0 and "(dry run)" in report.summary()


@pytest.mark.gen_test(timeout=30)
async def test_cleanup_forgets_votes_outside_the_window(mirror: Mirror) -> None:
    mirror.cache = {"policy": "seed"}  # the seed's rule, whatever the default policy is
    await mirror.sync_index()
    await mirror.vote("ab/cd/ef/old-1.0.tar.gz", 3, at=time.time() - 8 * DAY)
    await mirror.vote("ab/cd/ef/new-1.0.tar.gz", 1)
    report = await mirror.run()
    assert report.counts()["votes_deleted"] == 3
    assert await mirror.db.run_read(lambda conn: dbq.select_popular(conn, 0, 1)) == [("ab/cd/ef/new-1.0.tar.gz", 1)]


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize(("policy", "fetched", "deleted"), [("seed", False, 2), ("default", True, 0)])
async def test_the_policy_s_window_decides_which_votes_count_and_stay(
    mirror: Mirror, policy: str, fetched: bool, deleted: int
) -> None:
    # Votes 20 days old: outside vote_window (7d), inside score_window (30d), which only the
    # default policy counts in; the cleanup keeps exactly what the policy counts.
    alpha = wheel(mirror.fake, "alpha")
    await mirror.sync_index()
    await mirror.vote(alpha, 2, at=time.time() - 20 * DAY)
    mirror.cache = {"policy": policy}
    report = await mirror.run()
    assert (relpath(alpha) in files_in(mirror.roots[0])) is fetched
    assert report.counts()["votes_deleted"] == deleted


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize(("policy", "kept"), [("seed", "beta"), ("default", "alpha")])
async def test_the_default_policy_counts_every_vote_the_seed_distinct_networks(
    mirror: Mirror, policy: str, kept: str
) -> None:
    # Room for one wheel (alpha and beta cost about the same). One network asked for alpha on
    # three days, two networks for beta once each: the seed counts 1 network against 2, the
    # default policy 3 votes against 2.
    alpha, beta = wheel(mirror.fake, "alpha"), wheel(mirror.fake, "beta")
    mirror.tiers = [(mirror.roots[0], max(cost(alpha), cost(beta))), (mirror.roots[1], 0)]
    await mirror.sync_index()
    for days in (3, 2, 1):
        await mirror.vote(alpha, 1, at=time.time() - days * DAY)
    await mirror.vote(beta, 2)
    mirror.cache = {"policy": policy, "min_vote_count": 1}
    await mirror.run()
    cached = {p for p in files_in(mirror.roots[0]) if p.endswith(".whl")}
    assert cached == {relpath(wheel(mirror.fake, kept))}


@pytest.mark.gen_test(timeout=30)
async def test_stop_before_the_run_changes_nothing_and_reports_interrupted(mirror: Mirror) -> None:
    alpha = wheel(mirror.fake, "alpha")
    await mirror.sync_index()
    await mirror.vote(alpha, 2)
    stop = asyncio.Event()
    stop.set()
    report = await mirror.run(stop=stop)
    assert report.interrupted and not report.ok
    assert files_in(mirror.roots[0]) == {}


# -- across filesystems -------------------------------------------------------------------------


@pytest.fixture
def shm_tier(tmp_path: Path) -> Iterator[Path]:
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        pytest.skip("/dev/shm is absent or not writable: cannot put a tier on another filesystem")
    if shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("/dev/shm is on the same filesystem as the test directory: no cross-device move")
    root = shm / f"pypimirror-test-{os.getpid()}-{tmp_path.name}"
    yield root
    subprocess.run(["rm", "-rf", str(root)], check=True)


@pytest.mark.gen_test(timeout=30)
async def test_promotion_and_demotion_cross_filesystems_intact(mirror: Mirror, shm_tier: Path) -> None:
    alpha, beta = wheel(mirror.fake, "alpha"), wheel(mirror.fake, "beta")
    disk = mirror.tmp_path / "t1"
    mirror.tiers = [(shm_tier, cost(alpha) + 10), (disk, 10**9)]
    await mirror.sync_index()
    await mirror.vote(alpha, 3)
    await mirror.vote(beta, 2)
    await mirror.run()
    assert set(files_in(shm_tier)) == {relpath(alpha), relpath(alpha) + ".metadata"}
    mtime = (shm_tier / relpath(alpha)).stat().st_mtime
    await mirror.vote(beta, 4)  # beta now has 6 networks, alpha 3: they swap places
    report = await mirror.run()
    assert report.counts()["moved"] == 2
    assert set(files_in(shm_tier)) == {relpath(beta), relpath(beta) + ".metadata"}
    assert hashlib.sha256((disk / relpath(alpha)).read_bytes()).hexdigest() == alpha.sha256
    assert (disk / (relpath(alpha) + ".metadata")).read_bytes() == alpha.metadata
    assert hashlib.sha256((shm_tier / relpath(beta)).read_bytes()).hexdigest() == beta.sha256
    assert (disk / relpath(alpha)).stat().st_mtime == mtime
    assert not [p for root in mirror.roots for p in files_in(root) if TEMP_MARKER in p]
    await mirror.assert_rows_match_disk()


# -- kill -9 in the middle of downloads ----------------------------------------------------------

KILLED_RUN = """
import asyncio, json, sys
from pypimirror.configreader import parse_config
from pypimirror.db import Database
from pypimirror.jobs.cache import run_cache
from pypimirror.upstream import UpstreamClient, UpstreamSettings, configure_curl_client

async def main():
    configure_curl_client(max_clients=4)
    config = parse_config(json.loads(sys.argv[1]))
    db = Database.open(config.database.url)
    settings = UpstreamSettings(user_agent="t", proxy=None, connect_timeout=5, stall_timeout=60)
    await run_cache(config, db, UpstreamClient(settings))

asyncio.run(main())
"""


@pytest.mark.gen_test(timeout=40)
async def test_kill_9_during_downloads_leaves_no_visible_partial_file(mirror: Mirror) -> None:
    alpha, beta = wheel(mirror.fake, "alpha"), wheel(mirror.fake, "beta")
    await mirror.sync_index()
    await mirror.vote(alpha, 2)
    await mirror.vote(beta, 2)
    for dist in (alpha, beta):  # hold the wheels' GETs, not the HEADs of their metadata
        mirror.fake.delay(re.compile(re.escape(dist.path) + "$"), 30)
    data = config_data(mirror.tmp_path, mirror.fake, mirror.tiers)
    child = await asyncio.create_subprocess_exec(sys.executable, "-P", "-c", KILLED_RUN, json.dumps(data), cwd=mirror.tmp_path)
    t0 = mirror.roots[0]
    try:
        deadline = time.monotonic() + 20
        while len([p for p in files_in(t0) if TEMP_MARKER in p]) < 2:
            assert child.returncode is None, "the run ended before it was killed"
            assert time.monotonic() < deadline, "no download started"
            await asyncio.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    assert not (t0 / relpath(alpha)).exists() and not (t0 / relpath(beta)).exists()
    mirror.fake.clear_faults()
    report = await mirror.run()
    assert report.counts()["temp_removed"] == 2
    assert files_in(t0) == {
        relpath(alpha): alpha.size, relpath(alpha) + ".metadata": len(alpha.metadata or b""),
        relpath(beta): beta.size, relpath(beta) + ".metadata": len(beta.metadata or b""),
    }
    await mirror.assert_rows_match_disk()


# -- release prefetch (policy default) -------------------------------------------------------


def wheel_of(mirror: Mirror, name: str, version: str) -> BuiltDist:
    return next(d for d in mirror.fake.release(name, version).files if d.filename.endswith(".whl"))


def uploaded_now() -> datetime:
    """Now, as the fake upstream takes upload times (naive UTC)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


async def publish(mirror: Mirror, name: str, version: str, *, sdist: bool = True) -> None:
    """Upload ``version`` now and sync it into the stored pages."""
    mirror.fake.add_release(name, version, sdist=sdist, payload_size=PAYLOAD, upload_time=uploaded_now())
    await mirror.sync_index()


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("policy", ["default", "seed"])
async def test_the_new_release_of_a_cached_file_is_fetched_at_the_next_run_by_default_only(
    mirror: Mirror, policy: str
) -> None:
    mirror.cache = {"policy": policy}
    old = wheel_of(mirror, "alpha", "1.0")
    await mirror.sync_index()
    await mirror.vote(old, 3)
    await mirror.run()
    t0 = mirror.roots[0]
    assert relpath(old) in files_in(t0)

    await publish(mirror, "alpha", "2.0")
    new = wheel_of(mirror, "alpha", "2.0")
    sdist = next(d for d in mirror.fake.release("alpha", "2.0").files if d.filename.endswith(".tar.gz"))
    report = await mirror.run()

    assert report.ok
    if policy == "default":
        assert report.counts()["successors"] == 1
        assert hashlib.sha256((t0 / relpath(new)).read_bytes()).hexdigest() == new.sha256
        assert (t0 / (relpath(new) + ".metadata")).read_bytes() == new.metadata
        assert report.counts()["downloaded"] == 1
    else:
        assert report.counts()["successors"] == 0
        assert relpath(new) not in files_in(t0)
    assert relpath(sdist) not in files_in(t0)  # the cached file was a wheel: its successor is the wheel
    await mirror.assert_rows_match_disk()


@pytest.mark.gen_test(timeout=30)
async def test_a_successor_never_displaces_a_better_file_and_the_budget_holds(mirror: Mirror) -> None:
    alpha = wheel_of(mirror, "alpha", "1.0")
    beta = wheel_of(mirror, "beta", "1.0")
    t0, t1 = mirror.roots
    mirror.tiers = [(t0, cost(alpha) + cost(beta) + 100), (t1, 0)]
    mirror.cache = {"policy": "default"}
    await mirror.sync_index()
    await mirror.vote(alpha, 3)
    await mirror.vote(beta, 5)
    await mirror.run()
    await publish(mirror, "alpha", "2.0")

    report = await mirror.run()

    # alpha 2.0 inherits 3 votes; the cached files (with their retention bonus) rank before it,
    # and there is no room left: it is not fetched, nothing is evicted.
    assert report.counts()["successors"] == 1
    assert report.counts()["downloaded"] == report.counts()["evicted"] == 0
    assert set(files_in(t0)) == {relpath(alpha), relpath(alpha) + ".metadata", relpath(beta), relpath(beta) + ".metadata"}
    assert tier_total(t0) <= mirror.tiers[0][1]


@pytest.mark.gen_test(timeout=30)
async def test_a_yanked_or_pre_release_is_not_prefetched(mirror: Mirror) -> None:
    mirror.cache = {"policy": "default"}
    old = wheel_of(mirror, "beta", "1.0")
    await mirror.sync_index()
    await mirror.vote(old, 3)
    await mirror.run()
    mirror.fake.add_release("beta", "2.0", sdist=False, payload_size=PAYLOAD, upload_time=uploaded_now())
    mirror.fake.yank("beta", "2.0")
    await publish(mirror, "beta", "2.1rc1", sdist=False)

    report = await mirror.run()

    assert report.counts()["successors"] == report.counts()["downloaded"] == 0
    assert set(files_in(mirror.roots[0])) == {relpath(old), relpath(old) + ".metadata"}
