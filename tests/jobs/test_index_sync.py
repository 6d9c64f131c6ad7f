"""Index sync against the fake upstream: a complete, current, standards-exact copy of the index."""

from __future__ import annotations

import asyncio
import errno
import gzip
import json
import logging
import os
import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from fakeindex import FakeIndex
from readonly import read_only
from packaging.utils import NormalizedName, canonicalize_name
from tornado.httpclient import AsyncHTTPClient

from pypimirror import queries as dbq
from pypimirror.config import Config
from pypimirror.configreader import parse_config
from pypimirror.db import Database
from pypimirror.errors import MalformedUpstreamError, StorageError, UpstreamError
from pypimirror.jobs.index_sync import WRITE_FAILURES_IN_A_ROW, IndexSyncReport, Writer, plan_index_sync, run_index_sync
from pypimirror.listing import ListedProject
from pypimirror.storage import MAX_PROJECT_NAME_LENGTH, TEMP_MARKER, atomic_write
from pypimirror.upstream import UpstreamClient, UpstreamSettings

PREFIX = "/pypi"


async def no_sleep(_seconds: float) -> None:
    """Back-off without waiting, so retry paths run at full speed."""


def make_config(tmp_path: Path, fake: FakeIndex, **sections: Any) -> Config:
    data: dict[str, Any] = {
        "repo_path": str(tmp_path / "repo"),
        "prefix": PREFIX,
        "upstream": {"pypi_url": fake.pypi_url, "packages_url": fake.packages_url},
        "cache": {"size_limit": "1g"},
        "sync": {"concurrent_downloads": 8},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_config(data, base_dir=tmp_path)


SyncRunner = Callable[..., Any]


@pytest.fixture
def sync(tmp_path: Path, fake_index: FakeIndex, database: Database, curl_client: AsyncHTTPClient) -> SyncRunner:
    """``await sync(**config_sections)`` runs one index sync against the fake upstream.

    ``write=`` replaces the atomic page writer, for faults no test can cause for real (a full disk).
    """

    async def run(*, write: Writer = atomic_write, **sections: Any) -> IndexSyncReport:
        config = make_config(tmp_path, fake_index, **sections)
        client = UpstreamClient(
            UpstreamSettings(user_agent="pypimirror-test", proxy=config.upstream.proxy,
                             connect_timeout=5, stall_timeout=5, attempts=2),
            sleep=no_sleep,
        )
        return await run_index_sync(config, database, client, sleep=no_sleep, write=write)

    return run


def repo(tmp_path: Path) -> Path:
    return tmp_path / "repo"


def read_json(path: Path) -> Any:
    return json.loads(path.read_bytes())


class AnchorParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.anchors: list[tuple[dict[str, str | None], str]] = []
        self.metas: dict[str, str | None] = {}
        self._current: dict[str, str | None] | None = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._current, self._text = dict(attrs), ""
        elif tag == "meta":
            attributes = dict(attrs)
            self.metas[attributes.get("name") or ""] = attributes.get("content")

    def handle_data(self, data: str) -> None:
        if self._current is not None:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._current is not None:
            self.anchors.append((self._current, self._text))
            self._current = None


def parse_html(path: Path) -> AnchorParser:
    parser = AnchorParser()
    parser.feed(path.read_text("utf-8"))
    return parser


def temp_files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if TEMP_MARKER in path.name]


# -- the plan is pure --------------------------------------------------------------------


def listed(display: str, serial: int) -> ListedProject:
    return ListedProject(display_name=display, serial=serial)


def name(text: str) -> NormalizedName:
    return canonicalize_name(text)


