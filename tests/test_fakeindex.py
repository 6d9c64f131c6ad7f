"""The fake upstream index must itself be right: every later test trusts its answers."""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import re
import subprocess
import sys
import tarfile
import time
import xmlrpc.client
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from tornado.httpclient import AsyncHTTPClient

from fakedists import DistSpec, build_sdist, build_wheel, dist_name
from fakeindex import HTML_V1, JSON_V1, FakeIndex, choose_page_type, running_fake_index, select_range
from installers import installer_env, uv_executable

PIP_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"


@pytest.fixture
def fake() -> Iterator[FakeIndex]:
    yield from running_fake_index()


@dataclass
class Answer:
    status: int
    headers: Message
    body: bytes


def fetch(fake: FakeIndex, path: str, *, method: str = "GET", headers: dict[str, str] | None = None,
          body: bytes | None = None) -> Answer:
    """One request on a fresh connection, redirects not followed."""
    connection = http.client.HTTPConnection(urlsplit(fake.url).netloc, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        connection.close()


def fetch_json(fake: FakeIndex, path: str) -> tuple[Answer, dict[str, Any]]:
    answer = fetch(fake, path, headers={"Accept": JSON_V1})
    assert answer.status == 200, answer
    return answer, json.loads(answer.body)


def call_xmlrpc(fake: FakeIndex, method: str) -> Answer:
    body = xmlrpc.client.dumps((), method).encode()
    return fetch(fake, "/pypi", method="POST", headers={"Content-Type": "text/xml"}, body=body)


# --------------------------------------------------------------------------------------------
# Distributions


@pytest.mark.parametrize(
    ("name", "expected"),
    [("pkg-a", "pkg_a"), ("Foo.Bar", "foo_bar"), ("FrIeNdLy-._.-bArD", "friendly_bard"), ("x", "x")],
)
def test_dist_name_normalizes_with_underscores(name: str, expected: str) -> None:
    assert dist_name(name) == expected


SPEC = DistSpec("Pkg.A", "1.0", ">=3.8", ("pkg-b>=1", "six; extra == 'x'"))


def test_wheel_is_valid_zip_whose_record_hashes_match() -> None:
    wheel = build_wheel(SPEC)
    assert wheel.filename == "pkg_a-1.0-py3-none-any.whl"
    with zipfile.ZipFile(io.BytesIO(wheel.content)) as archive:
        assert archive.testzip() is None
        record = archive.read("pkg_a-1.0.dist-info/RECORD").decode().splitlines()
        assert set(archive.namelist()) == {line.split(",")[0] for line in record}
        for line in record:
            path, digest, size = line.split(",")
            if path.endswith("RECORD"):
                assert (digest, size) == ("", "")
                continue
            data = archive.read(path)
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert (digest, int(size)) == (f"sha256={expected}", len(data))
        assert "Tag: py3-none-any" in archive.read("pkg_a-1.0.dist-info/WHEEL").decode()


def test_wheel_metadata_carries_name_version_requires_python_and_dependencies() -> None:
    wheel = build_wheel(SPEC)
    with zipfile.ZipFile(io.BytesIO(wheel.content)) as archive:
        metadata = archive.read("pkg_a-1.0.dist-info/METADATA")
    assert metadata == wheel.metadata
    parsed = BytesParser().parsebytes(metadata)
    assert parsed["Metadata-Version"] == "2.1"
    assert (parsed["Name"], parsed["Version"], parsed["Requires-Python"]) == ("Pkg.A", "1.0", ">=3.8")
    assert parsed.get_all("Requires-Dist") == ["pkg-b>=1", "six; extra == 'x'"]


def test_sdist_is_valid_tar_gz_with_pkg_info_and_pyproject() -> None:
    sdist = build_sdist(SPEC)
    assert (sdist.filename, sdist.packagetype, sdist.python_version) == ("pkg_a-1.0.tar.gz", "sdist", "source")
    assert sdist.metadata is None
    with tarfile.open(fileobj=io.BytesIO(sdist.content), mode="r:gz") as archive:
        names = archive.getnames()
        pkg_info = archive.extractfile("pkg_a-1.0/PKG-INFO").read()  # type: ignore[union-attr]
        pyproject = archive.extractfile("pkg_a-1.0/pyproject.toml").read().decode()  # type: ignore[union-attr]
    assert names == sorted(names)
    assert "pkg_a-1.0/pkg_a/__init__.py" in names
    assert b"Requires-Dist: pkg-b>=1" in pkg_info
    assert 'build-backend = "setuptools.build_meta"' in pyproject
    assert "dependencies = [\"pkg-b>=1\", \"six; extra == 'x'\"]" in pyproject


def test_builds_are_deterministic_and_path_follows_blake2b() -> None:
    spec = DistSpec("det", "2.0", payload_size=100_000)  # above the cache limit: really rebuilt
    first, second = build_wheel(spec), build_wheel(spec)
    assert first is not second and first.content == second.content
    assert build_sdist(spec).content == build_sdist(spec).content
    b2 = hashlib.blake2b(first.content, digest_size=32).hexdigest()
    assert first.path == f"/packages/{b2[:2]}/{b2[2:4]}/{b2[4:]}/det-2.0-py3-none-any.whl"
    assert first.blake2b_256 == b2 and len(b2[4:]) == 60
    assert first.md5 == hashlib.md5(first.content).hexdigest()


def test_payload_size_pads_both_files() -> None:
    small, padded = DistSpec("pad", "1.0"), DistSpec("pad", "1.0", payload_size=300_000)
    assert 300_000 < build_wheel(padded).size < 300_000 + 2_000 + build_wheel(small).size
    assert build_sdist(padded).size > 300_000


# --------------------------------------------------------------------------------------------
# Pure helpers


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "text/html"),
        ("", "text/html"),
        ("*/*", "text/html"),
        ("text/plain", "text/html"),
        (PIP_ACCEPT, JSON_V1),
        (f"{JSON_V1}, {HTML_V1};q=0.2, text/html;q=0.01", JSON_V1),
        (JSON_V1, JSON_V1),
        (HTML_V1, HTML_V1),
        (f"text/html, {HTML_V1}, {JSON_V1}", "text/html"),  # ties go to the server's order
        (f"{JSON_V1};q=0.5, text/html;q=0.9", "text/html"),
        ("application/*", HTML_V1),
        ("application/vnd.pypi.simple.latest+json", "text/html"),  # PyPI does not offer latest
        (f"{JSON_V1};q=0, */*;q=0.1", "text/html"),
    ],
)
def test_choose_page_type_negotiates_like_pypi(accept: str | None, expected: str) -> None:
    assert choose_page_type(accept) == expected


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 100, None),
        ("bytes=0-9", 100, (0, 10)),
        ("bytes=90-", 100, (90, 100)),
        ("bytes=-5", 100, (95, 100)),
        ("bytes=-500", 100, (0, 100)),
        ("bytes=50-1000", 100, (50, 100)),
        ("bytes=99-99", 100, (99, 100)),
        ("bytes=5-3", 100, None),
        ("bytes=0-1,5-6", 100, None),
        ("items=0-1", 100, None),
        ("bytes=x-1", 100, None),
        ("bytes=-", 100, None),
    ],
)
def test_select_range_picks_single_byte_ranges(header: str | None, size: int, expected: tuple[int, int] | None) -> None:
    assert select_range(header, size) == expected


