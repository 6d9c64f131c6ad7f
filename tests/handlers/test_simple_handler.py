"""The simple index over HTTP: negotiation, validators, gzip, redirects, serials."""

from __future__ import annotations

import gzip
import json
import os
import time
from email.utils import formatdate

import pytest
from packaging.utils import NormalizedName
from tornado.web import HTTPError

from pypimirror import negotiation
from pypimirror.handlers import base, cached
from pypimirror.storage import MAX_PROJECT_NAME_LENGTH, RepoLayout, atomic_write

PIP_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"
UV_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
HTML = "text/html; charset=utf-8"
V1_HTML = "application/vnd.pypi.simple.v1+html"
V1_JSON = "application/vnd.pypi.simple.v1+json"


@pytest.fixture
def demo(make_page, write_project):
    page = make_page("demo", serial=42)
    write_project(page)
    return page


@pytest.mark.parametrize(
    ("accept", "query", "expected"),
    [
        (None, "", HTML),
        ("*/*", "", HTML),
        (PIP_ACCEPT, "", V1_JSON),
        (UV_ACCEPT, "", V1_JSON),
        ("text/html", "", HTML),
        ("application/vnd.pypi.simple.v1+html", "", V1_HTML),
        ("application/vnd.pypi.simple.latest+json", "", V1_JSON),
        ("application/vnd.pypi.simple.latest+html", "", V1_HTML),
        ("APPLICATION/VND.PYPI.SIMPLE.V1+JSON", "", V1_JSON),
        ("application/vnd.pypi.simple.v1+json;q=0.5, text/html;q=0.9", "", HTML),
        ("application/vnd.pypi.simple.v1+json;q=0, */*", "", HTML),
        ("application/*", "", V1_JSON),
        ("text/*;q=0.5, application/vnd.pypi.simple.v1+html;q=0.4", "", HTML),
        ("text/plain", "", None),
        ("application/json", "", None),
        ("text/html;q=0", "", None),
        ("text/html", "?format=application/vnd.pypi.simple.v1+json", V1_JSON),
        (PIP_ACCEPT, "?format=text/html", HTML),
        (None, "?format=application/vnd.pypi.simple.latest%2Bhtml", V1_HTML),
        (None, "?format=application/vnd.pypi.simple.v1+json", V1_JSON),  # '+' read as a space
        ("text/html", "?format=bogus", None),
    ],
)
@pytest.mark.gen_test
async def test_negotiation_picks_the_variant_or_406(fetch, demo, accept, query, expected):
    headers = {"Accept": accept} if accept is not None else {}
    response = await fetch(f"/pypi/simple/demo/{query}", headers=headers)
    assert response.headers["Vary"] == "Accept, Accept-Encoding"
    if expected is None:
        assert response.code == 406
        assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert response.body == b"406 Not Acceptable\n"
        return
    assert response.code == 200
    assert response.headers["Content-Type"] == expected
    assert response.headers["X-PyPI-Last-Serial"] == "42"
    if expected == V1_JSON:
        assert json.loads(response.body)["name"] == "demo"
    else:
        assert response.body.startswith(b"<!DOCTYPE html>")


@pytest.mark.gen_test
async def test_every_variant_of_a_project_page_sends_its_serial_and_validators(fetch, demo, layout: RepoLayout):
    for accept, variant in (("text/html", "index.html"), (V1_HTML, "index.v1_html"), (V1_JSON, "index.v1_json")):
        response = await fetch("/pypi/simple/demo/", headers={"Accept": accept})
        st = os.stat(layout.project_page(demo.name, variant))
        assert response.headers["X-PyPI-Last-Serial"] == "42"
        assert response.headers["ETag"] == f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
        assert response.headers["Last-Modified"] == formatdate(int(st.st_mtime), usegmt=True)
        assert response.headers["Content-Length"] == str(st.st_size)
        assert response.body == layout.project_page(demo.name, variant).read_bytes()


@pytest.mark.gen_test
async def test_matching_etag_or_fresh_date_gives_304_without_body(fetch, demo):
    first = await fetch("/pypi/simple/demo/", headers={"Accept": PIP_ACCEPT})
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    by_etag = await fetch("/pypi/simple/demo/", headers={"Accept": PIP_ACCEPT, "If-None-Match": f'W/"x", {etag}'})
    by_date = await fetch("/pypi/simple/demo/", headers={"Accept": PIP_ACCEPT, "If-Modified-Since": modified})
    for response in (by_etag, by_date):
        assert (response.code, response.body) == (304, b"")
        assert response.headers["ETag"] == etag
        assert response.headers["X-PyPI-Last-Serial"] == "42"
        assert "Content-Type" not in response.headers