@pytest.mark.parametrize(
    ("local", "remote", "on_disk", "fetch", "remove"),
    [
        ({}, {name("a"): listed("A", 1)}, [], ["a"], []),
        ({name("a"): ("A", 1)}, {name("a"): listed("A", 1)}, [], [], []),
        ({name("a"): ("A", 1)}, {name("a"): listed("A", 2)}, [], ["a"], []),
        ({name("a"): ("A", 3)}, {name("a"): listed("A", 2)}, [], [], []),
        ({name("a"): ("A", 1)}, {name("a"): listed("a", 1)}, [], ["a"], []),
        ({name("a"): ("A", 1), name("b"): ("B", 1)}, {name("a"): listed("A", 1)}, [], [], ["b"]),
        ({name("a"): ("A", 1)}, {name("a"): listed("A", 1)}, ["a", "orphan"], [], ["orphan"]),
    ],
    ids=["new", "unchanged", "serial-up", "serial-down-ignored", "case-only-rename", "gone", "orphan-dir"],
)
def test_plan_fetches_new_and_changed_and_removes_only_what_is_gone(
    local: dict[NormalizedName, tuple[str, int]],
    remote: dict[NormalizedName, ListedProject],
    on_disk: list[str],
    fetch: list[str],
    remove: list[str],
) -> None:
    plan = plan_index_sync(local, remote, on_disk)
    assert [project for project, _ in plan.fetch] == fetch
    assert list(plan.remove) == remove


# -- a fresh sync ------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=60)
async def test_fresh_sync_writes_every_page_of_every_project(
    sync: SyncRunner, fake_index: FakeIndex, tmp_path: Path, database: Database
) -> None:
    fake_index.add_many(300)
    fake_index.add_project("Demo.Project", ["1.0", "2.0rc1"], requires_python=">=3.8,<4")
    fake_index.yank("demo-project", "1.0", "<b>broken</b> & \"bad\"")
    report = await sync()
    assert report.ok and report.errors == 0
    assert report.fetched == report.listed == 301

    serials = await database.run(dbq.load_serials)
    assert len(serials) == 301
    assert serials[name("demo-project")] == ("Demo.Project", fake_index.project("demo-project").last_serial)
    for project in serials:
        for variant in ("index.html", "index.v1_html", "index.v1_json"):
            assert (repo(tmp_path) / "simple" / project / variant).is_file()
        assert (repo(tmp_path) / "json" / project).is_file()
    assert temp_files(repo(tmp_path)) == []


@pytest.mark.gen_test(timeout=60)
async def test_project_json_has_every_field_of_the_standard(
    sync: SyncRunner, fake_index: FakeIndex, tmp_path: Path
) -> None:
    fake_index.add_project("Demo.Project", ["1.0", "2.0"], requires_python=">=3.8,<4")
    fake_index.yank("demo-project", "1.0", "<b>broken</b> & \"bad\"")
    await sync()
    page = read_json(repo(tmp_path) / "simple" / "demo-project" / "index.v1_json")
    assert page["meta"] == {"api-version": "1.4", "_last-serial": fake_index.project("demo-project").last_serial}
    assert page["name"] == "demo-project"
    assert page["versions"] == ["1.0", "2.0"]
    upstream = {dist.filename: dist for dist in fake_index.files("demo-project")}
    assert sorted(f["filename"] for f in page["files"]) == sorted(upstream)
    for entry in page["files"]:
        dist = upstream[entry["filename"]]
        assert entry["url"] == f"{PREFIX}{dist.path}"
        assert entry["hashes"] == {"sha256": dist.sha256}
        assert entry["size"] == dist.size
        assert entry["requires-python"] == ">=3.8,<4"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z", entry["upload-time"])
        expected_metadata = {"sha256": dist.metadata_sha256} if dist.metadata is not None else False
        assert entry["core-metadata"] == entry["data-dist-info-metadata"] == expected_metadata
        assert "dist-info-metadata" not in entry
        assert entry["provenance"] is None
        is_old = "-1.0" in entry["filename"]
        assert entry["yanked"] == ("<b>broken</b> & \"bad\"" if is_old else False)