@pytest.mark.parametrize(("header", "size"), [("bytes=100-", 100), ("bytes=-0", 100), ("bytes=0-0", 0)])
def test_select_range_rejects_unsatisfiable_ranges(header: str, size: int) -> None:
    with pytest.raises(ValueError, match=f"unsatisfiable range '{header}' for {size} bytes"):
        select_range(header, size)


# --------------------------------------------------------------------------------------------
# Simple API


def test_root_json_lists_display_names_with_serials_in_normalized_order(fake: FakeIndex) -> None:
    fake.add_project("Zed")
    fake.add_project("alpha.Beta")
    fake.add_project("Alpha")
    answer, document = fetch_json(fake, "/simple/")
    assert answer.headers["Content-Type"] == JSON_V1
    assert answer.headers["X-PyPI-Last-Serial"] == "3"
    assert document == {
        "meta": {"api-version": "1.4", "_last-serial": 3},
        "projects": [
            {"name": "Alpha", "_last-serial": 3},
            {"name": "alpha.Beta", "_last-serial": 2},
            {"name": "Zed", "_last-serial": 1},
        ],
    }


def test_root_html_links_normalized_names(fake: FakeIndex) -> None:
    fake.add_project("Foo.Bar")
    answer = fetch(fake, "/simple/")
    assert answer.headers["Content-Type"] == "text/html"
    assert answer.headers["Vary"] == "Accept"
    assert '<meta name="pypi:repository-version" content="1.4">' in answer.body.decode()
    assert '<a href="/simple/foo-bar/">Foo.Bar</a>' in answer.body.decode()