@pytest.mark.gen_test
async def test_stale_validators_get_the_page(fetch, demo):
    old_date = formatdate(time.time() - 86400, usegmt=True)
    fresh_date = formatdate(time.time() + 60, usegmt=True)
    cases = [
        {"If-None-Match": '"nope"'},
        {"If-Modified-Since": old_date},
        {"If-None-Match": '"nope"', "If-Modified-Since": fresh_date},  # If-None-Match decides
        {"If-Modified-Since": "not a date"},
    ]
    for headers in cases:
        response = await fetch("/pypi/simple/demo/", headers=headers)
        assert response.code == 200, headers
        assert response.body.startswith(b"<!DOCTYPE html>")


# Dates a client may send that name no second we can compare with: each is ignored (RFC 9110).
UNREADABLE_DATES = [
    "Sat, 01 Jan 10000 00:00:00 GMT",  # year 10000: once a 500 from calendar.timegm
    "Sat Jan  1 00:00:00 10000",
    "Sat, 01 Jan 99999999999999999999 00:00:00 GMT",
    "Tue, 31 Feb 2000 00:00:00 GMT",
    "Sun, 06 Nov 2094 08:49:37",  # no zone: not an HTTP date, however far in the future
]


@pytest.mark.parametrize("since", UNREADABLE_DATES)
@pytest.mark.gen_test
async def test_unreadable_if_modified_since_is_ignored_on_every_page(fetch, demo, write_root, since):
    write_root([("Demo", "demo", 42)], serial=42, gzip_siblings=True)
    for path, encoding in (("/pypi/simple/demo/", "identity"), ("/pypi/simple/", "identity"),
                           ("/pypi/simple/", "gzip")):
        response = await fetch(path, headers={"If-Modified-Since": since, "Accept-Encoding": encoding})
        assert (response.code, path, encoding) == (200, path, encoding)
        assert response.body


@pytest.mark.gen_test
async def test_head_sends_the_headers_of_get_without_body(fetch, demo):
    get = await fetch("/pypi/simple/demo/", headers={"Accept": PIP_ACCEPT})
    head = await fetch("/pypi/simple/demo/", method="HEAD", headers={"Accept": PIP_ACCEPT})
    assert (head.code, head.body) == (200, b"")
    for name in ("Content-Type", "Content-Length", "ETag", "Last-Modified", "X-PyPI-Last-Serial", "Vary"):
        assert head.headers[name] == get.headers[name]


@pytest.mark.gen_test
async def test_project_page_is_gzipped_in_memory_once(fetch, demo, services):
    plain = await fetch("/pypi/simple/demo/", headers={"Accept": PIP_ACCEPT})
    zipped = [
        await fetch("/pypi/simple/demo/", headers={"Accept": PIP_ACCEPT, "Accept-Encoding": "br;q=1, gzip;q=0.5"})
        for _ in range(3)
    ]
    assert {z.headers["Content-Encoding"] for z in zipped} == {"gzip"}
    assert gzip.decompress(zipped[0].body) == plain.body
    assert zipped[0].headers["Content-Length"] == str(len(zipped[0].body))
    assert zipped[0].headers["ETag"] == plain.headers["ETag"][:-1] + '-gz"'
    assert zipped[0].body == zipped[2].body
    assert services.pages.stats.misses == 1  # one load, three hits; the compression is kept
    refused = await fetch("/pypi/simple/demo/", headers={"Accept": PIP_ACCEPT, "Accept-Encoding": "*, gzip;q=0"})
    assert "Content-Encoding" not in refused.headers and refused.body == plain.body


@pytest.mark.gen_test
async def test_gzip_etag_revalidates_only_the_gzip_representation(fetch, demo):
    headers = {"Accept": PIP_ACCEPT, "Accept-Encoding": "gzip"}
    zipped = await fetch("/pypi/simple/demo/", headers=headers)
    again = await fetch("/pypi/simple/demo/", headers={**headers, "If-None-Match": zipped.headers["ETag"]})
    plain = await fetch("/pypi/simple/demo/", headers={"Accept": PIP_ACCEPT, "If-None-Match": zipped.headers["ETag"]})
    assert (again.code, plain.code) == (304, 200)


@pytest.mark.gen_test
async def test_root_page_gzip_is_the_precompressed_sibling(fetch, write_root, layout: RepoLayout):
    write_root([("Demo", "demo", 42), ("other", "other", 7)], serial=99, gzip_siblings=True)
    zipped = await fetch("/pypi/simple/", headers={"Accept": PIP_ACCEPT, "Accept-Encoding": "gzip, deflate"})
    assert zipped.code == 200
    assert zipped.headers["Content-Type"] == V1_JSON
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert zipped.body == layout.root_page("index.v1_json.gz").read_bytes()
    projects = json.loads(gzip.decompress(zipped.body))["projects"]
    assert [p["name"] for p in projects] == ["Demo", "other"]
    plain = await fetch("/pypi/simple/", headers={"Accept": "text/html"})
    assert plain.body == layout.root_page("index.html").read_bytes()
    assert "Content-Encoding" not in plain.headers