@pytest.mark.gen_test(timeout=60)
async def test_project_html_escapes_reasons_and_specifiers_and_links_to_the_mirror(
    sync: SyncRunner, fake_index: FakeIndex, tmp_path: Path
) -> None:
    fake_index.add_project("Demo.Project", ["1.0"], requires_python=">=3.8,<4")
    fake_index.yank("demo-project", "1.0", "<b>broken</b> & \"bad\"")
    await sync()
    path = repo(tmp_path) / "simple" / "demo-project" / "index.html"
    raw = path.read_text("utf-8")
    assert "<b>" not in raw and "&lt;b&gt;broken&lt;/b&gt;" in raw
    parsed = parse_html(path)
    assert parsed.metas["pypi:repository-version"] == "1.4"
    files = {dist.filename: dist for dist in fake_index.files("demo-project")}
    assert sorted(text for _, text in parsed.anchors) == sorted(files)
    for attributes, text in parsed.anchors:
        dist = files[text]
        assert attributes["href"] == f"{PREFIX}{dist.path}#sha256={dist.sha256}"
        assert attributes["data-requires-python"] == ">=3.8,<4"
        assert attributes["data-yanked"] == "<b>broken</b> & \"bad\""
        if dist.metadata is not None:
            assert attributes["data-core-metadata"] == f"sha256={dist.metadata_sha256}"
            assert attributes["data-dist-info-metadata"] == attributes["data-core-metadata"]
    assert (repo(tmp_path) / "simple" / "demo-project" / "index.v1_html").read_bytes() == path.read_bytes()


@pytest.mark.gen_test(timeout=60)
async def test_root_pages_list_every_project_with_its_serial_and_have_gzip_siblings(
    sync: SyncRunner, fake_index: FakeIndex, tmp_path: Path
) -> None:
    fake_index.add_project("Zeta")
    fake_index.add_project("alpha_Beta")
    await sync()
    root = read_json(repo(tmp_path) / "simple" / "index.v1_json")
    assert root["meta"]["api-version"] == "1.4"
    assert root["projects"] == [
        {"name": "alpha_Beta", "_last-serial": fake_index.project("alpha-beta").last_serial},
        {"name": "Zeta", "_last-serial": fake_index.project("zeta").last_serial},
    ]
    assert root["meta"]["_last-serial"] == max(p["_last-serial"] for p in root["projects"])
    anchors = parse_html(repo(tmp_path) / "simple" / "index.html").anchors
    assert [(a["href"], text) for a, text in anchors] == [
        (f"{PREFIX}/simple/alpha-beta/", "alpha_Beta"),
        (f"{PREFIX}/simple/zeta/", "Zeta"),
    ]
    for variant in ("index.html", "index.v1_html", "index.v1_json"):
        page = repo(tmp_path) / "simple" / variant
        assert gzip.decompress((page.parent / (variant + ".gz")).read_bytes()) == page.read_bytes()


@pytest.mark.gen_test(timeout=60)
async def test_json_api_document_is_stored_verbatim(sync: SyncRunner, fake_index: FakeIndex, tmp_path: Path) -> None:
    fake_index.add_project("demo")
    await sync()
    stored = (repo(tmp_path) / "json" / "demo").read_bytes()
    assert json.loads(stored)["info"]["name"] == "demo"
    assert json.loads(stored)["last_serial"] == fake_index.project("demo").last_serial


@pytest.mark.gen_test(timeout=60)
async def test_xmlrpc_listing_syncs_the_same_projects(sync: SyncRunner, fake_index: FakeIndex, database: Database) -> None:
    fake_index.add_many(5)
    report = await sync(upstream={"listing": "xmlrpc"})
    assert report.fetched == 5
    assert len(await database.run(dbq.load_serials)) == 5


# -- second runs ---------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=60)
async def test_second_run_without_changes_fetches_no_project_page(sync: SyncRunner, fake_index: FakeIndex) -> None:
    fake_index.add_many(20)
    await sync()
    fake_index.reset_log()
    report = await sync()
    assert report.fetched == 0
    project_fetches = [r for r in fake_index.requests if r.path.startswith(("/simple/proj", "/pypi/proj"))]
    assert project_fetches == []