def test_project_json_has_every_key_and_hashes_of_the_served_bytes(fake: FakeIndex) -> None:
    fake.add_project("Pkg.A", ["1.0", "0.9"], requires_python=">=3.8", status="deprecated")
    fake.yank("pkg-a", "0.9", "broken")
    answer, document = fetch_json(fake, "/simple/pkg-a/")
    assert answer.headers["Content-Type"] == JSON_V1
    assert answer.headers["X-PyPI-Last-Serial"] == "2"
    assert document["meta"] == {"api-version": "1.4", "_last-serial": 2}
    assert (document["name"], document["versions"]) == ("pkg-a", ["0.9", "1.0"])
    assert document["project-status"] == {"status": "deprecated"}
    assert [f["filename"] for f in document["files"]] == [
        "pkg_a-0.9-py3-none-any.whl", "pkg_a-0.9.tar.gz", "pkg_a-1.0-py3-none-any.whl", "pkg_a-1.0.tar.gz",
    ]
    assert [f["yanked"] for f in document["files"]] == ["broken", "broken", False, False]
    for entry in document["files"]:
        assert set(entry) == {
            "filename", "url", "hashes", "requires-python", "size", "upload-time", "yanked",
            "core-metadata", "data-dist-info-metadata", "provenance",
        }
        assert entry["url"].startswith(fake.packages_url + "/")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z", entry["upload-time"])
        assert (entry["requires-python"], entry["provenance"]) == (">=3.8", None)
        served = fetch(fake, urlsplit(entry["url"]).path).body
        assert entry["hashes"] == {"sha256": hashlib.sha256(served).hexdigest()}
        assert entry["size"] == len(served)
        assert entry["core-metadata"] == entry["data-dist-info-metadata"]
        assert bool(entry["core-metadata"]) == entry["filename"].endswith(".whl")


def test_project_html_escapes_data_attributes(fake: FakeIndex) -> None:
    fake.add_project("pkg", ["1.0"], requires_python=">=3.8,<4", sdist=False, status="archived")
    fake.yank("pkg", "1.0", 'a "bad" <one>')
    answer = fetch(fake, "/simple/pkg/", headers={"Accept": "text/html"})
    page = answer.body.decode()
    wheel = fake.files("pkg", "1.0")[0]
    assert answer.headers["X-PyPI-Last-Serial"] == "2"
    assert '<meta name="pypi:project-status" content="archived">' in page
    assert (
        f'<a href="{fake.file_url(wheel)}#sha256={wheel.sha256}" data-requires-python="&gt;=3.8,&lt;4"'
        f' data-yanked="a &quot;bad&quot; &lt;one&gt;" data-dist-info-metadata="sha256={wheel.metadata_sha256}"'
        f' data-core-metadata="sha256={wheel.metadata_sha256}">pkg-1.0-py3-none-any.whl</a><br />'
    ) in page
    assert page.endswith("</html>\n<!--SERIAL 2-->\n")


@pytest.mark.parametrize(
    ("path", "location"),
    [("/simple/Pkg.A/", "/simple/pkg-a/"), ("/simple/pkg-a", "/simple/pkg-a/"), ("/simple", "/simple/"),
     ("/pypi/Pkg_A/json", "/pypi/pkg-a/json"), ("/pypi/PKG-A/1.0/json", "/pypi/pkg-a/1.0/json")],
)
def test_non_canonical_urls_redirect_permanently(fake: FakeIndex, path: str, location: str) -> None:
    fake.add_project("Pkg.A")
    answer = fetch(fake, path)
    assert (answer.status, answer.headers["Location"]) == (301, location)


@pytest.mark.parametrize("path", ["/simple/nope/", "/pypi/nope/json", "/pypi/pkg/9.9/json", "/other"])
def test_unknown_things_are_404(fake: FakeIndex, path: str) -> None:
    fake.add_project("pkg")
    answer = fetch(fake, path)
    assert (answer.status, answer.body) == (404, b"404 Not Found\n")


def test_quarantined_project_has_no_files_and_no_json_api(fake: FakeIndex) -> None:
    fake.add_project("pkg", status="quarantined")
    _, document = fetch_json(fake, "/simple/pkg/")
    assert (document["files"], document["versions"]) == ([], [])
    assert fetch(fake, "/pypi/pkg/json").status == 404