@pytest.mark.gen_test
async def test_root_page_without_a_current_sibling_is_sent_uncompressed(fetch, write_root, layout: RepoLayout):
    write_root([("Demo", "demo", 42)], serial=99, gzip_siblings=False)
    missing = await fetch("/pypi/simple/", headers={"Accept": V1_JSON, "Accept-Encoding": "gzip"})
    atomic = layout.root_page("index.v1_json")
    stale = layout.root_page("index.v1_json.gz")
    stale.write_bytes(gzip.compress(b'{"old": true}'))
    os.utime(stale, ns=(atomic.stat().st_mtime_ns - 10**9,) * 2)  # left by an interrupted sync
    older = await fetch("/pypi/simple/", headers={"Accept": V1_JSON, "Accept-Encoding": "gzip"})
    for response in (missing, older):
        assert "Content-Encoding" not in response.headers
        assert response.body == atomic.read_bytes()


@pytest.mark.gen_test
@pytest.mark.parametrize("pages", [0], indirect=True)
async def test_replaced_page_is_served_fresh_with_a_new_etag(fetch, demo, make_page, write_project, pages):
    before = await fetch("/pypi/simple/demo/", headers={"Accept": V1_JSON})
    write_project(make_page("demo", serial=43))
    after = await fetch("/pypi/simple/demo/", headers={"Accept": V1_JSON})
    assert json.loads(before.body)["meta"]["_last-serial"] == 42
    assert json.loads(after.body)["meta"]["_last-serial"] == 43
    assert after.headers["X-PyPI-Last-Serial"] == "43"
    assert after.headers["ETag"] != before.headers["ETag"]


@pytest.mark.gen_test
async def test_a_page_held_in_memory_is_served_from_it_then_revalidated(
    fetch, demo, make_page, write_project, pages, monkeypatch
):
    first = await fetch("/pypi/simple/demo/", headers={"Accept": V1_JSON})
    write_project(make_page("demo", serial=43))
    second = await fetch("/pypi/simple/demo/", headers={"Accept": V1_JSON, "Accept-Encoding": "gzip"})
    third = await fetch("/pypi/simple/demo/", headers={"Accept": V1_JSON, "Accept-Encoding": "gzip"})
    assert first.body == gzip.decompress(second.body) == gzip.decompress(third.body)  # within the second: from memory
    assert (second.headers["X-PyPI-Last-Serial"], third.headers["Content-Encoding"]) == ("42", "gzip")
    monkeypatch.setattr(pages, "_clock", lambda: time.monotonic() + 1.0)  # a second later: looked at again
    later = await fetch("/pypi/simple/demo/", headers={"Accept": V1_JSON})
    assert json.loads(later.body)["meta"]["_last-serial"] == 43


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/pypi/simple/Demo/", "/pypi/simple/demo/"),
        ("/pypi/simple/demo", "/pypi/simple/demo/"),
        ("/pypi/simple/Foo_Bar.baz", "/pypi/simple/foo-bar-baz/"),
        ("/pypi/simple/DEMO/?format=text/html", "/pypi/simple/demo/?format=text/html"),
        ("/pypi/simple", "/pypi/simple/"),
        ("/pypi/simple?x=1", "/pypi/simple/?x=1"),
    ],
)
@pytest.mark.gen_test
async def test_unnormalized_or_slashless_paths_redirect_permanently(fetch, demo, path, location):
    for method in ("GET", "HEAD"):
        response = await fetch(path, method=method)
        assert (response.code, response.headers["Location"]) == (301, location)


@pytest.mark.parametrize(
    "path",
    [
        "/pypi/simple/nope/", "/pypi/simple/-demo/", "/pypi/simple/%2e%2e/", "/pypi/simple/a%2Fb/",
        "/pypi/simple/d%C3%A9mo/", "/pypi/simple/demo/extra/", "/pypi/simple/demo//",
    ],
)
@pytest.mark.gen_test
async def test_missing_or_invalid_projects_are_404(fetch, demo, path):
    response = await fetch(path, headers={"Accept": PIP_ACCEPT})
    assert response.code == 404
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.body == b"404 Not Found\n"


OVERLONG = "a" * (MAX_PROJECT_NAME_LENGTH + 1)