@pytest.mark.gen_test(timeout=60)
async def test_bumped_project_is_refetched_and_equals_a_fresh_sync_byte_for_byte(
    sync: SyncRunner, fake_index: FakeIndex, tmp_path: Path, curl_client: AsyncHTTPClient
) -> None:
    fake_index.add_project("demo", ["1.0", "1.1"])
    fake_index.add_project("other")
    await sync()
    page = repo(tmp_path) / "simple" / "demo" / "index.v1_json"
    other = repo(tmp_path) / "simple" / "other" / "index.v1_json"
    other_mtime = other.stat().st_mtime_ns
    before = read_json(page)
    fake_index.bump("demo")
    fake_index.reset_log()
    report = await sync()
    assert report.fetched == 1
    assert fake_index.count_requests("/simple/demo/") == 1
    after = read_json(page)
    assert after["meta"]["_last-serial"] > before["meta"]["_last-serial"]
    assert {**after, "meta": None} == {**before, "meta": None}
    assert other.stat().st_mtime_ns == other_mtime  # untouched projects are not rewritten

    fresh_repo = tmp_path / "fresh"
    fresh_repo.mkdir()
    fresh_db = Database.open(f"sqlite:///{fresh_repo / 'db.sqlite'}")
    try:
        config = make_config(tmp_path, fake_index, repo_path=str(fresh_repo))
        client = UpstreamClient(UpstreamSettings("t", None, 5, 5), sleep=no_sleep)
        await run_index_sync(config, fresh_db, client, sleep=no_sleep)
    finally:
        fresh_db.dispose()
    for variant in ("index.html", "index.v1_json"):
        assert (fresh_repo / "simple" / "demo" / variant).read_bytes() == (page.parent / variant).read_bytes()
    assert (fresh_repo / "json" / "demo").read_bytes() == (repo(tmp_path) / "json" / "demo").read_bytes()


@pytest.mark.gen_test(timeout=60)
async def test_yank_reaches_both_pages(sync: SyncRunner, fake_index: FakeIndex, tmp_path: Path) -> None:
    fake_index.add_project("demo", ["1.0"])
    await sync()
    fake_index.yank("demo", "1.0", "<b>oops</b>")
    await sync()
    files = read_json(repo(tmp_path) / "simple" / "demo" / "index.v1_json")["files"]
    assert {entry["yanked"] for entry in files} == {"<b>oops</b>"}
    html_text = (repo(tmp_path) / "simple" / "demo" / "index.html").read_text()
    assert 'data-yanked="&lt;b&gt;oops&lt;/b&gt;"' in html_text


@pytest.mark.gen_test(timeout=60)
async def test_removed_project_loses_its_pages_and_json(
    sync: SyncRunner, fake_index: FakeIndex, tmp_path: Path, database: Database
) -> None:
    fake_index.add_project("keep")
    fake_index.add_project("gone")
    await sync()
    fake_index.remove_project("gone")
    report = await sync()
    assert report.removed == 1
    assert not (repo(tmp_path) / "simple" / "gone").exists()
    assert not (repo(tmp_path) / "json" / "gone").exists()
    assert (repo(tmp_path) / "simple" / "keep" / "index.html").exists()
    assert set(await database.run(dbq.load_serials)) == {"keep"}
    root_names = [p["name"] for p in read_json(repo(tmp_path) / "simple" / "index.v1_json")["projects"]]
    assert root_names == ["keep"]


@pytest.mark.gen_test(timeout=60)
async def test_case_only_rename_keeps_the_project(
    sync: SyncRunner, fake_index: FakeIndex, tmp_path: Path, database: Database
) -> None:
    fake_index.add_project("Django")
    await sync()
    fake_index.rename_display("django", "DJANGO")
    report = await sync()
    assert report.removed == 0 and report.fetched == 1
    assert (repo(tmp_path) / "simple" / "django" / "index.v1_json").exists()
    assert (await database.run(dbq.load_serials))[name("django")][0] == "DJANGO"
    assert [p["name"] for p in read_json(repo(tmp_path) / "simple" / "index.v1_json")["projects"]] == ["DJANGO"]