# --------------------------------------------------------------------------------------------
# JSON API, XML-RPC


def test_json_api_document_has_pypi_keys(fake: FakeIndex) -> None:
    fake.add_project("Pkg.A", ["1.0", "2.0", "3.0rc1"], dependencies=["pkg-b"], requires_python=">=3.9")
    fake.add_release("pkg-a", "0.5", wheel=False)
    fake.yank("pkg-a", "2.0")
    answer = fetch(fake, "/pypi/pkg-a/json")
    document = json.loads(answer.body)
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.headers["X-PyPI-Last-Serial"] == "3" == str(document["last_serial"])
    assert answer.body.endswith(b"}\n")
    info = document["info"]
    assert (info["name"], info["version"], info["requires_python"]) == ("Pkg.A", "1.0", ">=3.9")
    assert (info["requires_dist"], info["yanked"], info["yanked_reason"]) == (["pkg-b"], False, None)
    assert set(document["releases"]) == {"0.5", "1.0", "2.0", "3.0rc1"}
    assert [f["filename"] for f in document["releases"]["0.5"]] == ["pkg_a-0.5.tar.gz"]
    assert [f["filename"] for f in document["urls"]] == ["pkg_a-1.0-py3-none-any.whl", "pkg_a-1.0.tar.gz"]
    wheel_entry, sdist_entry = document["releases"]["2.0"]
    assert set(wheel_entry) >= {
        "filename", "url", "digests", "md5_digest", "size", "upload_time", "upload_time_iso_8601",
        "requires_python", "yanked", "yanked_reason", "packagetype", "python_version", "core-metadata",
    }
    wheel = fake.files("pkg-a", "2.0")[0]
    assert wheel_entry["digests"] == {"md5": wheel.md5, "sha256": wheel.sha256, "blake2b_256": wheel.blake2b_256}
    assert wheel_entry["md5_digest"] == wheel.md5
    assert wheel_entry["url"] == fake.file_url(wheel)
    assert (wheel_entry["yanked"], wheel_entry["yanked_reason"]) == (True, None)
    assert (wheel_entry["packagetype"], wheel_entry["python_version"]) == ("bdist_wheel", "py3")
    assert (sdist_entry["packagetype"], sdist_entry["python_version"]) == ("sdist", "source")
    assert wheel_entry["core-metadata"] == {"sha256": wheel.metadata_sha256}
    assert sdist_entry["core-metadata"] is False
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", wheel_entry["upload_time"])
    assert wheel_entry["upload_time_iso_8601"].startswith(wheel_entry["upload_time"] + ".")


def test_json_api_for_one_version_has_no_releases(fake: FakeIndex) -> None:
    fake.add_project("pkg", ["1.0", "2.0"])
    document = json.loads(fetch(fake, "/pypi/pkg/1.0/json").body)
    assert "releases" not in document
    assert document["info"]["version"] == "1.0"


def test_json_api_is_404_for_a_project_without_releases(fake: FakeIndex) -> None:
    fake.add_project("empty", versions=())
    assert fetch(fake, "/pypi/empty/json").status == 404


def test_xmlrpc_lists_packages_with_serial(fake: FakeIndex) -> None:
    fake.add_project("Foo")
    fake.add_project("bar")
    answer = call_xmlrpc(fake, "list_packages_with_serial")
    assert (answer.status, answer.headers["Content-Type"]) == (200, "text/xml")
    (listing,), _ = xmlrpc.client.loads(answer.body)
    assert listing == {"Foo": 1, "bar": 2}
    (serial,), _ = xmlrpc.client.loads(call_xmlrpc(fake, "changelog_last_serial").body)
    assert serial == 2


def test_xmlrpc_unknown_method_is_a_fault(fake: FakeIndex) -> None:
    answer = call_xmlrpc(fake, "no_such_method")
    assert answer.status == 200
    with pytest.raises(xmlrpc.client.Fault, match="requested method not found: 'no_such_method'"):
        xmlrpc.client.loads(answer.body)


# --------------------------------------------------------------------------------------------
# Files


