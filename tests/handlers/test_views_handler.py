"""The views over HTTP: filtered pages in every variant, file refusals, validators, bad view URLs."""

from __future__ import annotations

import dataclasses
import gzip
import json
import re
import time
from datetime import UTC, datetime, timedelta
from functools import partial
import pytest
from packaging.utils import NormalizedName

from pypimirror.app import Services
from pypimirror.handlers.views import VIEW_REASON_HEADER
from pypimirror.pagecache import PageCache
from pypimirror.pages import DistFile, ProjectPage, render_project_html, render_project_json, rewrite_file_url
from pypimirror.storage import RepoLayout, atomic_write
from pypimirror.viewpages import ViewPages

from .conftest import PACKAGES_URL, PREFIX, REDIRECT_URL

V1_JSON = "application/vnd.pypi.simple.v1+json"
NOW = time.time()
VIEWS = {"stable": {"min_age": "7d", "exempt": ["internal-*"]},
         "frozen": {"not_after": "2024-06-01"}}


class Clock:
    """The views' wall clock, moved by the test."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def pages() -> PageCache:
    return PageCache(revalidate_after=0)  # a rewritten page is seen at once


@pytest.fixture
def services(pages, votes, access_log, clock) -> Services:
    return Services(pages=pages, votes=votes, access_log=access_log,
                    views=ViewPages(PREFIX, PACKAGES_URL, clock=clock))


def upload_time(days_ago: float) -> str:
    return (datetime.fromtimestamp(NOW, UTC) - timedelta(days=days_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def dist(name: str, version: str, days_ago: float | None, *, digit: str = "a", yanked: bool | str = False,
         sdist: bool = False) -> DistFile:
    stem = name.replace("-", "_")
    filename = f"{stem}-{version}.tar.gz" if sdist else f"{stem}-{version}-py3-none-any.whl"
    digest = (digit + str(len(version)) + version.replace(".", "")).ljust(64, "0")[:64]
    return DistFile(
        filename=filename,
        url=f"{PACKAGES_URL}/{digest[:2]}/{digest[2:4]}/{digest[4:]}/{filename}",
        sha256=digest, requires_python=None, size=100,
        upload_time=upload_time(days_ago) if days_ago is not None else None,
        yanked=yanked, core_metadata=digest, provenance=None, version=version,
    )


def project(name: str, *files: DistFile, status: str | None = None, serial: int = 7) -> ProjectPage:
    return ProjectPage(name=NormalizedName(name), display_name=name, last_serial=serial, files=files,
                       versions=tuple({f.version for f in files if f.version}), status=status)


@pytest.fixture
def write_project(layout: RepoLayout):
    url_for = partial(rewrite_file_url, packages_url=PACKAGES_URL, prefix=PREFIX)

    def write(page: ProjectPage) -> None:
        html = render_project_html(page, url_for=url_for, repository_meta=True)
        for variant, body in (("index.html", html), ("index.v1_html", html),
                              ("index.v1_json", render_project_json(page, url_for=url_for))):
            atomic_write(layout.project_page(page.name, variant), body)

    return write


OLD = dist("demo", "1.0", 30)
NEW = dist("demo", "2.0", 1, digit="b")


@pytest.fixture
def demo(write_project) -> ProjectPage:
    page = project("demo", OLD, NEW)
    write_project(page)
    return page


def relpath_of(f: DistFile) -> str:
    return f.url[len(PACKAGES_URL) + 1:]


def hrefs(html: bytes) -> list[str]:
    return re.findall(r'href="([^"#]+)', html.decode())


# --------------------------------------------------------------------------- pages


@pytest.mark.gen_test
async def test_cooldown_page_keeps_only_files_old_enough_and_links_into_the_view(fetch, demo):
    response = await fetch("/pypi/+cooldown/7d/simple/demo/", headers={"Accept": V1_JSON})
    assert response.code == 200
    assert response.headers["Content-Type"] == V1_JSON
    assert response.headers["Vary"] == "Accept, Accept-Encoding"
    assert response.headers["X-PyPI-Last-Serial"] == "7"
    doc = json.loads(response.body)
    assert doc["versions"] == ["1.0"]
    assert [f["filename"] for f in doc["files"]] == [OLD.filename]
    assert doc["files"][0]["url"] == f"/pypi/+cooldown/7d/packages/{relpath_of(OLD)}"
    assert doc["files"][0]["upload-time"] == OLD.upload_time

    plain = json.loads((await fetch("/pypi/simple/demo/", headers={"Accept": V1_JSON})).body)
    assert plain["versions"] == ["1.0", "2.0"]


@pytest.mark.parametrize("accept", ["text/html", "application/vnd.pypi.simple.v1+html"])
@pytest.mark.gen_test
async def test_the_html_of_a_view_agrees_with_its_json(fetch, demo, accept):
    html = await fetch("/pypi/+cooldown/7d/simple/demo/", headers={"Accept": accept})
    doc = json.loads((await fetch("/pypi/+cooldown/7d/simple/demo/", headers={"Accept": V1_JSON})).body)
    assert html.code == 200
    assert hrefs(html.body) == [f["url"] for f in doc["files"]]
    assert re.findall(r">([^<]+)</a>", html.body.decode()) == [f["filename"] for f in doc["files"]]


@pytest.mark.parametrize("config_data", [{"views": VIEWS}], indirect=True)
@pytest.mark.parametrize(("view", "kept"), [("+cooldown/1m", ["1.1"]), ("+view/stable", ["1.1"]), ("+view/frozen", [])])
@pytest.mark.gen_test
async def test_a_file_without_upload_time_is_left_out_of_every_view(fetch, write_project, view, kept):
    undated = dist("undated", "1.0", None)
    write_project(project("undated", undated, dist("undated", "1.1", 40, digit="c")))
    doc = json.loads((await fetch(f"/pypi/{view}/simple/undated/", headers={"Accept": V1_JSON})).body)
    assert doc["versions"] == kept
    response = await fetch(f"/pypi/{view}/packages/{relpath_of(undated)}")
    assert response.code == 403
    assert response.headers[VIEW_REASON_HEADER].endswith("it has no upload time, so its age cannot be told")


@pytest.mark.parametrize("config_data", [{"views": VIEWS}], indirect=True)
@pytest.mark.gen_test
async def test_named_views_apply_min_age_exemptions_and_the_cut_off(fetch, demo, write_project):
    write_project(project("internal-tool", dist("internal-tool", "3.0", 0.5)))
    write_project(project("dated", dist("dated", "1.0", None, digit="c"),
                          dataclasses.replace(dist("dated", "0.9", 0, digit="d"), upload_time="2024-05-31T23:59:59Z"),
                          dataclasses.replace(dist("dated", "1.1", 0, digit="e"), upload_time="2024-06-01T00:00:01Z")))

    async def filenames(view: str, name: str) -> list[str]:
        response = await fetch(f"/pypi/+view/{view}/simple/{name}/", headers={"Accept": V1_JSON})
        assert response.code == 200, response.body
        return [f["filename"] for f in json.loads(response.body)["files"]]

    assert await filenames("stable", "demo") == [OLD.filename]
    assert await filenames("stable", "internal-tool") == ["internal_tool-3.0-py3-none-any.whl"]  # exempt
    assert await filenames("frozen", "dated") == ["dated-0.9-py3-none-any.whl"]


@pytest.mark.gen_test
async def test_a_quarantined_project_offers_no_files_in_a_view(fetch, write_project):
    page = project("held", dist("held", "1.0", 30))
    write_project(page)
    listed = page.files[0]
    write_project(project("held", status="quarantined"))
    doc = json.loads((await fetch("/pypi/+cooldown/7d/simple/held/", headers={"Accept": V1_JSON})).body)
    assert doc["files"] == [] and doc["versions"] == []
    assert doc["project-status"] == {"status": "quarantined"}
    response = await fetch(f"/pypi/+cooldown/7d/packages/{relpath_of(listed)}")
    assert response.code == 403
    assert "quarantined" in response.headers[VIEW_REASON_HEADER]


@pytest.mark.gen_test
async def test_root_pages_of_a_view_link_into_the_view(fetch, demo, write_root):
    write_root([("Demo", "demo", 7), ("other", "other", 3)], serial=9, gzip_siblings=True)
    html = await fetch("/pypi/+cooldown/7d/simple/")
    assert html.code == 200
    assert hrefs(html.body) == ["/pypi/+cooldown/7d/simple/demo/", "/pypi/+cooldown/7d/simple/other/"]
    view_json = await fetch("/pypi/+cooldown/7d/simple/", headers={"Accept": V1_JSON})
    plain_json = await fetch("/pypi/simple/", headers={"Accept": V1_JSON})
    assert view_json.code == 200 and view_json.body == plain_json.body
    gzipped = await fetch("/pypi/+cooldown/7d/simple/", headers={"Accept-Encoding": "gzip"})
    assert gzipped.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(gzipped.body) == html.body
    redirect = await fetch("/pypi/+cooldown/7d/simple")
    assert (redirect.code, redirect.headers["Location"]) == (301, "/pypi/+cooldown/7d/simple/")


@pytest.mark.gen_test
async def test_view_pages_have_validators_304_and_gzip(fetch, demo):
    first = await fetch("/pypi/+cooldown/7d/simple/demo/")
    etag = first.headers["ETag"]
    again = await fetch("/pypi/+cooldown/7d/simple/demo/", headers={"If-None-Match": etag})
    assert again.code == 304
    since = await fetch("/pypi/+cooldown/7d/simple/demo/", headers={"If-Modified-Since": first.headers["Last-Modified"]})
    assert since.code == 304
    zipped = await fetch("/pypi/+cooldown/7d/simple/demo/", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert zipped.headers["ETag"] != etag
    assert gzip.decompress(zipped.body) == first.body
    plain = await fetch("/pypi/simple/demo/")
    assert plain.headers["ETag"] != etag


@pytest.mark.gen_test
async def test_a_sync_that_changes_the_project_changes_its_view(fetch, demo, write_project):
    before = await fetch("/pypi/+cooldown/7d/simple/demo/", headers={"Accept": V1_JSON})
    newer_old = dist("demo", "1.5", 20, digit="c")
    write_project(project("demo", OLD, newer_old, NEW, serial=8))
    after = await fetch("/pypi/+cooldown/7d/simple/demo/", headers={"Accept": V1_JSON})
    assert json.loads(after.body)["versions"] == ["1.0", "1.5"]
    assert after.headers["X-PyPI-Last-Serial"] == "8"
    assert after.headers["ETag"] != before.headers["ETag"]


@pytest.mark.gen_test
async def test_a_file_coming_of_age_enters_the_view_without_a_sync(fetch, demo, clock):
    first = await fetch("/pypi/+cooldown/7d/simple/demo/", headers={"Accept": V1_JSON})
    assert json.loads(first.body)["versions"] == ["1.0"]
    clock.now = NOW + 6.5 * 86400
    later = await fetch("/pypi/+cooldown/7d/simple/demo/", headers={"Accept": V1_JSON})
    assert json.loads(later.body)["versions"] == ["1.0", "2.0"]
    assert later.headers["ETag"] != first.headers["ETag"]
    # Last-Modified moved with the content: an If-Modified-Since of the old copy gets the new one.
    moved = await fetch("/pypi/+cooldown/7d/simple/demo/", headers={
        "Accept": V1_JSON, "If-Modified-Since": first.headers["Last-Modified"]})
    assert moved.code == 200


@pytest.mark.gen_test
async def test_a_percent_encoded_plus_names_the_same_view(fetch, demo):
    """pip encodes the '+' of the links it follows."""
    encoded = await fetch("/pypi/%2Bcooldown/7d/simple/demo/", headers={"Accept": V1_JSON})
    plain = await fetch("/pypi/+cooldown/7d/simple/demo/", headers={"Accept": V1_JSON})
    assert (encoded.code, encoded.body) == (200, plain.body)
    assert (await fetch(f"/pypi/%2bcooldown/7d/packages/{relpath_of(NEW)}")).code == 403


@pytest.mark.gen_test
async def test_names_are_normalized_within_the_view(fetch, demo):
    response = await fetch("/pypi/+cooldown/7d/simple/Demo/?x=1")
    assert (response.code, response.headers["Location"]) == (301, "/pypi/+cooldown/7d/simple/demo/?x=1")
    response = await fetch("/pypi/+cooldown/7d/simple/demo")
    assert (response.code, response.headers["Location"]) == (301, "/pypi/+cooldown/7d/simple/demo/")
    missing = await fetch("/pypi/+cooldown/7d/simple/nothing-here/")
    assert (missing.code, missing.reason) == (404, "this mirror has no page of nothing-here")


# --------------------------------------------------------------------------- JSON API


@pytest.mark.parametrize("route", ["/pypi/+cooldown/7d/pypi/demo/json", "/pypi/+cooldown/7d/demo/json"])
@pytest.mark.gen_test
async def test_json_api_documents_show_only_what_the_view_offers(fetch, demo, layout, route):
    def api_file(f: DistFile) -> dict[str, object]:
        return {"filename": f.filename, "url": f.url, "upload_time_iso_8601": f.upload_time,
                "yanked": False, "yanked_reason": None}

    document = {"info": {"name": "demo", "version": "2.0"}, "last_serial": 7,
                "releases": {"1.0": [api_file(OLD)], "2.0": [api_file(NEW)], "0.1": []},
                "urls": [api_file(NEW)]}
    atomic_write(layout.json_document(NormalizedName("demo")), json.dumps(document).encode())
    response = await fetch(route)
    assert response.code == 200
    assert response.headers["X-PyPI-Last-Serial"] == "7"
    doc = json.loads(response.body)
    assert list(doc["releases"]) == ["1.0"]
    assert doc["info"]["version"] == "1.0"
    assert doc["urls"] == doc["releases"]["1.0"]
    assert doc["urls"][0]["url"] == f"/pypi/+cooldown/7d/packages/{relpath_of(OLD)}"
    redirect = await fetch(route.replace("demo", "Demo"))
    assert (redirect.code, redirect.headers["Location"]) == (301, route)


# --------------------------------------------------------------------------- files


@pytest.mark.gen_test
async def test_a_file_the_view_leaves_out_is_403_with_the_reason(fetch, demo, votes):
    response = await fetch(f"/pypi/+cooldown/7d/packages/{relpath_of(NEW)}")
    assert response.code == 403
    reason = response.headers[VIEW_REASON_HEADER]
    assert reason.startswith(f"refused by +cooldown/7d: {NEW.filename}: uploaded {NEW.upload_time}, less than 7d ago")
    assert reason in response.body.decode()
    metadata = await fetch(f"/pypi/+cooldown/7d/packages/{relpath_of(NEW)}.metadata")
    assert metadata.code == 403
    assert votes.offers == []
    plain = await fetch(f"/pypi/packages/{relpath_of(NEW)}")
    assert (plain.code, plain.headers["Location"]) == (302, f"{REDIRECT_URL}/{relpath_of(NEW)}")


@pytest.mark.gen_test
async def test_a_file_the_view_offers_is_answered_as_on_the_plain_index_and_votes(
    fetch, demo, votes, tmp_path, write_project
):
    held = tmp_path / "hot" / relpath_of(OLD)
    held.parent.mkdir(parents=True)
    held.write_bytes(b"x" * 100)
    served = await fetch(f"/pypi/+cooldown/7d/packages/{relpath_of(OLD)}")
    assert (served.code, served.body) == (200, b"x" * 100)
    assert [offer[0] for offer in votes.offers] == [relpath_of(OLD)]
    elsewhere = dist("elsewhere", "1.0", 30, digit="f")
    write_project(project("elsewhere", elsewhere))
    response = await fetch(f"/pypi/+cooldown/7d/packages/{relpath_of(elsewhere)}")
    assert (response.code, response.headers["Location"]) == (302, f"{REDIRECT_URL}/{relpath_of(elsewhere)}")
    assert [offer[0] for offer in votes.offers] == [relpath_of(OLD), relpath_of(elsewhere)]
    metadata = await fetch(f"/pypi/+cooldown/7d/packages/{relpath_of(elsewhere)}.metadata", method="HEAD")
    assert metadata.code == 302
    assert len(votes.offers) == 2


@pytest.mark.gen_test
async def test_a_file_no_page_lists_is_refused_by_a_view(fetch, demo):
    other_hash = "cd" * 30
    response = await fetch(f"/pypi/+cooldown/7d/packages/ab/cd/{other_hash}/{OLD.filename}")
    assert response.code == 403
    assert "the page of demo does not list this file" in response.headers[VIEW_REASON_HEADER]
    response = await fetch(f"/pypi/+cooldown/7d/packages/ab/cd/{other_hash}/unknown-1.0.tar.gz")
    assert response.code == 403
    assert response.headers[VIEW_REASON_HEADER] == (
        "refused by +cooldown/7d: unknown-1.0.tar.gz: this mirror has no page of unknown")
    response = await fetch(f"/pypi/+cooldown/7d/packages/ab/cd/{other_hash}/README")
    assert response.code == 403
    assert response.headers[VIEW_REASON_HEADER].endswith("README: the name of this file names no project")
    assert (await fetch("/pypi/+cooldown/7d/packages/../../etc/passwd")).code == 404


# --------------------------------------------------------------------------- bad view URLs


@pytest.mark.parametrize("config_data", [{"views": VIEWS}], indirect=True)
@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/pypi/+cooldown/7x/simple/demo/", "+cooldown/7x: '7x' is not a duration (expected e.g. 30m, 12h, 7d, 2w)"),
        ("/pypi/+cooldown/7/simple/", "+cooldown/7: '7' is not a duration (expected e.g. 30m, 12h, 7d, 2w)"),
        ("/pypi/+cooldown/0d/simple/demo/", "+cooldown/0d: '0d' is not longer than 0 (expected e.g. 30m, 12h, 7d, 2w)"),
        ("/pypi/+cooldown/99999d/packages/ab/cd/ef/demo-1.0.tar.gz", "+cooldown/99999d: '99999d' is too long (at most 3650d)"),
        ("/pypi/+cooldown/%E2%88%9E/simple/demo/", "+cooldown/\\u221e: '\\u221e' is not a duration (expected e.g. 30m, 12h, 7d, 2w)"),
        ("/pypi/+view/nope/simple/demo/", "no view named nope (known: frozen, stable)"),
        ("/pypi/+view/nope/pypi/demo/json", "no view named nope (known: frozen, stable)"),
        ("/pypi/+future/1d/simple/demo/", "no kind of view named future"),
        ("/pypi/+asof/2026-06-01/simple/demo/", "this mirror serves no index history"),
    ],
)
@pytest.mark.gen_test
async def test_a_url_naming_no_view_is_404_with_a_one_line_reason(fetch, demo, path, reason):
    response = await fetch(path)
    assert response.code == 404
    assert response.reason == reason
    assert response.body.decode() == f"404 {reason}\n"


@pytest.mark.gen_test
async def test_head_answers_as_get_without_the_body(fetch, demo, votes):
    get = await fetch("/pypi/+cooldown/7d/simple/demo/")
    head = await fetch("/pypi/+cooldown/7d/simple/demo/", method="HEAD")
    assert (head.code, head.body, head.headers["ETag"]) == (200, b"", get.headers["ETag"])
    assert head.headers["Content-Length"] == str(len(get.body))
    refused = await fetch(f"/pypi/+cooldown/7d/packages/{relpath_of(NEW)}", method="HEAD")
    assert refused.code == 403 and VIEW_REASON_HEADER in refused.headers
    offered = await fetch(f"/pypi/+cooldown/7d/packages/{relpath_of(OLD)}", method="HEAD")
    assert offered.code == 302
    assert votes.offers == []  # HEAD never votes


@pytest.mark.gen_test
async def test_a_stored_page_that_does_not_parse_is_503_not_500(fetch, layout):
    atomic_write(layout.project_page(NormalizedName("broken"), "index.v1_json"), b"{not json")
    response = await fetch("/pypi/+cooldown/7d/simple/broken/")
    assert response.code == 503
    assert (await fetch("/pypi/+cooldown/7d/packages/ab/cd/ef/broken-1.0.tar.gz")).code == 503