# -- faults ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("listing", "fault"),
    [
        ("simple-json", "status"),
        ("simple-json", "garbage"),
        ("simple-json", "empty"),
        ("xmlrpc", "fault"),
        ("xmlrpc", "garbage"),
        ("xmlrpc", "empty"),
        ("xmlrpc", "status"),
    ],
)
@pytest.mark.gen_test(timeout=60)
async def test_broken_listing_is_an_error_and_deletes_nothing(
    sync: SyncRunner, fake_index: FakeIndex, tmp_path: Path, database: Database, listing: str, fault: str
) -> None:
    fake_index.add_many(3)
    await sync(upstream={"listing": listing})
    before = sorted(p.relative_to(tmp_path) for p in repo(tmp_path).rglob("*") if "pypi-mirror.db" not in p.name)
    if fault == "status":
        fake_index.fail_next("/simple/" if listing == "simple-json" else "/pypi", status=500, times=None)
    elif fault == "garbage":
        fake_index.listing_garbage_next(times=None)
    elif fault == "empty":
        fake_index.listing_empty_next(times=None)
    else:
        fake_index.xmlrpc_fault_next(times=None)
    with pytest.raises(UpstreamError):
        await sync(upstream={"listing": listing})
    after = sorted(p.relative_to(tmp_path) for p in repo(tmp_path).rglob("*") if "pypi-mirror.db" not in p.name)
    assert after == before
    assert len(await database.run(dbq.load_serials)) == 3


@pytest.mark.gen_test(timeout=60)
async def test_more_removals_than_max_deletions_are_refused(
    sync: SyncRunner, fake_index: FakeIndex, tmp_path: Path, database: Database
) -> None:
    fake_index.add_many(5)
    await sync()
    for project in ("proj-0000", "proj-0001", "proj-0002"):
        fake_index.remove_project(project)
    report = await sync(sync={"max_deletions": 2})
    assert not report.ok
    assert report.removal_refused is not None and "max_deletions (2)" in report.removal_refused
    assert report.removed == 0
    assert len(await database.run(dbq.load_serials)) == 5
    assert (repo(tmp_path) / "simple" / "proj-0000" / "index.html").exists()


@pytest.mark.gen_test(timeout=60)
async def test_stale_serial_is_retried_then_left_for_the_next_run(
    sync: SyncRunner, fake_index: FakeIndex, database: Database
) -> None:
    fake_index.add_project("fresh")
    fake_index.add_project("stale")
    fake_index.serve_stale("stale", times=None)
    report = await sync(sync={"retry": 3})
    assert report.fetched == 1 and report.errors == 1
    assert "stale" in report.failures and "older than the listed" in report.failures["stale"]
    assert fake_index.count_requests("/simple/stale/") == 3
    assert set(await database.run(dbq.load_serials)) == {"fresh"}

    fake_index.clear_faults()
    report = await sync()
    assert report.fetched == 1 and report.errors == 0
    assert set(await database.run(dbq.load_serials)) == {"fresh", "stale"}


@pytest.mark.gen_test(timeout=60)
async def test_one_failing_project_does_not_stop_the_others(
    sync: SyncRunner, fake_index: FakeIndex, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    fake_index.add_many(10)
    fake_index.fail_next("/pypi/proj-0004/json", status=403, times=None)
    report = await sync()
    assert report.fetched == 9 and report.errors == 1
    assert "proj-0004" in report.failures
    assert "proj-0004" not in await database.run(dbq.load_serials)
    assert any("proj-0004" in record.getMessage() for record in caplog.records)


@pytest.mark.gen_test(timeout=60)
async def test_malformed_project_page_is_counted_not_fatal(
    sync: SyncRunner, fake_index: FakeIndex, database: Database
) -> None:
    fake_index.add_project("good")
    fake_index.add_project("bad")
    fake_index.fail_next("/simple/bad/", status=200, body=b"{not json", times=None,
                         headers={"Content-Type": "application/vnd.pypi.simple.v1+json"})
    report = await sync()
    assert report.fetched == 1 and report.errors == 1
    assert "bad" in report.failures
    assert set(await database.run(dbq.load_serials)) == {"good"}


# -- a page directory that cannot be written ---------------------------------------------


def error_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.levelno >= logging.ERROR]


def assert_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    assert [record.getMessage() for record in caplog.records if record.exc_info] == []