def test_metadata_file_is_the_wheels_metadata_and_matches_core_metadata(fake: FakeIndex) -> None:
    fake.add_project("pkg", dependencies=["dep"])
    _, document = fetch_json(fake, "/simple/pkg/")
    wheel_entry = next(f for f in document["files"] if f["filename"].endswith(".whl"))
    sdist_entry = next(f for f in document["files"] if f["filename"].endswith(".tar.gz"))
    wheel_bytes = fetch(fake, urlsplit(wheel_entry["url"]).path).body
    metadata = fetch(fake, urlsplit(wheel_entry["url"]).path + ".metadata")
    with zipfile.ZipFile(io.BytesIO(wheel_bytes)) as archive:
        assert metadata.body == archive.read("pkg-1.0.dist-info/METADATA")
    assert wheel_entry["core-metadata"] == {"sha256": hashlib.sha256(metadata.body).hexdigest()}
    assert fetch(fake, urlsplit(sdist_entry["url"]).path + ".metadata").status == 404


def test_file_answers_ranges_head_and_conditional_requests(fake: FakeIndex) -> None:
    fake.add_project("pkg")
    wheel = fake.files("pkg", "1.0")[0]
    full = fetch(fake, wheel.path)
    assert (full.status, full.body, full.headers["Content-Length"]) == (200, wheel.content, str(wheel.size))
    assert full.headers["Content-Type"] == "application/octet-stream"
    assert full.headers["ETag"] == f'"{wheel.sha256}"'
    assert full.headers["Last-Modified"] == "Mon, 01 Jan 2024 00:01:00 GMT"
    part = fetch(fake, wheel.path, headers={"Range": "bytes=10-19"})
    assert (part.status, part.body) == (206, wheel.content[10:20])
    assert part.headers["Content-Range"] == f"bytes 10-19/{wheel.size}"
    tail = fetch(fake, wheel.path, headers={"Range": "bytes=-22"})
    assert (tail.status, tail.body) == (206, wheel.content[-22:])
    beyond = fetch(fake, wheel.path, headers={"Range": f"bytes={wheel.size}-"})
    assert (beyond.status, beyond.headers["Content-Range"]) == (416, f"bytes */{wheel.size}")
    head = fetch(fake, wheel.path, method="HEAD")
    assert (head.status, head.body, head.headers["Content-Length"]) == (200, b"", str(wheel.size))
    cached = fetch(fake, wheel.path, headers={"If-None-Match": f'"{wheel.sha256}"'})
    assert (cached.status, cached.body) == (304, b"")


@pytest.mark.parametrize(
    "path",
    [
        "/packages/00/00/" + "0" * 60 + "/pkg-1.0-py3-none-any.whl",  # right name, wrong hash
        "/packages/00/00/" + "0" * 60 + "/nope-1.0.tar.gz",
        "/packages/00/00/" + "0" * 60 + "/not-a-dist.txt",
        "/packages/00/00/short/pkg-1.0.tar.gz",
    ],
)
def test_unknown_files_are_404(fake: FakeIndex, path: str) -> None:
    fake.add_project("pkg")
    assert fetch(fake, path).status == 404


def test_files_are_found_before_any_page_was_rendered_and_vanish_with_the_project(fake: FakeIndex) -> None:
    fake.add_project("pkg")
    wheel = build_wheel(DistSpec("pkg", "1.0"))  # built outside the index: same bytes, same path
    assert fetch(fake, wheel.path).body == wheel.content
    fake.remove_project("pkg")
    assert fetch(fake, wheel.path).status == 404


def test_two_indexes_serve_identical_files_and_pages(fake: FakeIndex) -> None:
    with FakeIndex() as other:
        for index in (fake, other):
            index.add_project("pkg-a", ["1.0", "1.1"], dependencies=["pkg-b"], payload_size=10_000)
            index.yank("pkg-a", "1.0")
        assert fake.files("pkg-a") == other.files("pkg-a")
        pages = [fetch(index, "/pypi/pkg-a/json").body.replace(index.url.encode(), b"URL") for index in (fake, other)]
        assert pages[0] == pages[1]
        wheel = fake.files("pkg-a", "1.1")[0]
        assert fetch(fake, wheel.path).body == fetch(other, wheel.path).body == wheel.content


# --------------------------------------------------------------------------------------------
# Mutations and serials


def test_every_change_gives_the_project_a_new_global_serial(fake: FakeIndex) -> None:
    project = fake.add_project("pkg")
    fake.add_project("other")
    steps: list[Callable[[], object]] = [
        lambda: fake.add_release("pkg", "2.0"),
        lambda: fake.yank("pkg", "2.0", "oops"),
        lambda: fake.unyank("pkg", "2.0"),
        lambda: fake.rename_display("pkg", "PKG"),
        lambda: fake.bump("pkg"),
        lambda: fake.set_status("pkg", "archived"),
    ]
    for step in steps:
        before = fake.serial
        step()
        assert project.last_serial == fake.serial == before + 1
    (listing,), _ = xmlrpc.client.loads(call_xmlrpc(fake, "list_packages_with_serial").body)
    assert listing == {"PKG": 8, "other": 2}


