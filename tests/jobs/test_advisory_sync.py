"""Advisory sync into a real SQLite file: incremental by ``modified``, losing nothing on bad input, and
what ``status`` and the info page then show."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from tornado.web import Application, StaticFileHandler

from fakeindex import FakeIndex
from osvexport import record, write_tree, write_zip
from pypimirror import advisoryqueries as aq
from pypimirror.cli import format_advisory_status
from pypimirror.config import AdvisoriesConfig, Config
from pypimirror.configreader import parse_config
from pypimirror.db import Database
from pypimirror.infopage import InfoPage, render_info_page
from pypimirror.jobs.advisory_sync import AdvisorySyncReport, run_advisory_sync
from pypimirror.jobs.index_sync import run_index_sync
from pypimirror.jobs.registry import JOBS
from pypimirror.jobs.scheduler import SyncJobs
from pypimirror.status import read_status
from pypimirror.upstream import UpstreamClient, UpstreamSettings

LATER = "2026-03-01T00:00:00Z"

RECORDS = [
    record("PYSEC-2026-1", "Alpha", ranges=[{"introduced": "0"}, {"fixed": "1.1"}], aliases=["CVE-2026-0001"],
           severity=[{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}]),
    record("GHSA-beta-list", "beta", versions=["2.0", "2.1"]),
    record("PYSEC-2026-3", "gamma", versions=["1.0"], withdrawn="2026-01-05T00:00:00Z"),
    record("MAL-2026-4", "evil-pkg", versions=["0.1"]),
]


def make_config(tmp_path: Path, source: str | None, upstream: str = "http://127.0.0.1:9", **advisories: Any) -> Config:
    data: dict[str, Any] = {
        "repo_path": str(tmp_path / "repo"),
        "upstream": {"pypi_url": upstream, "packages_url": f"{upstream}/packages"},
        "cache": {"size_limit": "1g"},
        "advisories": {"source": source, **advisories},
    }
    return parse_config(data, base_dir=tmp_path)


async def no_sleep(_seconds: float) -> None:
    """Back-off without waiting."""


def client() -> UpstreamClient:
    settings = UpstreamSettings(user_agent="pypimirror-test", proxy=None, connect_timeout=5, stall_timeout=5, attempts=2)
    return UpstreamClient(settings, sleep=no_sleep)


async def sync(tmp_path: Path, database: Database, source: str | Path | None, stop: asyncio.Event | None = None) -> AdvisorySyncReport:
    config = make_config(tmp_path, None if source is None else str(source))
    return await run_advisory_sync(config, database, client(), stop=stop or asyncio.Event())


def stored(database: Database) -> dict[str, str]:
    with database.connect() as conn:
        return aq.load_modified(conn)


def applying(database: Database) -> list[tuple[str, str]]:
    with database.connect() as conn:
        return [(item.id, item.package.name) for item in aq.applicable_advisories(conn)]


@pytest.mark.gen_test(timeout=20)
async def test_a_first_sync_stores_every_pypi_record_and_counts_the_rest(tmp_path: Path, database: Database) -> None:
    export = write_zip(tmp_path / "all.zip", [*RECORDS, record("GO-1", "mod", ecosystem="Go", versions=["1"])],
                       extra={"bad.json": b"{"})
    report = await sync(tmp_path, database, export)
    assert report.ok and report.failure_reason is None
    assert report.counts() == {"records": 4, "stored": 4, "unchanged": 0, "skipped": 2, "unreadable": 1,
                               "bad_records": 0, "other_ecosystem": 1, "corrupt_archives": 0,
                               "flagged_files": 0, "blocked_files": 0, "export_unchanged": 0}
    assert sorted(stored(database)) == ["GHSA-beta-list", "MAL-2026-4", "PYSEC-2026-1", "PYSEC-2026-3"]
    # The withdrawn record is kept (the API shows it by id) but applies to nothing.
    assert sorted(applying(database)) == [("GHSA-beta-list", "beta"), ("MAL-2026-4", "evil-pkg"), ("PYSEC-2026-1", "alpha")]
    with database.connect() as conn:
        kept = aq.advisory_record(conn, "PYSEC-2026-1")
        counts = aq.count_advisories(conn)
        assert aq.advisory_record(conn, "PYSEC-2026-3") is not None
    assert kept == RECORDS[0]
    assert counts == aq.AdvisoryCounts(total=4, withdrawn=1, malicious=1)


@pytest.mark.gen_test(timeout=20)
async def test_a_sync_stores_only_records_newer_than_stored_and_a_withdrawal_stops_a_record(
    tmp_path: Path, database: Database
) -> None:
    await sync(tmp_path, database, write_tree(tmp_path / "db", RECORDS))
    again = await sync(tmp_path, database, write_tree(tmp_path / "db", RECORDS))
    assert (again.stored, again.unchanged) == (0, 4)
    newer = [
        record("GHSA-beta-list", "beta", versions=["2.0"], modified=LATER, withdrawn=LATER),
        record("PYSEC-2026-1", "alpha", versions=["9.9"], modified="2025-01-01T00:00:00Z"),  # older: ignored
    ]
    report = await sync(tmp_path, database, write_zip(tmp_path / "newer.zip", newer))
    assert (report.stored, report.unchanged) == (1, 1)
    assert stored(database)["GHSA-beta-list"] == "2026-03-01T00:00:00.000000Z"
    assert sorted(applying(database)) == [("MAL-2026-4", "evil-pkg"), ("PYSEC-2026-1", "alpha")]
    with database.connect() as conn:
        (alpha,) = aq.applicable_advisories(conn, "alpha")
    assert alpha.package.affects("1.0") and not alpha.package.affects("9.9")


@pytest.mark.gen_test(timeout=20)
async def test_a_corrupt_or_missing_export_loses_nothing_already_stored(tmp_path: Path, database: Database) -> None:
    await sync(tmp_path, database, write_zip(tmp_path / "all.zip", RECORDS))
    before = stored(database)
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(b"PK\x03\x04 this is not a zip")
    report = await sync(tmp_path, database, corrupt)
    assert report.ok and report.read.corrupt_archives == 1 and report.stored == 0
    missing = await sync(tmp_path, database, tmp_path / "absent.zip")
    assert not missing.ok
    assert missing.failure_reason is not None and "cannot read the advisory source" in missing.failure_reason
    assert "absent.zip" in missing.failure_reason
    bad_range = write_zip(tmp_path / "bad.zip", [record("PYSEC-2026-1", "alpha", ranges=[{"introduced": "1.0"}, {"fixed": "one"}], modified=LATER)])
    report = await sync(tmp_path, database, bad_range)
    assert report.read.bad_records == 1 and report.stored == 0
    assert stored(database) == before


@pytest.mark.gen_test(timeout=20)
async def test_without_a_source_the_job_does_nothing(tmp_path: Path, database: Database) -> None:
    report = await sync(tmp_path, database, None)
    assert report.ok and not report.configured and report.counts()["records"] == 0
    assert stored(database) == {}


@pytest.mark.gen_test(timeout=20)
async def test_a_stopped_sync_is_interrupted_and_keeps_what_it_stored(tmp_path: Path, database: Database) -> None:
    stop = asyncio.Event()
    stop.set()
    report = await sync(tmp_path, database, write_zip(tmp_path / "all.zip", RECORDS), stop)
    assert report.interrupted and not report.ok
    assert stored(database) == {}


@pytest.fixture
def export_server(tmp_path: Path, curl_client: AsyncHTTPClient) -> Iterator[str]:
    """A loopback HTTP server for the files of ``tmp_path/www``; yields its base URL."""
    root = tmp_path / "www"
    root.mkdir()
    sock, port = bind_unused_port()
    server = HTTPServer(Application([(r"/(.*)", StaticFileHandler, {"path": str(root)})]))
    server.add_sockets([sock])
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.mark.gen_test(timeout=20)
async def test_a_url_source_is_downloaded_with_the_upstream_client_and_not_again_while_unchanged(
    tmp_path: Path, database: Database, export_server: str
) -> None:
    served = write_zip(tmp_path / "www" / "all.zip", RECORDS[:2])
    report = await sync(tmp_path, database, f"{export_server}/all.zip")
    assert report.ok and report.stored == 2 and not report.export_unchanged
    again = await sync(tmp_path, database, f"{export_server}/all.zip")
    assert again.ok and again.export_unchanged and again.counts()["records"] == 0
    write_zip(served, RECORDS)  # the server has a new export (new ETag and length)
    changed = await sync(tmp_path, database, f"{export_server}/all.zip")
    assert changed.ok and not changed.export_unchanged and (changed.stored, changed.unchanged) == (2, 2)
    failed = await sync(tmp_path, database, f"{export_server}/gone.zip")
    assert not failed.ok and failed.failure_reason is not None
    assert failed.failure_reason.startswith("cannot download the advisory export") and "404" in failed.failure_reason
    assert len(stored(database)) == 4
    kept = tmp_path / "repo" / "advisories"
    assert sorted(path.name for path in kept.iterdir()) == ["export.json", "export.zip"]
    assert (kept / "export.zip").read_bytes() == served.read_bytes()


@pytest.mark.gen_test(timeout=20)
async def test_an_export_that_was_not_read_whole_is_read_again_by_the_next_run(
    tmp_path: Path, database: Database, export_server: str
) -> None:
    served = tmp_path / "www" / "all.zip"
    served.write_bytes(b"PK\x03\x04 not a zip at all")
    first = await sync(tmp_path, database, f"{export_server}/all.zip")
    assert first.ok and first.read.corrupt_archives == 1
    again = await sync(tmp_path, database, f"{export_server}/all.zip")
    assert not again.export_unchanged and again.read.corrupt_archives == 1  # fetched and read again


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize(
    ("mode", "waivers", "flagged", "blocked"),
    [
        ("off", [], 0, 0),
        # alpha 1.0 (2 files), beta 2.0 and 2.1 (4 files), evil-pkg 0.1 (2 files, always blocked)
        ("flag", [], 8, 2),
        ("block", [], 8, 8),
        # A waiver by alias holds until its day has passed; one whose day is over waives nothing.
        ("flag", [{"id": "CVE-2026-0001", "until": "2999-12-31", "reason": "r"}, {"id": "GHSA-beta-list", "until": "2000-01-01", "reason": "r"}], 6, 2),
    ],
)
async def test_each_run_counts_the_files_the_policy_flags_and_blocks_on_the_stored_pages(
    tmp_path: Path, database: Database, fake_index: FakeIndex, curl_client: AsyncHTTPClient,
    caplog: pytest.LogCaptureFixture, mode: str, waivers: list[dict[str, str]], flagged: int, blocked: int,
) -> None:
    for name, versions in {"alpha": ["1.0", "1.1"], "beta": ["2.0", "2.1", "2.2"], "gamma": ["1.0"], "evil-pkg": ["0.1"]}.items():
        fake_index.add_project(name, versions)
    export = write_zip(tmp_path / "all.zip", RECORDS)
    config = make_config(tmp_path, str(export), fake_index.url, mode=mode, waivers=waivers, audit=True)
    assert (await run_index_sync(config, database, client(), sleep=no_sleep)).ok
    with caplog.at_level(logging.INFO, logger="pypimirror.jobs.advisory_sync"):
        report = await run_advisory_sync(config, database, client(), stop=asyncio.Event())
    assert (report.counts()["flagged_files"], report.counts()["blocked_files"]) == (flagged, blocked)
    if mode == "block":
        assert "would block evil-pkg 0.1: MAL-2026-4: MAL-2026-4 in evil-pkg" in caplog.text
        assert "would block alpha 1.0: PYSEC-2026-1: PYSEC-2026-1 in Alpha" in caplog.text


# -- status and the info page -------------------------------------------------------------------

STATUS_RECORDS = [
    record("PYSEC-2026-1", "alpha", ranges=[{"introduced": "0"}, {"fixed": "1.1"}]),
    record("PYSEC-2026-3", "alpha", versions=["1.1"], withdrawn="2026-01-05T00:00:00Z"),
    record("MAL-2026-4", "evil-pkg", versions=["0.1"]),
]


@pytest.mark.gen_test(timeout=30)
async def test_status_and_info_page_show_count_last_sync_and_files_flagged_and_blocked(
    tmp_path: Path, database: Database, fake_index: FakeIndex, curl_client: AsyncHTTPClient
) -> None:
    fake_index.add_project("alpha", ["1.0", "1.1"])
    fake_index.add_project("evil-pkg", ["0.1"])
    config = make_config(tmp_path, str(write_zip(tmp_path / "all.zip", STATUS_RECORDS)), fake_index.url, mode="flag")
    jobs = SyncJobs(config, database, client())
    for name in ("index_sync", "advisories"):
        assert (await jobs.run(name, asyncio.Event())).ok
    with database.connect() as conn:
        status = read_status(conn, config.node_id, config.cache.tier_limits, job_titles=JOBS.titles())
    assert status.advisory_files() == (4, 2)
    text = format_advisory_status(status, config.advisories, now=time.time())
    lines = text.splitlines()
    assert lines[0] == "advisories: 3 stored (1 withdrawn, 1 malicious packages); mode flag"
    assert re.fullmatch(r"  last successful sync: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+ \(\d+\.\ds ago\)", lines[1]), lines[1]
    assert lines[2:] == ["  files at the last sync: 4 flagged, 2 blocked"]
    audit = format_advisory_status(status, AdvisoriesConfig(source=Path("/x"), mode="block", audit=True), now=0.0)
    assert audit.startswith("advisories: 3 stored (1 withdrawn, 1 malicious packages); mode block (audit: nothing changed)\n")
    assert "no advisories.source configured" in format_advisory_status(status, AdvisoriesConfig(), now=0.0)
    page = render_info_page(InfoPage(
        index_url="http://127.0.0.1/pypi/simple/", host="127.0.0.1", scheme="http", prefix="/pypi", client_ip="",
        mode="302", miss_url="http://127.0.0.1/packages", now=0.0, status=status,
    )).decode()
    assert '<td id="advisory-count">3 (1 withdrawn, 1 malicious packages)</td>' in page
    assert '<td id="advisory-flagged">4</td>' in page and '<td id="advisory-blocked">2</td>' in page
    assert '<td id="advisory-sync">never</td>' not in page
    assert "--osv-url http://127.0.0.1/pypi/osv/v1/query" in page


@pytest.mark.gen_test(timeout=30)
async def test_before_any_advisory_sync_nothing_is_claimed(tmp_path: Path, database: Database) -> None:
    config = make_config(tmp_path, None)
    with database.connect() as conn:
        status = read_status(conn, config.node_id, config.cache.tier_limits, job_titles=JOBS.titles())
    assert status.advisory_files() is None
    assert format_advisory_status(status, AdvisoriesConfig(source=Path("/x"), mode="flag"), now=0.0) == (
        "advisories: 0 stored (0 withdrawn, 0 malicious packages); mode flag\n  last successful sync: never\n"
    )
    page = render_info_page(InfoPage(
        index_url="http://127.0.0.1/pypi/simple/", host="127.0.0.1", scheme="http", prefix="/pypi", client_ip="",
        mode="302", miss_url="http://127.0.0.1/packages", now=0.0, status=status,
    )).decode()
    assert '<td id="advisory-count">0 (0 withdrawn, 0 malicious packages)</td>' in page
    assert '<td id="advisory-sync">never</td>' in page and '<td id="advisory-flagged">–</td>' in page