@pytest.mark.gen_test(timeout=60)
async def test_a_project_whose_directory_cannot_be_written_is_its_error_and_is_fetched_again_next_run(
    sync: SyncRunner, fake_index: FakeIndex, database: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake_index.add_many(4)
    await sync()
    for project in ("proj-0000", "proj-0001", "proj-0002", "proj-0003"):
        fake_index.bump(project)
    fake_index.add_project("newcomer")
    with read_only(repo(tmp_path) / "simple" / "proj-0001"):
        report = await sync()
    assert report.ok, report.summary()  # one failed project of five is below sync.max_error_share
    assert (report.fetched, report.errors, report.write_errors) == (4, 1, 1)
    assert "cannot write its pages" in report.failures["proj-0001"]
    assert "proj-0001" in report.failures["proj-0001"]  # the path that failed is named
    serials = await database.run(dbq.load_serials)
    assert serials["proj-0001"][1] < fake_index.project("proj-0001").last_serial  # not stored: retried
    assert serials["proj-0002"][1] == fake_index.project("proj-0002").last_serial
    root = read_json(repo(tmp_path) / "simple" / "index.v1_json")
    assert "newcomer" in {project["name"] for project in root["projects"]}  # the root pages were written
    assert temp_files(repo(tmp_path)) == []
    assert_no_traceback(caplog)

    report = await sync()
    assert (report.fetched, report.errors) == (1, 0)
    serials = await database.run(dbq.load_serials)
    assert serials["proj-0001"][1] == fake_index.project("proj-0001").last_serial


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EDQUOT])
@pytest.mark.gen_test(timeout=60)
async def test_a_full_or_read_only_filesystem_stops_the_sync_as_failed_with_one_message(
    code: int, sync: SyncRunner, fake_index: FakeIndex, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    # A full disk cannot be made for real in a test: the writer the sync is given fails as one would.
    def full(path: Path, _data: bytes) -> None:
        raise OSError(code, os.strerror(code), str(path))

    fake_index.add_many(40)
    report = await sync(write=full)
    assert not report.ok and not report.interrupted
    assert report.failed is not None and os.strerror(code) in report.failed
    assert "next run" in report.failed
    assert report.fetched == 0 and await database.run(dbq.load_serials) == {}
    # It stopped at the first failure: at most the projects already in flight were fetched.
    assert fake_index.count_requests(re.compile(r"^/simple/proj-")) < 40
    errors = error_records(caplog)
    assert len(errors) == 1 and os.strerror(code) in errors[0].getMessage()
    assert_no_traceback(caplog)


@pytest.mark.gen_test(timeout=60)
async def test_a_page_directory_that_refuses_every_write_ends_the_sync_as_failed_with_one_message(
    sync: SyncRunner, fake_index: FakeIndex, database: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake_index.add_many(WRITE_FAILURES_IN_A_ROW + 20)
    (repo(tmp_path) / "simple").mkdir()
    with read_only(repo(tmp_path) / "simple"):
        report = await sync()
    assert not report.ok and not report.interrupted
    assert report.failed is not None and "cannot write pages under" in report.failed
    assert WRITE_FAILURES_IN_A_ROW <= report.errors < WRITE_FAILURES_IN_A_ROW + 20  # stopped early
    assert report.fetched == 0 and await database.run(dbq.load_serials) == {}
    errors = error_records(caplog)
    assert len(errors) == 1 and "cannot write pages under" in errors[0].getMessage()
    assert_no_traceback(caplog)

    report = await sync()  # writable again: everything arrives
    assert report.ok and report.fetched == WRITE_FAILURES_IN_A_ROW + 20


@pytest.mark.gen_test(timeout=60)
async def test_root_pages_that_cannot_be_written_fail_the_sync_with_a_clear_message(
    sync: SyncRunner, fake_index: FakeIndex, database: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake_index.add_many(3)
    (repo(tmp_path) / "simple" / "index.v1_json").mkdir(parents=True)  # a directory where the page goes
    report = await sync()
    assert not report.ok
    assert report.failed is not None and report.failed.startswith("cannot write the root pages:")
    assert report.fetched == 3 and len(await database.run(dbq.load_serials)) == 3  # the projects are whole
    assert (repo(tmp_path) / "simple" / "index.html").exists()
    assert temp_files(repo(tmp_path)) == []
    assert len(error_records(caplog)) == 1
    assert_no_traceback(caplog)


@pytest.mark.gen_test(timeout=60)
async def test_page_directories_that_cannot_be_read_are_a_storage_error_before_anything_changes(
    sync: SyncRunner, fake_index: FakeIndex, database: Database, tmp_path: Path
) -> None:
    fake_index.add_many(3)
    (repo(tmp_path) / "simple").write_bytes(b"not a directory")
    with pytest.raises(StorageError, match="cannot read the page directories: .*simple"):
        await sync()
    assert await database.run(dbq.load_serials) == {}


@pytest.mark.gen_test(timeout=60)
async def test_a_directory_no_project_can_have_is_left_alone_by_the_sync(
    sync: SyncRunner, fake_index: FakeIndex, tmp_path: Path
) -> None:
    fake_index.add_many(2)
    stray = repo(tmp_path) / "simple" / "lost+found"
    stray.mkdir(parents=True)
    report = await sync()
    assert report.ok and report.fetched == 2 and report.removed == 0
    assert stray.is_dir()


# -- a run in which too many projects failed ---------------------------------------------


@pytest.mark.parametrize(
    ("failing", "share", "ok"),
    [(4, 0.5, False), (3, 0.5, False), (2, 0.5, True), (1, 0.5, True), (1, 0.0, False), (3, 0.75, True)],
    ids=["all", "most", "half", "few", "any-with-share-0", "most-below-share"],
)
@pytest.mark.gen_test(timeout=60)
async def test_a_sync_in_which_more_than_max_error_share_of_the_projects_failed_is_failed(
    failing: int, share: float, ok: bool, sync: SyncRunner, fake_index: FakeIndex
) -> None:
    fake_index.add_many(4)
    for i in range(failing):
        fake_index.fail_next(f"/pypi/proj-{i:04d}/json", status=403, times=None)
    report = await sync(sync={"max_error_share": share})
    assert (report.fetched, report.errors) == (4 - failing, failing)
    assert report.ok is ok
    if ok:
        assert report.failed is None
    else:
        assert report.failed is not None and f"{failing} of 4 projects failed" in report.failed
        # An example (whichever failed first) says what went wrong.
        assert re.search(rf"; e\.g\. proj-000[0-{failing - 1}]: .*403", report.failed), report.failed
        assert report.failure_reason == report.failed


@pytest.mark.gen_test(timeout=60)
async def test_stop_event_ends_the_run_at_a_safe_point(
    fake_index: FakeIndex, database: Database, tmp_path: Path, curl_client: AsyncHTTPClient
) -> None:
    fake_index.add_many(40)
    fake_index.delay(re.compile(r"^/simple/proj-"), 0.05, times=None)
    config = make_config(tmp_path, fake_index, sync={"concurrent_downloads": 2})
    client = UpstreamClient(UpstreamSettings("t", None, 5, 5), sleep=no_sleep)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.5, stop.set)
    report = await run_index_sync(config, database, client, stop=stop, sleep=no_sleep)
    assert report.interrupted and not report.ok
    assert 0 < report.fetched < 40
    serials = await database.run(dbq.load_serials)
    assert len(serials) == report.fetched
    for project in serials:
        assert (repo(tmp_path) / "simple" / project / "index.v1_json").exists()
    assert temp_files(repo(tmp_path)) == []


def test_listing_errors_are_upstream_errors() -> None:
    assert issubclass(MalformedUpstreamError, UpstreamError)


@pytest.mark.gen_test(timeout=60)
async def test_upstream_without_a_json_simple_page_falls_back_to_the_json_api(
    sync: SyncRunner, fake_index: FakeIndex, tmp_path: Path
) -> None:
    fake_index.add_project("demo", ["1.0"], requires_python=">=3.9")
    fake_index.fail_next("/simple/demo/", status=404, times=None)
    report = await sync()
    assert report.fetched == 1 and report.errors == 0
    page = read_json(repo(tmp_path) / "simple" / "demo" / "index.v1_json")
    upstream = {dist.filename: dist for dist in fake_index.files("demo")}
    assert {entry["filename"] for entry in page["files"]} == set(upstream)
    assert all(entry["url"] == f"{PREFIX}{upstream[entry['filename']].path}" for entry in page["files"])
    assert all(entry["requires-python"] == ">=3.9" for entry in page["files"])


@pytest.mark.gen_test(timeout=60)
async def test_relative_file_links_are_resolved_against_the_upstream_page(
    sync: SyncRunner, fake_index: FakeIndex, tmp_path: Path
) -> None:
    fake_index.add_project("demo", ["1.0"], wheel=False)
    dist = fake_index.files("demo")[0]
    body = json.dumps({
        "meta": {"api-version": "1.4", "_last-serial": fake_index.project("demo").last_serial},
        "name": "demo",
        "files": [{"filename": dist.filename, "url": f"../..{dist.path}", "hashes": {"sha256": dist.sha256},
                   "size": dist.size}],
    }).encode()
    fake_index.fail_next("/simple/demo/", status=200, body=body, times=None,
                         headers={"Content-Type": "application/vnd.pypi.simple.v1+json",
                                  "X-PyPI-Last-Serial": str(fake_index.project("demo").last_serial)})
    await sync()
    page = read_json(repo(tmp_path) / "simple" / "demo" / "index.v1_json")
    assert [entry["url"] for entry in page["files"]] == [f"{PREFIX}{dist.path}"]


@pytest.mark.gen_test(timeout=60)
async def test_file_links_that_are_not_http_are_dropped_and_logged(
    sync: SyncRunner, fake_index: FakeIndex, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake_index.add_project("demo", ["1.0"], wheel=False)
    fake_index.add_project("other", ["2.0"])
    dist = fake_index.files("demo")[0]
    hostile = {"demo-6.6-py3-none-any.whl": "javascript:alert(1)", "demo-6.7-py3-none-any.whl": "data:text/html,x",
               "demo-6.8-py3-none-any.whl": "file:///etc/passwd"}
    serial = fake_index.project("demo").last_serial
    files = [{"filename": dist.filename, "url": fake_index.url + dist.path, "hashes": {"sha256": dist.sha256}, "size": dist.size}]
    files += [{"filename": name, "url": url, "hashes": {"sha256": "ab" * 32}, "size": 1} for name, url in hostile.items()]
    body = json.dumps({"meta": {"api-version": "1.4", "_last-serial": serial}, "name": "demo", "files": files}).encode()
    fake_index.fail_next("/simple/demo/", status=200, body=body, times=None,
                         headers={"Content-Type": "application/vnd.pypi.simple.v1+json", "X-PyPI-Last-Serial": str(serial)})
    report = await sync()
    assert (report.fetched, report.errors) == (2, 0)
    page = read_json(repo(tmp_path) / "simple" / "demo" / "index.v1_json")
    assert [entry["url"] for entry in page["files"]] == [f"{PREFIX}{dist.path}"]
    html = (repo(tmp_path) / "simple" / "demo" / "index.html").read_bytes()
    assert dist.filename.encode() in html
    for name, url in hostile.items():
        assert name.encode() not in html and url.split(":")[0].encode() + b":" not in html
        assert any(name in r.getMessage() and r.levelname == "WARNING" for r in caplog.records), name
    assert (repo(tmp_path) / "simple" / "other" / "index.v1_json").exists()


@pytest.mark.gen_test(timeout=60)
async def test_listed_names_too_long_to_store_are_skipped_and_the_rest_synced(
    sync: SyncRunner, fake_index: FakeIndex, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake_index.add_project("demo")
    fake_index.add_project("l" * MAX_PROJECT_NAME_LENGTH)
    fake_index.add_project("x" * (MAX_PROJECT_NAME_LENGTH + 1))
    report = await sync()
    assert (report.fetched, report.errors) == (2, 0)
    assert (repo(tmp_path) / "json" / ("l" * MAX_PROJECT_NAME_LENGTH)).exists()
    assert not (repo(tmp_path) / "simple" / ("x" * (MAX_PROJECT_NAME_LENGTH + 1))).exists()
    assert "ignoring invalid project name 'xxx" in caplog.text
    assert temp_files(repo(tmp_path)) == []