def test_yank_and_unyank_show_on_pages(fake: FakeIndex) -> None:
    fake.add_project("pkg", ["1.0"], sdist=False)
    fake.yank("pkg", "1.0")
    assert [f["yanked"] for f in fetch_json(fake, "/simple/pkg/")[1]["files"]] == [True]
    assert 'data-yanked=""' in fetch(fake, "/simple/pkg/").body.decode()
    fake.unyank("pkg", "1.0")
    assert [f["yanked"] for f in fetch_json(fake, "/simple/pkg/")[1]["files"]] == [False]


def test_removed_project_leaves_listing_and_bumps_global_serial(fake: FakeIndex) -> None:
    fake.add_project("pkg")
    fake.add_project("keep")
    fake.remove_project("PKG")
    answer, document = fetch_json(fake, "/simple/")
    assert document["projects"] == [{"name": "keep", "_last-serial": 2}]
    assert document["meta"]["_last-serial"] == 3 == fake.serial
    assert fetch(fake, "/simple/pkg/").status == 404
    assert fetch(fake, "/pypi/pkg/json").status == 404


def test_rename_display_keeps_normalized_name(fake: FakeIndex) -> None:
    fake.add_project("Foo-Bar")
    fake.rename_display("foo-bar", "foo_BAR")
    _, document = fetch_json(fake, "/simple/")
    assert document["projects"] == [{"name": "foo_BAR", "_last-serial": 2}]
    assert json.loads(fetch(fake, "/pypi/foo-bar/json").body)["info"]["name"] == "foo_BAR"


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (lambda f: f.add_project("Pkg"), ValueError, "project 'Pkg' already exists as 'pkg'"),
        (lambda f: f.add_project("-bad-"), ValueError, "invalid project name: '-bad-'"),
        (lambda f: f.add_release("pkg", "1.0"), ValueError, "'pkg' already has version '1.0'"),
        (lambda f: f.add_project("new", ["1.0", "x.y"]), ValueError, "Invalid version: 'x.y'"),
        (lambda f: f.rename_display("pkg", "pkg2"), ValueError, "'pkg2' does not normalize to 'pkg'"),
        (lambda f: f.yank("nope", "1.0"), LookupError, "fake index has no project 'nope'"),
        (lambda f: f.unyank("pkg", "9"), LookupError, "fake project 'pkg' has no version '9'"),
        (lambda f: f.fail_next("/", times=0), ValueError, "times must be at least 1 or None, not 0"),
    ],
)
def test_invalid_changes_are_refused(
    fake: FakeIndex, change: Callable[[FakeIndex], object], error: type[Exception], message: str
) -> None:
    fake.add_project("pkg")
    with pytest.raises(error, match=re.escape(message)):
        change(fake)
    assert fake.serial == 1
    assert fetch_json(fake, "/simple/")[1]["projects"] == [{"name": "pkg", "_last-serial": 1}]


def test_add_many_creates_two_thousand_projects_quickly(fake: FakeIndex) -> None:
    started = time.monotonic()
    projects = fake.add_many(2000)
    _, document = fetch_json(fake, "/simple/")
    assert len(document["projects"]) == 2000
    assert [p.display_name for p in projects[:2]] == ["proj-0000", "proj-0001"]
    assert fetch_json(fake, "/simple/proj-1999/")[1]["versions"] == ["1.0"]
    assert time.monotonic() - started < 5


# --------------------------------------------------------------------------------------------
# Faults


def test_fail_next_answers_once_then_clears(fake: FakeIndex) -> None:
    fake.add_project("pkg")
    fake.fail_next("/simple/pkg/", status=500, body=b"boom", headers={"Retry-After": "1"})
    failed = fetch(fake, "/simple/pkg/")
    assert (failed.status, failed.body, failed.headers["Retry-After"]) == (500, b"boom", "1")
    assert fetch(fake, "/simple/pkg/").status == 200