@pytest.mark.parametrize(
    "path",
    [
        f"/pypi/simple/{OVERLONG}/", f"/pypi/simple/{OVERLONG}", f"/pypi/simple/{'A' * 256}/",
        f"/pypi/simple/{'a' * 10_000}/", f"/pypi/pypi/{OVERLONG}/json", f"/pypi/{OVERLONG}/json",
        f"/pypi/{'a_' * 200}b/json",  # would normalize to 401 characters
    ],
)
@pytest.mark.gen_test
async def test_overlong_project_names_are_404_without_being_normalized_or_cached(fetch, demo, path):
    before = cached._cached_normalized_name.cache_info()
    response = await fetch(path, headers={"Accept": PIP_ACCEPT})
    assert (response.code, response.body) == (404, b"404 Not Found\n")
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    after = cached._cached_normalized_name.cache_info()
    assert (after.hits, after.misses, after.currsize) == (before.hits, before.misses, before.currsize)


def test_name_cache_keys_are_bounded_by_the_name_length():
    before = cached._cached_normalized_name.cache_info()
    for i in range(50):
        with pytest.raises(HTTPError) as refused:
            cached.normalized_name(f"{i}{'x' * 60_000}")
        assert refused.value.status_code == 404
    assert cached._cached_normalized_name.cache_info() == before


@pytest.mark.parametrize("config_data", [{"trusted_proxies": ["127.0.0.1/32"]}], indirect=True)
@pytest.mark.gen_test
async def test_no_cache_keyed_by_a_request_header_keeps_a_long_value(fetch, demo):
    caches = {
        "name": cached._cached_normalized_name,
        "accept": negotiation._cached_variant_for_accept,
        "accept-encoding": cached._cached_accepts_gzip,
        "forwarded-for": base._cached_identify_client,
    }
    before = {label: cache.cache_info().currsize for label, cache in caches.items()}
    for i in range(20):
        padding = f"{i:04d}" + "x" * 2000
        response = await fetch(f"/pypi/simple/demo-{padding}/", headers={
            "Accept": f"text/html, application/x-{padding}",
            "Accept-Encoding": f"gzip, x-{padding}",
            "X-Forwarded-For": f"192.0.2.{i}, {'10.0.0.1, ' * 300}127.0.0.1",
        })
        assert response.code == 404
        response = await fetch("/pypi/simple/demo/", headers={
            "Accept": f"text/html, application/x-{padding}", "Accept-Encoding": f"gzip, x-{padding}",
        })
        assert response.code == 200
    grown = {label: cache.cache_info().currsize - before[label] for label, cache in caches.items()}
    # At most the short keys of this test ("demo", the bare peer), if no earlier test cached them.
    assert all(count <= 1 for count in grown.values()), grown


@pytest.mark.gen_test
async def test_the_longest_name_allowed_is_stored_and_served(fetch, make_page, write_project, layout: RepoLayout):
    longest = "l" * MAX_PROJECT_NAME_LENGTH
    write_project(make_page(longest))
    atomic_write(layout.json_document(NormalizedName(longest)), b'{"last_serial": 42}\n')
    for path in (f"/pypi/simple/{longest}/", f"/pypi/pypi/{longest}/json", f"/pypi/{longest}/json"):
        response = await fetch(path)
        assert (response.code, response.headers["X-PyPI-Last-Serial"]) == (200, "42"), path
    redirected = await fetch(f"/pypi/simple/{longest.upper()}/")
    assert (redirected.code, redirected.headers["Location"]) == (301, f"/pypi/simple/{longest}/")


@pytest.mark.gen_test
async def test_a_page_that_cannot_be_read_is_503_logged_in_one_line(fetch, demo, layout: RepoLayout, caplog):
    page = layout.project_page(demo.name, "index.html")
    page.unlink()
    page.mkdir()  # opening it fails with EISDIR: there is something, but not a readable page
    response = await fetch("/pypi/simple/demo/", headers={"Accept": "text/html"})
    assert (response.code, response.body) == (503, b"503 Service Unavailable\n")
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    [record] = [r for r in caplog.records if r.levelname != "DEBUG" and str(page) in r.getMessage()]
    assert record.exc_info is None
    assert f"cannot read page {page}: Is a directory" in record.getMessage()
    other = await fetch("/pypi/simple/demo/", headers={"Accept": V1_JSON})
    assert other.code == 200  # the project's other pages are not affected


@pytest.mark.gen_test
async def test_a_root_page_that_cannot_be_read_is_503(fetch, write_root, layout: RepoLayout):
    write_root([("Demo", "demo", 42)], serial=42, gzip_siblings=True)
    for variant in ("index.html", "index.html.gz"):
        layout.root_page(variant).unlink()
        layout.root_page(variant).mkdir()
    for encoding in ("gzip", "identity"):
        response = await fetch("/pypi/simple/", headers={"Accept": "text/html", "Accept-Encoding": encoding})
        assert response.code == 503, encoding


@pytest.mark.gen_test
async def test_root_page_missing_is_404(fetch):
    assert (await fetch("/pypi/simple/")).code == 404
