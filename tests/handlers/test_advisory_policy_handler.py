"""The advisory policy where pages and files are served: flagged pages, 403s, waivers, withdrawals.

Advisories are stored in a real SQLite database and the pages written as the index sync writes
them; the mirror's app answers over a real socket.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, date, datetime
from typing import Any

import pytest
from packaging.utils import NormalizedName

from osvexport import record
from pypimirror import advisoryqueries as aq
from pypimirror.advisorypages import AdvisoryPages, flag_page, release_of
from pypimirror.advisorypolicy import Verdict
from pypimirror.advisoryqueries import ApplicableAdvisory
from pypimirror.app import Services
from pypimirror.config import AdvisoriesConfig, AdvisoryWaiver
from pypimirror.db import Database
from pypimirror.handlers.files import ADVISORIES_HEADER
from pypimirror.osv import parse_record
from pypimirror.pagemodel import DistFile, ProjectPage
from pypimirror.storage import atomic_write

JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}
NOW = datetime(2026, 6, 15, 12, tzinfo=UTC).timestamp()
RECORDS = [
    record("PYSEC-2026-1", "alpha", ranges=[{"introduced": "0"}, {"fixed": "1.1"}], summary="Remote code execution",
           aliases=["CVE-2026-0001"]),
    record("MAL-2026-4", "evil-pkg", versions=["0.1"], summary="Malicious code"),
]


def api_file(filename: str, yanked: bool = False, reason: str | None = None) -> dict[str, Any]:
    return {"filename": filename, "url": f"http://127.0.0.1:9/packages/{filename}", "yanked": yanked, "yanked_reason": reason}


# A JSON-API document as the upstream serves it (only what the policy touches, and a neighbour).
ALPHA_DOCUMENT = {
    "info": {"name": "alpha", "version": "1.0", "yanked": False, "yanked_reason": None, "summary": "Alpha"},
    "last_serial": 7,
    "releases": {
        "1.0": [api_file("alpha-1.0.tar.gz", yanked=True, reason="bad upload"), api_file("alpha-1.0-py3-none-any.whl")],
        "1.1": [api_file("alpha-1.1-py3-none-any.whl")],
    },
    "urls": [api_file("alpha-1.0.tar.gz", yanked=True, reason="bad upload"), api_file("alpha-1.0-py3-none-any.whl")],
    "vulnerabilities": [],
}


def dist(name: str, version: str, digest: str) -> DistFile:
    filename = f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    return DistFile(filename=filename, url=f"http://127.0.0.1:9/packages/{digest[:2]}/{digest[2:4]}/{digest[4:]}/{filename}",
                    sha256=digest, requires_python=None, size=100, upload_time="2026-01-01T00:00:00Z",
                    yanked=False, core_metadata=True, provenance=None, version=version)


def project(name: str, *versions: str) -> ProjectPage:
    files = tuple(dist(name, version, f"{index:02x}" * 32) for index, version in enumerate(versions, start=1))
    return ProjectPage(name=NormalizedName(name), display_name=name, last_serial=7, files=files, versions=versions)


def store(database: Database, *records: dict[str, Any], now: float = 1.0) -> None:
    with database.begin() as conn:
        aq.store_advisories(conn, [parse_record(item) for item in records], now=now)


@pytest.fixture
def settings(request: pytest.FixtureRequest) -> AdvisoriesConfig:
    return AdvisoriesConfig(source=None, **getattr(request, "param", {"mode": "flag"}))


@pytest.fixture
def advisory_pages(database: Database, settings: AdvisoriesConfig) -> AdvisoryPages:
    return AdvisoryPages(database, settings, clock=lambda: NOW)


@pytest.fixture(name="services")
def _services(
    services: Services, database: Database, advisory_pages: AdvisoryPages, write_project: Any, layout: Any
) -> Services:
    for page in (project("alpha", "1.0", "1.1"), project("evil-pkg", "0.1"), project("beta", "1.0")):
        write_project(page)
    atomic_write(layout.json_document("alpha"), json.dumps(ALPHA_DOCUMENT).encode())
    store(database, *RECORDS)
    return Services(pages=services.pages, votes=services.votes, access_log=services.access_log, advisory_pages=advisory_pages)


def yanks(body: bytes) -> dict[str, object]:
    return {entry["filename"]: entry["yanked"] for entry in json.loads(body)["files"]}


@pytest.mark.gen_test
async def test_flag_serves_affected_files_as_yanked_with_the_reason_and_leaves_other_pages_alone(
    fetch: Any, advisory_pages: AdvisoryPages, layout: Any
) -> None:
    await advisory_pages.refresh()
    alpha = await fetch("/pypi/simple/alpha/", headers=JSON)
    assert alpha.code == 200
    assert yanks(alpha.body) == {"alpha-1.0-py3-none-any.whl": "PYSEC-2026-1: Remote code execution",
                                 "alpha-1.1-py3-none-any.whl": False}
    assert alpha.headers["X-PyPI-Last-Serial"] == "7"
    html = await fetch("/pypi/simple/alpha/", headers={"Accept": "text/html"})
    (anchor,) = [line for line in html.body.decode().splitlines() if "data-yanked" in line]
    assert 'data-yanked="PYSEC-2026-1: Remote code execution"' in anchor and ">alpha-1.0-py3-none-any.whl<" in anchor
    assert html.headers["ETag"] != alpha.headers["ETag"]
    again = await fetch("/pypi/simple/alpha/", headers={**JSON, "If-None-Match": alpha.headers["ETag"]})
    assert again.code == 304
    gzipped = await fetch("/pypi/simple/alpha/", headers={**JSON, "Accept-Encoding": "gzip"})
    assert gzipped.headers["Content-Encoding"] == "gzip" and gzipped.headers["ETag"] != alpha.headers["ETag"]
    beta = await fetch("/pypi/simple/beta/", headers=JSON)
    assert beta.body == layout.project_page("beta", "index.v1_json").read_bytes()
    # A malicious package's files are flagged too (and blocked, below).
    assert yanks((await fetch("/pypi/simple/evil-pkg/", headers=JSON)).body) == {"evil_pkg-0.1-py3-none-any.whl": "MAL-2026-4: Malicious code"}


@pytest.mark.gen_test
async def test_flag_yanks_the_same_files_in_the_json_api_document(fetch: Any, advisory_pages: AdvisoryPages) -> None:
    await advisory_pages.refresh()
    for path in ("/pypi/pypi/alpha/json", "/pypi/alpha/json"):
        answer = await fetch(path)
        assert answer.code == 200 and answer.headers["X-PyPI-Last-Serial"] == "7"
        document = json.loads(answer.body)
        reason = "PYSEC-2026-1: Remote code execution"
        assert [(f["yanked"], f["yanked_reason"]) for f in document["releases"]["1.0"]] == [
            (True, f"bad upload; {reason}"), (True, reason)]
        assert [f["yanked"] for f in document["releases"]["1.1"]] == [False]
        assert (document["info"]["yanked"], document["info"]["yanked_reason"]) == (True, reason)
        assert [f["yanked_reason"] for f in document["urls"]] == [f"bad upload; {reason}", reason]
        assert document["info"]["summary"] == "Alpha" and document["vulnerabilities"] == []
        again = await fetch(path, headers={"If-None-Match": answer.headers["ETag"]})
        assert again.code == 304


def file_path(name: str, version: str, index: int) -> str:
    digest = f"{index:02x}" * 32
    return f"/pypi/packages/{digest[:2]}/{digest[2:4]}/{digest[4:]}/{name.replace('-', '_')}-{version}-py3-none-any.whl"


@pytest.mark.gen_test
async def test_flag_blocks_only_malicious_packages(fetch: Any, advisory_pages: AdvisoryPages, votes: Any) -> None:
    await advisory_pages.refresh()
    assert (await fetch(file_path("alpha", "1.0", 1))).code == 302
    evil = await fetch(file_path("evil-pkg", "0.1", 1))
    assert evil.code == 403
    assert evil.headers[ADVISORIES_HEADER] == "MAL-2026-4"
    assert b"blocked by advisories: MAL-2026-4: Malicious code" in evil.body
    assert [offer[0] for offer in votes.offers] == [file_path("alpha", "1.0", 1).removeprefix("/pypi/packages/")]
    assert (await fetch(file_path("evil-pkg", "0.1", 1) + ".metadata")).code == 302


@pytest.mark.gen_test
@pytest.mark.parametrize("settings", [{"mode": "block"}], indirect=True)
async def test_block_refuses_every_affected_file_with_the_ids(fetch: Any, advisory_pages: AdvisoryPages) -> None:
    await advisory_pages.refresh()
    blocked = await fetch(file_path("alpha", "1.0", 1))
    assert blocked.code == 403 and blocked.headers[ADVISORIES_HEADER] == "PYSEC-2026-1"
    assert (await fetch(file_path("alpha", "1.0", 1), method="HEAD")).code == 403
    assert (await fetch(file_path("alpha", "1.1", 2))).code == 302
    assert (await fetch(file_path("beta", "1.0", 1))).code == 302


@pytest.mark.gen_test
async def test_a_withdrawn_record_stops_applying_once_the_policy_is_reloaded(
    fetch: Any, advisory_pages: AdvisoryPages, database: Database
) -> None:
    await advisory_pages.refresh()
    assert yanks((await fetch("/pypi/simple/alpha/", headers=JSON)).body)["alpha-1.0-py3-none-any.whl"] is not False
    assert not await advisory_pages.refresh()  # nothing new: the rendered pages stay
    withdrawn = record("PYSEC-2026-1", "alpha", ranges=[{"introduced": "0"}, {"fixed": "1.1"}],
                       modified="2026-03-01T00:00:00Z", withdrawn="2026-03-01T00:00:00Z")
    store(database, withdrawn, now=2.0)
    assert await advisory_pages.refresh()
    assert set(yanks((await fetch("/pypi/simple/alpha/", headers=JSON)).body).values()) == {False}


@pytest.mark.gen_test
@pytest.mark.parametrize(
    ("settings", "flagged"),
    [
        ({"mode": "flag", "waivers": (AdvisoryWaiver(id="CVE-2026-0001", until=date(2026, 6, 15), reason="r"),)}, False),
        ({"mode": "flag", "waivers": (AdvisoryWaiver(id="PYSEC-2026-1", until=date(2026, 6, 14), reason="r"),)}, True),
    ],
    indirect=["settings"],
)
async def test_a_waiver_holds_through_its_day_and_then_the_advisory_applies_again(
    fetch: Any, advisory_pages: AdvisoryPages, flagged: bool
) -> None:
    await advisory_pages.refresh()
    yanked = yanks((await fetch("/pypi/simple/alpha/", headers=JSON)).body)["alpha-1.0-py3-none-any.whl"]
    assert (yanked is not False) is flagged


def test_flag_page_keeps_an_upstream_yank_reason_and_release_of_reads_file_names() -> None:
    page = project("alpha", "1.0", "2.0")
    page = dataclasses.replace(page, files=(dataclasses.replace(page.files[0], yanked="broken build"), page.files[1]))
    advisory = ApplicableAdvisory("X-1", (), "bad", "", parse_record(RECORDS[0]).affected[0])
    flagged = flag_page(page, {"1.0": Verdict((advisory,), blocked=False), "2.0": Verdict((advisory,), blocked=True)})
    assert [dist.yanked for dist in flagged.files] == ["broken build; X-1: bad", "X-1: bad"]
    assert flag_page(page, {}) is page
    assert release_of("Foo_Bar-2.0.post1-py3-none-any.whl") == ("foo-bar", "2.0.post1")
    assert release_of("foo-bar-1.0.tar.gz") == ("foo-bar", "1.0")
    assert release_of("foo.exe") is None and release_of("x-notaversion-py3-none-any.whl") is None


# --- through a view: the same policy, after the view's own filtering -------------------------

VIEW = "/pypi/+cooldown/1d"  # the files above were uploaded long ago: the view keeps them all


@pytest.mark.gen_test
async def test_a_view_serves_the_files_the_policy_flags_as_yanked_in_every_variant(
    fetch: Any, advisory_pages: AdvisoryPages
) -> None:
    await advisory_pages.refresh()
    reason = "PYSEC-2026-1: Remote code execution"
    page = await fetch(f"{VIEW}/simple/alpha/", headers=JSON)
    assert page.code == 200
    assert yanks(page.body) == {"alpha-1.0-py3-none-any.whl": reason, "alpha-1.1-py3-none-any.whl": False}
    assert all(entry["url"].startswith(f"{VIEW}/packages/") for entry in json.loads(page.body)["files"])
    html = await fetch(f"{VIEW}/simple/alpha/", headers={"Accept": "text/html"})
    (anchor,) = [line for line in html.body.decode().splitlines() if "data-yanked" in line]
    assert f'data-yanked="{reason}"' in anchor and ">alpha-1.0-py3-none-any.whl<" in anchor
    document = json.loads((await fetch(f"{VIEW}/pypi/alpha/json")).body)
    assert [(f["yanked"], f["yanked_reason"]) for f in document["releases"]["1.0"]] == [(True, reason)]
    assert [f["yanked"] for f in document["releases"]["1.1"]] == [False]
    beta = await fetch(f"{VIEW}/simple/beta/", headers=JSON)
    assert yanks(beta.body) == {"beta-1.0-py3-none-any.whl": False}


@pytest.mark.gen_test
async def test_a_view_blocks_malicious_files_in_flag_mode_and_serves_the_rest(
    fetch: Any, advisory_pages: AdvisoryPages
) -> None:
    await advisory_pages.refresh()
    evil = await fetch(VIEW + file_path("evil-pkg", "0.1", 1).removeprefix("/pypi"))
    assert evil.code == 403 and evil.headers[ADVISORIES_HEADER] == "MAL-2026-4"
    assert b"blocked by advisories: MAL-2026-4: Malicious code" in evil.body
    assert (await fetch(VIEW + file_path("alpha", "1.0", 1).removeprefix("/pypi"))).code == 302


@pytest.mark.gen_test
@pytest.mark.parametrize("settings", [{"mode": "block"}], indirect=True)
async def test_a_view_blocks_every_affected_file_in_block_mode(fetch: Any, advisory_pages: AdvisoryPages) -> None:
    await advisory_pages.refresh()
    path = VIEW + file_path("alpha", "1.0", 1).removeprefix("/pypi")
    for method in ("GET", "HEAD"):
        blocked = await fetch(path, method=method)
        assert blocked.code == 403 and blocked.headers[ADVISORIES_HEADER] == "PYSEC-2026-1"
    assert b"blocked by advisories: PYSEC-2026-1: Remote code execution" in (await fetch(path)).body
    assert (await fetch(VIEW + file_path("alpha", "1.1", 2).removeprefix("/pypi"))).code == 302


@pytest.mark.gen_test
async def test_a_view_page_changes_when_the_advisories_do(
    fetch: Any, advisory_pages: AdvisoryPages, database: Database
) -> None:
    await advisory_pages.refresh()
    before = await fetch(f"{VIEW}/simple/alpha/", headers=JSON)
    assert yanks(before.body)["alpha-1.1-py3-none-any.whl"] is False
    store(database, record("GHSA-2026-9", "alpha", versions=["1.1"], summary="Path traversal"), now=2.0)
    assert await advisory_pages.refresh()
    after = await fetch(f"{VIEW}/simple/alpha/", headers={**JSON, "If-None-Match": before.headers["ETag"]})
    assert after.code == 200 and after.headers["ETag"] != before.headers["ETag"]
    assert yanks(after.body)["alpha-1.1-py3-none-any.whl"] == "GHSA-2026-9: Path traversal"
    document = json.loads((await fetch(f"{VIEW}/pypi/alpha/json")).body)
    assert document["releases"]["1.1"][0]["yanked_reason"] == "GHSA-2026-9: Path traversal"
    withdrawn = record("PYSEC-2026-1", "alpha", ranges=[{"introduced": "0"}, {"fixed": "1.1"}],
                       modified="2026-03-01T00:00:00Z", withdrawn="2026-03-01T00:00:00Z")
    store(database, withdrawn, now=3.0)
    assert await advisory_pages.refresh()
    assert yanks((await fetch(f"{VIEW}/simple/alpha/", headers=JSON)).body)["alpha-1.0-py3-none-any.whl"] is False


@pytest.mark.gen_test
async def test_a_file_the_view_shows_yanked_keeps_its_reason_in_front_of_the_advisory(
    fetch: Any, advisory_pages: AdvisoryPages, database: Database, write_project: Any
) -> None:
    page = project("gamma", "1.0", "2.0")
    write_project(dataclasses.replace(page, files=(dataclasses.replace(page.files[0], yanked="broken build"),
                                                   page.files[1])))
    store(database, record("GHSA-2026-7", "gamma", versions=["1.0", "2.0"], summary="Leaks tokens"), now=2.0)
    await advisory_pages.refresh()
    assert yanks((await fetch(f"{VIEW}/simple/gamma/", headers=JSON)).body) == {
        "gamma-1.0-py3-none-any.whl": "broken build; GHSA-2026-7: Leaks tokens",
        "gamma-2.0-py3-none-any.whl": "GHSA-2026-7: Leaks tokens",
    }
