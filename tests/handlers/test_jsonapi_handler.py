"""The stored JSON-API documents over HTTP: both routes, redirects, serial, validators, gzip."""

from __future__ import annotations

import gzip
import json

import pytest
from packaging.utils import NormalizedName

from pypimirror.storage import RepoLayout, atomic_write

DOCUMENT = {"info": {"name": "Demo", "version": "1.0"}, "last_serial": 77, "releases": {"1.0": []}, "urls": []}


@pytest.fixture
def document(layout: RepoLayout) -> bytes:
    body = json.dumps(DOCUMENT, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    atomic_write(layout.json_document(NormalizedName("demo")), body)
    return body


@pytest.mark.parametrize(
    "path", ["/pypi/pypi/demo/json", "/pypi/demo/json", "/pypi/pypi/demo/json/", "/pypi/demo/json/"]
)
@pytest.mark.gen_test
async def test_document_is_served_with_its_serial(fetch, document, path):
    response = await fetch(path)
    assert response.code == 200
    assert response.body == document
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["X-PyPI-Last-Serial"] == "77"
    assert response.headers["Vary"] == "Accept-Encoding"
    assert response.headers["ETag"].startswith('"')


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/pypi/pypi/Demo/json", "/pypi/pypi/demo/json"),
        ("/pypi/Demo/json", "/pypi/demo/json"),
        ("/pypi/pypi/Foo_Bar/json/", "/pypi/pypi/foo-bar/json"),
    ],
)
@pytest.mark.gen_test
async def test_unnormalized_name_redirects_to_the_same_route(fetch, path, location):
    response = await fetch(path)
    assert (response.code, response.headers["Location"]) == (301, location)


@pytest.mark.parametrize(
    "path",
    ["/pypi/pypi/nope/json", "/pypi/nope/json", "/pypi/pypi/-x-/json", "/pypi/pypi/demo/1.0/json", "/pypi/a/b/json"],
)
@pytest.mark.gen_test
async def test_missing_or_invalid_documents_are_404(fetch, document, path):
    response = await fetch(path)
    assert (response.code, response.headers["Content-Type"]) == (404, "text/plain; charset=utf-8")


@pytest.mark.gen_test
async def test_document_revalidates_and_compresses(fetch, document):
    first = await fetch("/pypi/pypi/demo/json")
    not_modified = await fetch("/pypi/pypi/demo/json", headers={"If-None-Match": first.headers["ETag"]})
    zipped = await fetch("/pypi/pypi/demo/json", headers={"Accept-Encoding": "gzip"})
    head = await fetch("/pypi/pypi/demo/json", method="HEAD")
    assert (not_modified.code, not_modified.headers["X-PyPI-Last-Serial"]) == (304, "77")
    assert gzip.decompress(zipped.body) == document
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert (head.code, head.body, head.headers["Content-Length"]) == (200, b"", str(len(document)))


@pytest.mark.gen_test
async def test_document_without_a_serial_is_served_without_the_header(fetch, layout: RepoLayout):
    atomic_write(layout.json_document(NormalizedName("demo")), b'{"info": {}}')
    response = await fetch("/pypi/demo/json")
    assert response.code == 200
    assert "X-PyPI-Last-Serial" not in response.headers


@pytest.mark.gen_test
async def test_simple_route_wins_over_a_project_named_simple(fetch, layout: RepoLayout, make_page, write_project):
    write_project(make_page("json", serial=5))
    response = await fetch("/pypi/simple/json/")
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"  # the simple page of "json"


@pytest.mark.parametrize("since", ["Sat, 01 Jan 10000 00:00:00 GMT", "Tue, 31 Feb 2000 00:00:00 GMT"])
@pytest.mark.gen_test
async def test_unreadable_if_modified_since_is_ignored(fetch, document, since):
    for path in ("/pypi/pypi/demo/json", "/pypi/demo/json"):
        response = await fetch(path, headers={"If-Modified-Since": since})
        assert (response.code, response.body) == (200, document)