def test_fail_next_counts_times_and_matches_regex_or_full_url(fake: FakeIndex) -> None:
    fake.add_project("pkg")
    fake.fail_next(re.compile(r"^/simple/$"), times=2)
    assert fetch(fake, "/simple/pkg/").status == 200  # the regex does not match project pages
    assert [fetch(fake, "/simple/").status for _ in range(3)] == [503, 503, 200]
    fake.fail_next(fake.url + "/pypi/", status=404, times=None)
    assert [fetch(fake, "/pypi/pkg/json").status for _ in range(3)] == [404, 404, 404]
    fake.clear_faults()
    assert fetch(fake, "/pypi/pkg/json").status == 200


def test_delay_holds_the_answer(fake: FakeIndex) -> None:
    fake.add_project("pkg")
    fake.delay("/simple/pkg/", 0.5)
    started = time.monotonic()
    assert fetch(fake, "/simple/pkg/").status == 200
    assert time.monotonic() - started >= 0.5
    started = time.monotonic()
    fetch(fake, "/simple/pkg/")
    assert time.monotonic() - started < 0.5


def test_truncate_next_promises_full_length_and_hangs_up(fake: FakeIndex) -> None:
    fake.add_project("pkg")
    wheel = fake.files("pkg", "1.0")[0]
    fake.truncate_next(wheel.path, at_bytes=100)
    with pytest.raises(http.client.IncompleteRead) as caught:
        fetch(fake, wheel.path)
    assert (len(caught.value.partial), caught.value.expected) == (100, wheel.size - 100)
    assert fetch(fake, wheel.path).body == wheel.content


@pytest.mark.parametrize(("at_bytes", "extra", "expected"), [(-1, b"", None), (100, b"", 100), (-1, b"tail", None)])
def test_send_unframed_next_ends_the_body_by_closing_without_a_length(
    fake: FakeIndex, at_bytes: int, extra: bytes, expected: int | None
) -> None:
    fake.add_project("pkg")
    wheel = fake.files("pkg", "1.0")[0]
    fake.send_unframed_next(wheel.path, at_bytes=at_bytes, extra=extra)
    answer = fetch(fake, wheel.path)
    assert answer.status == 200
    assert "Content-Length" not in answer.headers and "Transfer-Encoding" not in answer.headers
    assert answer.body == wheel.content[:expected] + extra  # to the reader, a complete answer
    assert fetch(fake, wheel.path).body == wheel.content


def test_corrupt_next_keeps_length_but_changes_digest(fake: FakeIndex) -> None:
    fake.add_project("pkg")
    wheel = fake.files("pkg", "1.0")[0]
    fake.corrupt_next(wheel.path)
    corrupted = fetch(fake, wheel.path).body
    assert len(corrupted) == wheel.size
    assert hashlib.sha256(corrupted).hexdigest() != wheel.sha256
    assert fetch(fake, wheel.path).body == wheel.content


def test_serve_stale_answers_with_an_older_serial(fake: FakeIndex) -> None:
    project = fake.add_project("pkg")
    fake.bump("pkg")
    fake.serve_stale("PKG", times=2)
    stale_page, stale_document = fetch_json(fake, "/simple/pkg/")
    stale_api = fetch(fake, "/pypi/pkg/json")
    assert stale_page.headers["X-PyPI-Last-Serial"] == stale_api.headers["X-PyPI-Last-Serial"] == "1"
    assert stale_document["meta"]["_last-serial"] == json.loads(stale_api.body)["last_serial"] == 1
    assert project.last_serial == 2
    assert fetch(fake, "/pypi/pkg/json").headers["X-PyPI-Last-Serial"] == "2"


def test_xmlrpc_fault_next_is_http_200_with_a_fault(fake: FakeIndex) -> None:
    fake.add_project("pkg")
    fake.xmlrpc_fault_next()
    answer = call_xmlrpc(fake, "list_packages_with_serial")
    assert answer.status == 200
    with pytest.raises(xmlrpc.client.Fault, match="HTTPTooManyRequests"):
        xmlrpc.client.loads(answer.body)
    assert xmlrpc.client.loads(call_xmlrpc(fake, "list_packages_with_serial").body)[0] == ({"pkg": 1},)


def test_listing_garbage_next_breaks_one_listing_of_either_kind(fake: FakeIndex) -> None:
    fake.add_project("pkg")
    fake.listing_garbage_next(times=2)
    root = fetch(fake, "/simple/", headers={"Accept": JSON_V1})
    assert root.status == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(root.body)
    rpc = call_xmlrpc(fake, "list_packages_with_serial")
    assert rpc.status == 200
    with pytest.raises(Exception):  # truncated XML: expat or xmlrpc.client complains
        xmlrpc.client.loads(rpc.body)
    assert fetch_json(fake, "/simple/")[1]["projects"] == [{"name": "pkg", "_last-serial": 1}]


def test_listing_empty_next_answers_a_valid_empty_list(fake: FakeIndex) -> None:
    fake.add_project("pkg")
    fake.listing_empty_next(times=2)
    assert fetch_json(fake, "/simple/")[1]["projects"] == []
    assert xmlrpc.client.loads(call_xmlrpc(fake, "list_packages_with_serial").body)[0] == ({},)
    assert len(fetch_json(fake, "/simple/")[1]["projects"]) == 1


# --------------------------------------------------------------------------------------------
# Request log, threads, lifecycle


def test_request_log_records_method_path_and_headers(fake: FakeIndex) -> None:
    fake.add_project("pkg")
    fetch(fake, "/simple/pkg/", headers={"Accept": JSON_V1})
    fetch(fake, "/simple/pkg/", method="HEAD")
    fetch(fake, "/pypi/pkg/json")
    first = fake.requests[0]
    assert (first.method, first.path, first.headers["accept"]) == ("GET", "/simple/pkg/", JSON_V1)
    assert fake.count_requests("/simple/") == 2
    assert fake.count_requests("/simple/", method="HEAD") == 1
    assert fake.count_requests(re.compile(r"/json$")) == 1
    fake.reset_log()
    assert fake.requests == []


@pytest.mark.gen_test
async def test_serves_while_the_tests_own_ioloop_runs(fake: FakeIndex) -> None:
    fake.add_project("pkg")
    response = await AsyncHTTPClient().fetch(fake.simple_url + "pkg/", headers={"Accept": PIP_ACCEPT})
    assert json.loads(response.body)["name"] == "pkg"


def test_restart_keeps_the_port_and_stop_cuts_delays_short() -> None:
    fake = FakeIndex()
    with pytest.raises(RuntimeError, match="not running"):
        fake.url
    fake.start()
    try:
        url = fake.url
        fake.delay("/", 60, times=None)
        started = time.monotonic()
        fake.stop()
        assert time.monotonic() - started < 5
        fake.clear_faults()
        fake.start()
        assert fake.url == url
        assert fetch(fake, "/simple/").status == 200
    finally:
        fake.stop()


# --------------------------------------------------------------------------------------------
# Real installers


@pytest.fixture
def dependent_pair(fake: FakeIndex) -> FakeIndex:
    fake.add_project("pkg-a", ["1.0"], dependencies=["pkg-b>=1"], requires_python=">=3.8")
    fake.add_project("pkg-b", ["0.9", "1.0"])
    fake.yank("pkg-b", "1.0", "do not use")
    fake.add_release("pkg-b", "1.1")
    return fake


@pytest.mark.e2e
def test_pip_downloads_a_wheel_and_its_dependency(dependent_pair: FakeIndex, tmp_path: Path) -> None:
    fake = dependent_pair
    command = [sys.executable, "-m", "pip", "download", "--no-cache-dir", "--index-url", fake.simple_url,
               "-d", str(tmp_path), "pkg-a"]
    result = subprocess.run(command, env=installer_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg_a-1.0-py3-none-any.whl", "pkg_b-1.1-py3-none-any.whl"]
    assert (tmp_path / "pkg_b-1.1-py3-none-any.whl").read_bytes() == fake.files("pkg-b", "1.1")[0].content
    page_requests = [r for r in fake.requests if r.path.startswith("/simple/")]
    assert {r.path for r in page_requests} == {"/simple/pkg-a/", "/simple/pkg-b/"}
    assert all(r.headers["Accept"].startswith(JSON_V1) for r in page_requests)
    assert fake.count_requests(re.compile(r"\.whl\.metadata$")) >= 1  # PEP 658 was used


@pytest.mark.e2e
def test_uv_installs_from_the_fake(dependent_pair: FakeIndex, tmp_path: Path) -> None:
    uv = uv_executable()
    if uv is None:
        pytest.skip("uv is not installed next to this Python")
    target = tmp_path / "target"
    command = [uv, "pip", "install", "--no-cache", "--python", sys.executable, "--index-url",
               dependent_pair.simple_url, "--target", str(target), "pkg-a"]
    result = subprocess.run(command, env=installer_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (target / "pkg_a" / "__init__.py").read_text() == '"""pkg-a 1.0."""\n\nVERSION = "1.0"\n'
    assert 'VERSION = "1.1"' in (target / "pkg_b" / "__init__.py").read_text()
