"""Project and root pages: parsing upstream answers, and rendering them byte for byte."""

from __future__ import annotations

import copy
import json
import random
from dataclasses import replace
from functools import partial
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from packaging.utils import NormalizedName, canonicalize_name

from pypimirror.errors import MalformedUpstreamError
from pypimirror.pages import (
    DistFile,
    ProjectPage,
    parse_json_api,
    parse_simple_project_json,
    render_project_html,
    render_project_json,
    render_root_html,
    render_root_json,
    rewrite_file_url,
)

GOLDEN = Path(__file__).parent / "data" / "pages"
PACKAGES_URL = "https://files.example.org/packages"
URL_FOR = partial(rewrite_file_url, packages_url=PACKAGES_URL, prefix="/pypi")

WHEEL_SHA = "a1" * 32
WHEEL_META_SHA = "b2" * 32
SDIST_SHA = "c3" * 32
RC_SHA = "d4" * 32
OLD_SHA = "e5" * 32
YANK_REASON = '<b>bad</b> & "quoted"'
PROVENANCE = "https://example.org/integrity/demo-project/1.0/demo_project-1.0-py3-none-any.whl/provenance"


def identity(url: str) -> str:
    return url


def upstream_simple() -> dict[str, Any]:
    """The fixture project as an upstream PEP 691 page (PyPI's shape, in an arbitrary order)."""
    return {
        "meta": {"api-version": "1.4", "_last-serial": 4242},
        "name": "demo-project",
        "versions": ["1.0", "0.8", "1.0rc1", "0.9"],
        "files": [
            {
                "filename": "demo_project-1.0.tar.gz",
                "url": f"{PACKAGES_URL}/c3/c3/{'c3' * 30}/demo_project-1.0.tar.gz",
                "hashes": {"sha256": SDIST_SHA},
                "requires-python": ">=3.8,<4",
                "size": 2000,
                "upload-time": "2024-03-01T10:00:00Z",
                "yanked": False,
                "core-metadata": False,
                "data-dist-info-metadata": False,
                "provenance": None,
            },
            {
                "filename": "demo_project-0.9.tar.gz",
                "url": f"{PACKAGES_URL}/e5/e5/{'e5' * 30}/demo_project-0.9.tar.gz",
                "hashes": {"sha256": OLD_SHA, "md5": "0" * 32},
                "requires-python": None,
                "size": 1500,
                "yanked": YANK_REASON,
                "core-metadata": False,
                "data-dist-info-metadata": False,
                "provenance": None,
            },
            {
                "filename": "demo_project-1.0-py3-none-any.whl",
                "url": f"{PACKAGES_URL}/a1/a1/{'a1' * 30}/demo_project-1.0-py3-none-any.whl",
                "hashes": {"sha256": WHEEL_SHA, "blake2b_256": "f" * 64},
                "requires-python": ">=3.8,<4",
                "size": 1000,
                "upload-time": "2024-03-01T10:00:01.250000Z",
                "yanked": False,
                "core-metadata": {"sha256": WHEEL_META_SHA},
                "data-dist-info-metadata": {"sha256": WHEEL_META_SHA},
                "provenance": PROVENANCE,
                "gpg-sig": False,
            },
            {
                "filename": "demo_project-0.8.zip",
                "url": "https://elsewhere.example.org/old/demo_project-0.8.zip",
                "hashes": {},
                "size": 900,
                "upload-time": "2019-12-31T23:59:59Z",
            },
            {
                "filename": "demo_project-1.0rc1-py3-none-any.whl",
                "url": f"{PACKAGES_URL}/d4/d4/{'d4' * 30}/demo_project-1.0rc1-py3-none-any.whl",
                "hashes": {"sha256": RC_SHA},
                "requires-python": ">=3.8",
                "size": 990,
                "upload-time": "2024-02-01T09:30:00.5Z",
                "core-metadata": True,
            },
        ],
        "project-status": {"status": "deprecated", "reason": "use <other> & co"},
        "alternate-locations": ["ignored"],
    }


def upstream_json_api() -> dict[str, Any]:
    """The same project as a ``/pypi/<name>/json`` document (no provenance, no status)."""
    def file(filename: str, sha: str | None, size: int, **extra: Any) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "filename": filename,
            "url": f"{PACKAGES_URL}/xx/yy/{'0' * 60}/{filename}",
            "digests": {"md5": "0" * 32, "blake2b_256": "1" * 64} | ({"sha256": sha} if sha else {}),
            "size": size,
            "packagetype": "sdist",
            "has_sig": False,
            "requires_python": ">=3.8,<4",
            "upload_time": "2024-03-01T10:00:00",
            "upload_time_iso_8601": "2024-03-01T10:00:00.000123Z",
            "yanked": False,
            "yanked_reason": None,
        }
        return entry | extra

    return {
        "info": {"name": "Demo.Project", "version": "1.0", "summary": "a demo"},
        "last_serial": 4243,
        "releases": {
            "1.0": [
                file("demo_project-1.0-py3-none-any.whl", WHEEL_SHA, 1000,
                     **{"core-metadata": {"sha256": WHEEL_META_SHA}}),
                file("demo_project-1.0.tar.gz", SDIST_SHA, 2000, **{"core-metadata": False}),
            ],
            "0.9": [file("demo_project-0.9.tar.gz", OLD_SHA, 1500, yanked=True, yanked_reason=YANK_REASON)],
            "0.10": [file("demo_project-0.10.tar.gz", None, 1600, yanked=True, yanked_reason="",
                          requires_python=None, upload_time_iso_8601=None)],
            "2.0": [],
            "not-a-version": [file("demo_project-weird.egg", OLD_SHA, 10)],
        },
        "urls": [],
        "vulnerabilities": [],
    }


@pytest.fixture
def page() -> ProjectPage:
    return parse_simple_project_json(json.dumps(upstream_simple()).encode(), display_name="Demo.Project")


# --- parsing the PEP 691 page -------------------------------------------------------------


def test_parse_simple_project_json_reads_every_field(page: ProjectPage) -> None:
    files = {f.filename: f for f in page.files}
    assert page.name == "demo-project"
    assert page.display_name == "Demo.Project"
    assert page.last_serial == 4242
    assert page.versions == ("0.8", "0.9", "1.0rc1", "1.0")
    assert (page.status, page.status_reason) == ("deprecated", "use <other> & co")
    assert files["demo_project-1.0-py3-none-any.whl"] == DistFile(
        filename="demo_project-1.0-py3-none-any.whl",
        url=f"{PACKAGES_URL}/a1/a1/{'a1' * 30}/demo_project-1.0-py3-none-any.whl",
        sha256=WHEEL_SHA,
        requires_python=">=3.8,<4",
        size=1000,
        upload_time="2024-03-01T10:00:01.250000Z",
        yanked=False,
        core_metadata=WHEEL_META_SHA,
        provenance=PROVENANCE,
        version="1.0",
    )
    assert files["demo_project-0.9.tar.gz"].yanked == YANK_REASON
    assert files["demo_project-0.9.tar.gz"].upload_time is None
    assert files["demo_project-0.8.zip"].core_metadata is False
    assert files["demo_project-1.0rc1-py3-none-any.whl"].core_metadata is True


def test_parse_simple_project_json_sorts_files_by_version_then_filename(page: ProjectPage) -> None:
    assert [f.filename for f in page.files] == [
        "demo_project-0.8.zip",
        "demo_project-0.9.tar.gz",
        "demo_project-1.0rc1-py3-none-any.whl",
        "demo_project-1.0-py3-none-any.whl",
        "demo_project-1.0.tar.gz",
    ]


def with_file(**changes: Any) -> dict[str, Any]:
    """The fixture page with its first file changed; a value of ``...`` deletes the key."""
    doc = upstream_simple()
    for key, value in changes.items():
        if value is ...:
            doc["files"][0].pop(key, None)
        else:
            doc["files"][0][key] = value
    return doc


def first_file(doc: dict[str, Any]) -> DistFile:
    filename = doc["files"][0]["filename"]
    return next(f for f in parse_simple_project_json(doc).files if f.filename == filename)


@pytest.mark.parametrize(
    ("changes", "attribute", "expected"),
    [
        ({"hashes": {"md5": "0" * 32}}, "sha256", None),
        ({"hashes": {"sha256": "AB" * 32}}, "sha256", "ab" * 32),
        ({"requires-python": ""}, "requires_python", None),
        ({"requires-python": ...}, "requires_python", None),
        ({"requires-python": '<4,>"3"'}, "requires_python", '<4,>"3"'),
        ({"upload-time": ...}, "upload_time", None),
        ({"upload-time": ""}, "upload_time", None),
        ({"upload-time": None}, "upload_time", None),
        ({"upload-time": "2024-02-29T23:59:59.1Z"}, "upload_time", "2024-02-29T23:59:59.1Z"),
        ({"yanked": ...}, "yanked", False),
        ({"yanked": True}, "yanked", True),
        ({"yanked": ""}, "yanked", True),
        ({"yanked": "broken"}, "yanked", "broken"),
        ({"core-metadata": True}, "core_metadata", True),
        ({"core-metadata": {"sha256": "CD" * 32}}, "core_metadata", "cd" * 32),
        ({"core-metadata": {"md5": "0" * 32}}, "core_metadata", True),
        ({"core-metadata": {}}, "core_metadata", True),
        ({"core-metadata": ..., "data-dist-info-metadata": {"sha256": WHEEL_META_SHA}},
         "core_metadata", WHEEL_META_SHA),
        ({"core-metadata": ..., "data-dist-info-metadata": ..., "dist-info-metadata": True},
         "core_metadata", True),
        ({"core-metadata": None, "data-dist-info-metadata": True}, "core_metadata", True),
        ({"core-metadata": False, "dist-info-metadata": True}, "core_metadata", False),
        ({"core-metadata": ..., "data-dist-info-metadata": ...}, "core_metadata", False),
        ({"provenance": "https://example.org/p"}, "provenance", "https://example.org/p"),
        ({"provenance": "http://example.org/p"}, "provenance", None),
        ({"provenance": "/integrity/p"}, "provenance", None),
        ({"provenance": "https:///nohost"}, "provenance", None),
        ({"provenance": ""}, "provenance", None),
        ({"filename": "demo_project-2.0.post1-cp312-abi3-manylinux_2_17_x86_64.whl"}, "version", "2.0.post1"),
        ({"filename": "Demo.Project-1.0.0.zip"}, "version", "1.0.0"),
        ({"filename": "demo_project-01.0.tar.gz"}, "version", "1.0"),
        ({"filename": "demo_project-1.0-py3.11.egg"}, "version", None),
        ({"filename": "demo_project-latest.tar.gz"}, "version", None),
        ({"filename": "no-version-at-all.whl"}, "version", None),
        ({"size": 0}, "size", 0),
    ],
)
def test_parse_simple_project_json_file_fields(changes: dict[str, Any], attribute: str, expected: object) -> None:
    assert getattr(first_file(with_file(**changes)), attribute) == expected


def test_parse_simple_project_json_accepts_a_string_serial_as_bandersnatch_writes() -> None:
    doc = upstream_simple()
    doc["meta"]["_last-serial"] = "10333928"
    assert parse_simple_project_json(doc).last_serial == 10333928


def test_parse_simple_project_json_prefers_the_given_serial_and_needs_no_meta() -> None:
    doc = upstream_simple()
    assert parse_simple_project_json(doc, serial=7).last_serial == 7
    del doc["meta"]
    assert parse_simple_project_json(doc, serial=7).last_serial == 7


def test_parse_simple_project_json_defaults_display_name_to_the_page_name() -> None:
    doc = upstream_simple()
    doc["name"] = "Demo_Project"
    parsed = parse_simple_project_json(doc)
    assert (parsed.name, parsed.display_name) == ("demo-project", "Demo_Project")


def test_parse_simple_project_json_without_versions_derives_them_from_filenames() -> None:
    doc = upstream_simple()
    del doc["versions"]
    assert parse_simple_project_json(doc).versions == ("0.8", "0.9", "1.0rc1", "1.0")


@pytest.mark.parametrize("status", [None, {}, {"status": None}, {"reason": "orphan reason"}])
def test_parse_simple_project_json_without_status_marker_has_no_status(status: object) -> None:
    doc = upstream_simple()
    doc["project-status"] = status
    parsed = parse_simple_project_json(doc)
    assert (parsed.status, parsed.status_reason) == (None, None)


def test_parse_simple_project_json_of_a_quarantined_project_offers_no_files() -> None:
    doc = upstream_simple()
    doc["project-status"] = {"status": "quarantined"}
    parsed = parse_simple_project_json(doc)
    assert parsed.files == ()
    assert parsed.status == "quarantined"
    assert b"<a " not in render_project_html(parsed, url_for=identity, repository_meta=True)


def test_parse_simple_project_json_accepts_a_minor_version_it_does_not_know() -> None:
    doc = upstream_simple()
    doc["meta"]["api-version"] = "1.99"
    assert parse_simple_project_json(doc).last_serial == 4242


def changed(doc: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    """``doc`` with the value at a ``/``-separated path (list indexes as digits) replaced;
    ``...`` deletes the key."""
    *parents, last = path.split("/")
    target: Any = doc
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    if value is ...:
        del target[last]
    else:
        target[int(last) if last.isdigit() else last] = value
    return doc


def mutate(path: str, value: object) -> dict[str, Any]:
    return changed(upstream_simple(), path, value)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (b"{not json", "upstream page of '<unknown project>': not valid JSON"),
        (b"[1, 2]", "'<unknown project>': (document): expected a JSON object, got [1, 2]"),
        (mutate("name", ...), "'<unknown project>': name: expected a non-empty string"),
        (mutate("name", 5), "'<unknown project>': name: expected a non-empty string, got 5"),
        (mutate("meta", ...), "'demo-project': meta: missing"),
        (mutate("meta", "1.4"), "'demo-project': meta: expected a JSON object, got '1.4'"),
        (mutate("meta/_last-serial", ...), "'demo-project': meta._last-serial: expected a non-negative integer"),
        (mutate("meta/_last-serial", -1), "meta._last-serial: expected a non-negative integer, got -1"),
        (mutate("meta/_last-serial", True), "meta._last-serial: expected a non-negative integer, got True"),
        (mutate("meta/_last-serial", "12a"), "meta._last-serial: expected a non-negative integer, got '12a'"),
        (mutate("meta/api-version", "2.0"), "'demo-project': meta.api-version: unsupported major version, got '2.0'"),
        (mutate("files", {}), "'demo-project': files: expected a JSON array, got {}"),
        (mutate("files", ...), "'demo-project': files: expected a JSON array"),
        (mutate("files/0", "x.whl"), "'demo-project': files[0]: expected a JSON object, got 'x.whl'"),
        (mutate("files/0/filename", ...), "'demo-project': files[0].filename: expected a non-empty string"),
        (mutate("files/0/filename", "../evil.whl"), "files[0].filename: a filename cannot hold"),
        (mutate("files/0/url", ""), "'demo-project': files[0].url: expected a non-empty string, got ''"),
        (mutate("files/1/hashes", ...), "'demo-project': files[1].hashes: missing"),
        (mutate("files/1/hashes", ["sha256"]), "files[1].hashes: expected a JSON object"),
        (mutate("files/1/hashes/sha256", "abc"), "'demo-project': files[1].hashes.sha256: expected 64 hex digits, got 'abc'"),
        (mutate("files/2/size", ...), "'demo-project': files[2].size: expected a non-negative integer"),
        (mutate("files/2/size", "1000"), "files[2].size: expected a non-negative integer, got '1000'"),
        (mutate("files/2/size", 1.5), "files[2].size: expected a non-negative integer, got 1.5"),
        (mutate("files/2/size", False), "files[2].size: expected a non-negative integer, got False"),
        (mutate("files/2/requires-python", 3), "files[2].requires-python: expected a string or null, got 3"),
        (mutate("files/2/upload-time", "2024-03-01 10:00:01Z"), "files[2].upload-time: expected yyyy-mm-ddThh:mm:ss[.ffffff]Z"),
        (mutate("files/2/upload-time", "2024-03-01T10:00:01+00:00"), "files[2].upload-time: expected yyyy"),
        (mutate("files/2/upload-time", "2024-03-01T10:00:01.1234567Z"), "files[2].upload-time: expected yyyy"),
        (mutate("files/2/upload-time", "2023-02-29T10:00:01Z"), "files[2].upload-time: not a real date and time"),
        (mutate("files/2/upload-time", 1709287201), "files[2].upload-time: expected a string or null, got 1709287201"),
        (mutate("files/2/yanked", 1), "'demo-project': files[2].yanked: expected a boolean or a reason string, got 1"),
        (mutate("files/2/core-metadata", "yes"), "files[2].core-metadata: expected a boolean or an object of digests, got 'yes'"),
        (mutate("files/2/core-metadata/sha256", "zz"), "files[2].core-metadata.sha256: expected 64 hex digits, got 'zz'"),
        (mutate("files/2/provenance", 5), "files[2].provenance: expected a string or null, got 5"),
        (mutate("files/4/filename", "demo_project-1.0.tar.gz"),
         "'demo-project': files: filename 'demo_project-1.0.tar.gz' is listed twice"),
        (mutate("versions", "1.0"), "'demo-project': versions: expected a JSON array, got '1.0'"),
        (mutate("versions/1", 8), "'demo-project': versions[1]: expected a non-empty string, got 8"),
        (mutate("project-status", "active"), "'demo-project': project-status: expected a JSON object, got 'active'"),
        (mutate("project-status/status", 1), "project-status.status: expected a string or null, got 1"),
    ],
)
def test_parse_simple_project_json_rejects_malformed_field(doc: object, message: str) -> None:
    with pytest.raises(MalformedUpstreamError) as info:
        parse_simple_project_json(doc)
    assert message in str(info.value)


def test_parse_simple_project_json_names_the_given_display_name_in_errors() -> None:
    with pytest.raises(MalformedUpstreamError, match=r"^upstream page of 'Demo\.Project': files\[2\]\.size"):
        parse_simple_project_json(mutate("files/2/size", -5), display_name="Demo.Project")


def test_parse_simple_project_json_shortens_huge_values_in_errors() -> None:
    with pytest.raises(MalformedUpstreamError) as info:
        parse_simple_project_json(mutate("files/2/size", "9" * 10_000))
    assert len(str(info.value)) < 200
    assert str(info.value).endswith("...")


NOT_LINKABLE = [
    "javascript:alert(1)",
    "JavaScript:alert(1)",
    " javascript:alert(1)",
    "java\tscript:alert(1)",
    "\x00javascript:alert(1)",
    "vbscript:msgbox(1)",
    "data:text/html,<script>alert(1)</script>",
    "file:///etc/passwd",
    "ftp://files.example.org/demo_project-1.0-py3-none-any.whl",
    "http://[::1/broken",
]


@pytest.mark.parametrize("url", NOT_LINKABLE)
def test_parse_simple_project_json_drops_files_whose_url_is_not_http_or_relative(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    doc = with_file(url=url)
    dropped = doc["files"][0]["filename"]
    parsed = parse_simple_project_json(doc)
    every = parse_simple_project_json(upstream_simple())
    assert [f.filename for f in parsed.files] == [f.filename for f in every.files if f.filename != dropped]
    assert parsed.versions == every.versions  # the rest of the project is untouched
    [record] = caplog.records
    assert record.levelname == "WARNING"
    assert f"dropping file {dropped!r}, its URL is not http(s) or relative" in record.getMessage()
    html = render_project_html(parsed, url_for=identity, repository_meta=True)
    json_page = render_project_json(parsed, url_for=identity)
    assert dropped.encode() not in html and dropped.encode() not in json_page


@pytest.mark.parametrize(
    "url", ["https://files.example.org/a/demo.whl", "http://127.0.0.1/demo.whl", "../../demo.whl", "//example.org/x"]
)
def test_parse_simple_project_json_keeps_http_and_relative_urls(url: str, caplog: pytest.LogCaptureFixture) -> None:
    assert first_file(with_file(url=url)).url == url
    assert caplog.records == []


def test_parse_json_api_drops_files_whose_url_is_not_http_or_relative(caplog: pytest.LogCaptureFixture) -> None:
    doc = upstream_json_api()
    entry = doc["releases"]["1.0"][0]
    entry["url"] = "javascript:alert(document.cookie)"
    parsed = parse_json_api(json.dumps(doc).encode())
    assert entry["filename"] not in {f.filename for f in parsed.files}
    assert len(parsed.files) == len(parse_json_api(json.dumps(upstream_json_api()).encode()).files) - 1
    assert "javascript:alert(document.cookie)" in caplog.text


# --- parsing the JSON API -----------------------------------------------------------------


def test_parse_json_api_maps_releases_to_files() -> None:
    parsed = parse_json_api(json.dumps(upstream_json_api()).encode())
    files = {f.filename: f for f in parsed.files}
    assert (parsed.name, parsed.display_name, parsed.last_serial) == ("demo-project", "Demo.Project", 4243)
    assert parsed.versions == ("0.9", "0.10", "1.0", "not-a-version")
    assert (parsed.status, parsed.status_reason) == (None, None)
    assert files["demo_project-1.0-py3-none-any.whl"] == DistFile(
        filename="demo_project-1.0-py3-none-any.whl",
        url=f"{PACKAGES_URL}/xx/yy/{'0' * 60}/demo_project-1.0-py3-none-any.whl",
        sha256=WHEEL_SHA,
        requires_python=">=3.8,<4",
        size=1000,
        upload_time="2024-03-01T10:00:00.000123Z",
        yanked=False,
        core_metadata=WHEEL_META_SHA,
        provenance=None,
        version="1.0",
    )
    old, no_reason = files["demo_project-0.9.tar.gz"], files["demo_project-0.10.tar.gz"]
    assert (old.yanked, old.core_metadata, old.version) == (YANK_REASON, False, "0.9")
    assert (no_reason.yanked, no_reason.sha256, no_reason.requires_python, no_reason.upload_time) == (
        True, None, None, None)
    assert files["demo_project-weird.egg"].version == "not-a-version"
    assert [f.filename for f in parsed.files][-1] == "demo_project-weird.egg"


def json_api_with(path: str, value: object) -> dict[str, Any]:
    return changed(upstream_json_api(), path, value)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (b"\xff\xfe", "upstream page of '<unknown project>': not valid JSON"),
        (json_api_with("info", ...), "'<unknown project>': info: missing"),
        (json_api_with("info/name", ""), "'<unknown project>': info.name: expected a non-empty string, got ''"),
        (json_api_with("last_serial", "x"), "'Demo.Project': last_serial: expected a non-negative integer, got 'x'"),
        (json_api_with("releases", []), "'Demo.Project': releases: expected a JSON object, got []"),
        (json_api_with("releases/2.0", None), "'Demo.Project': releases['2.0']: expected a JSON array, got None"),
        (json_api_with("releases/1.0/1/size", ...), "'Demo.Project': releases['1.0'][1].size: expected a non-negative integer"),
        (json_api_with("releases/1.0/0/digests/sha256", 5), "releases['1.0'][0].digests.sha256: expected 64 hex digits, got 5"),
        (json_api_with("releases/1.0/0/digests", "x"), "releases['1.0'][0].digests: expected a JSON object, got 'x'"),
        (json_api_with("releases/0.9/0/yanked", "yes"), "releases['0.9'][0].yanked: expected a boolean, got 'yes'"),
        (json_api_with("releases/0.9/0/yanked_reason", 3), "releases['0.9'][0].yanked_reason: expected a string or null, got 3"),
        (json_api_with("releases/1.0/0/upload_time_iso_8601", "2024-03-01T10:00:00"), "upload_time_iso_8601: expected yyyy"),
        (json_api_with("releases/0.9/0/filename", "demo_project-1.0.tar.gz"),
         "'Demo.Project': releases: filename 'demo_project-1.0.tar.gz' is listed twice"),
    ],
)
def test_parse_json_api_rejects_malformed_field(doc: object, message: str) -> None:
    with pytest.raises(MalformedUpstreamError) as info:
        parse_json_api(doc)
    assert message in str(info.value)


# --- URLs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "prefix", "expected"),
    [
        (f"{PACKAGES_URL}/ab/cd/{'e' * 60}/x-1.0.tar.gz", "/pypi", f"/pypi/packages/ab/cd/{'e' * 60}/x-1.0.tar.gz"),
        (f"{PACKAGES_URL}/ab/cd/h/x-1.0.tar.gz", "", "/packages/ab/cd/h/x-1.0.tar.gz"),
        (f"{PACKAGES_URL}/ab/cd/h/x-1.0.tar.gz", "/", "/packages/ab/cd/h/x-1.0.tar.gz"),
        (f"{PACKAGES_URL}/ab/cd/h/x%2B1.0.tar.gz", "/m", "/m/packages/ab/cd/h/x%2B1.0.tar.gz"),
        (f"{PACKAGES_URL}-old/ab/cd/h/x.whl", "/pypi", f"{PACKAGES_URL}-old/ab/cd/h/x.whl"),
        (PACKAGES_URL, "/pypi", PACKAGES_URL),
        ("https://elsewhere.example.org/packages/ab/x.whl", "/pypi", "https://elsewhere.example.org/packages/ab/x.whl"),
        ("http://files.example.org/packages/ab/x.whl", "/pypi", "http://files.example.org/packages/ab/x.whl"),
    ],
)
def test_rewrite_file_url_points_only_upstream_package_urls_at_the_mirror(url: str, prefix: str, expected: str) -> None:
    assert rewrite_file_url(url, packages_url=PACKAGES_URL, prefix=prefix) == expected
    assert rewrite_file_url(url, packages_url=PACKAGES_URL + "/", prefix=prefix) == expected


# --- rendering project pages ----------------------------------------------------------------


def canonical_json(path: Path) -> bytes:
    """A pretty golden JSON file in the exact byte form our pages use."""
    return json.dumps(json.loads(path.read_text()), sort_keys=True, separators=(",", ":")).encode() + b"\n"


def test_render_project_json_matches_golden(page: ProjectPage) -> None:
    assert render_project_json(page, url_for=URL_FOR) == canonical_json(GOLDEN / "demo-project.v1_json")


def test_render_project_html_matches_golden(page: ProjectPage) -> None:
    assert render_project_html(page, url_for=URL_FOR, repository_meta=True) == (GOLDEN / "demo-project.html").read_bytes()


def test_render_project_json_carries_every_api_1_4_field(page: ProjectPage) -> None:
    doc = json.loads(render_project_json(page, url_for=URL_FOR))
    assert set(doc) == {"meta", "name", "versions", "files", "project-status"}
    assert doc["meta"] == {"api-version": "1.4", "_last-serial": 4242}
    assert doc["name"] == "demo-project"
    assert doc["versions"] == ["0.8", "0.9", "1.0rc1", "1.0"]
    assert doc["project-status"] == {"status": "deprecated", "reason": "use <other> & co"}
    always = {"filename", "url", "hashes", "requires-python", "size", "yanked", "core-metadata",
              "data-dist-info-metadata", "provenance"}
    for entry in doc["files"]:
        assert set(entry) - {"upload-time"} == always
        assert "dist-info-metadata" not in entry
        assert entry["core-metadata"] == entry["data-dist-info-metadata"]
        assert set(entry["hashes"]) <= {"sha256"}
        assert type(entry["size"]) is int
    by_name = {e["filename"]: e for e in doc["files"]}
    wheel = by_name["demo_project-1.0-py3-none-any.whl"]
    assert wheel["url"] == f"/pypi/packages/a1/a1/{'a1' * 30}/demo_project-1.0-py3-none-any.whl"
    assert wheel["hashes"] == {"sha256": WHEEL_SHA}
    assert wheel["core-metadata"] == {"sha256": WHEEL_META_SHA}
    assert wheel["provenance"] == PROVENANCE
    assert wheel["upload-time"] == "2024-03-01T10:00:01.250000Z"
    assert wheel["requires-python"] == ">=3.8,<4"
    assert wheel["yanked"] is False
    yanked = by_name["demo_project-0.9.tar.gz"]
    assert (yanked["yanked"], yanked["requires-python"], yanked["provenance"]) == (YANK_REASON, None, None)
    assert "upload-time" not in yanked
    outside = by_name["demo_project-0.8.zip"]
    assert (outside["url"], outside["hashes"]) == ("https://elsewhere.example.org/old/demo_project-0.8.zip", {})
    assert by_name["demo_project-1.0rc1-py3-none-any.whl"]["core-metadata"] is True
    assert by_name["demo_project-1.0.tar.gz"]["core-metadata"] is False


def test_render_project_json_omits_project_status_when_unknown(page: ProjectPage) -> None:
    doc = json.loads(render_project_json(replace(page, status=None, status_reason=None), url_for=identity))
    assert "project-status" not in doc
    doc = json.loads(render_project_json(replace(page, status="active", status_reason=None), url_for=identity))
    assert doc["project-status"] == {"status": "active"}


class PageParser(HTMLParser):
    """Collects what a client reads from a simple page: metas, anchors (attributes and text)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.metas: dict[str, str | None] = {}
        self.anchors: list[tuple[dict[str, str | None], str]] = []
        self.title = ""
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "meta":
            self.metas[values["name"] or ""] = values["content"]
        elif tag == "a":
            self.anchors.append((values, ""))
        self._in = tag

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "a":
            attrs, text = self.anchors[-1]
            self.anchors[-1] = (attrs, text + data)
        elif self._in == "title":
            self.title += data


def parse_html(body: bytes) -> PageParser:
    parser = PageParser()
    parser.feed(body.decode("utf-8"))
    parser.close()
    return parser


def test_render_project_html_attributes_round_trip_exactly(page: ProjectPage) -> None:
    parsed = parse_html(render_project_html(page, url_for=URL_FOR, repository_meta=True))
    assert parsed.title == "Links for Demo.Project"
    assert parsed.metas == {
        "pypi:repository-version": "1.4",
        "pypi:project-status": "deprecated",
        "pypi:project-status-reason": "use <other> & co",
    }
    anchors = {text: attrs for attrs, text in parsed.anchors}
    assert [text for _, text in parsed.anchors] == [f.filename for f in page.files]
    assert anchors["demo_project-1.0-py3-none-any.whl"] == {
        "href": f"/pypi/packages/a1/a1/{'a1' * 30}/demo_project-1.0-py3-none-any.whl#sha256={WHEEL_SHA}",
        "data-requires-python": ">=3.8,<4",
        "data-dist-info-metadata": f"sha256={WHEEL_META_SHA}",
        "data-core-metadata": f"sha256={WHEEL_META_SHA}",
        "data-provenance": PROVENANCE,
    }
    assert anchors["demo_project-0.9.tar.gz"] == {
        "href": f"/pypi/packages/e5/e5/{'e5' * 30}/demo_project-0.9.tar.gz#sha256={OLD_SHA}",
        "data-yanked": YANK_REASON,
    }
    assert anchors["demo_project-0.8.zip"] == {"href": "https://elsewhere.example.org/old/demo_project-0.8.zip"}
    assert anchors["demo_project-1.0rc1-py3-none-any.whl"]["data-core-metadata"] == "true"
    assert anchors["demo_project-1.0rc1-py3-none-any.whl"]["data-dist-info-metadata"] == "true"


NASTY = '"><script>alert(\'x\')</script>&amp;'


def test_render_project_html_escapes_every_upstream_string() -> None:
    nasty_file = DistFile(
        filename=f"x{NASTY}.whl",
        url=f"https://example.org/a?b=1&c=2{NASTY}",
        sha256="f" * 64,
        requires_python=f"<4,>=3{NASTY}",
        size=1,
        upload_time=None,
        yanked=NASTY,
        core_metadata=True,
        provenance=f"https://example.org/{NASTY}",
        version=None,
    )
    nasty = ProjectPage(name=NormalizedName("x"), display_name=NASTY, last_serial=1, files=(nasty_file,),
                        versions=(), status=NASTY, status_reason=NASTY)
    body = render_project_html(nasty, url_for=identity, repository_meta=True)
    assert b"<script>" not in body
    parsed = parse_html(body)
    assert parsed.title == f"Links for {NASTY}"
    assert parsed.metas["pypi:project-status"] == NASTY
    assert parsed.metas["pypi:project-status-reason"] == NASTY
    [(attrs, text)] = parsed.anchors
    assert text == nasty_file.filename
    assert attrs == {
        "href": f"{nasty_file.url}#sha256={'f' * 64}",
        "data-requires-python": nasty_file.requires_python,
        "data-yanked": NASTY,
        "data-dist-info-metadata": "true",
        "data-core-metadata": "true",
        "data-provenance": nasty_file.provenance,
    }


def test_render_project_html_yanked_without_reason_has_empty_marker(page: ProjectPage) -> None:
    yanked = replace(page, files=tuple(replace(f, yanked=True) for f in page.files))
    parsed = parse_html(render_project_html(yanked, url_for=identity, repository_meta=True))
    assert [attrs["data-yanked"] for attrs, _ in parsed.anchors] == [""] * len(page.files)


def test_render_project_html_without_repository_meta_only_drops_that_tag(page: ProjectPage) -> None:
    with_meta = render_project_html(page, url_for=URL_FOR, repository_meta=True)
    without = render_project_html(page, url_for=URL_FOR, repository_meta=False)
    assert "pypi:repository-version" not in parse_html(without).metas
    assert with_meta.replace(b'    <meta name="pypi:repository-version" content="1.4">\n', b"") == without


def test_render_project_pages_are_deterministic_whatever_the_upstream_order(page: ProjectPage) -> None:
    for seed in range(5):
        doc = upstream_simple()
        random.Random(seed).shuffle(doc["files"])
        random.Random(seed).shuffle(doc["versions"])
        shuffled = parse_simple_project_json(json.dumps(doc).encode(), display_name="Demo.Project")
        assert shuffled == page
        assert render_project_json(shuffled, url_for=URL_FOR) == render_project_json(page, url_for=URL_FOR)
        html = render_project_html(shuffled, url_for=URL_FOR, repository_meta=True)
        assert html == render_project_html(page, url_for=URL_FOR, repository_meta=True)
    assert render_project_json(page, url_for=URL_FOR) == render_project_json(page, url_for=URL_FOR)


def test_project_page_constructed_directly_is_put_in_canonical_order(page: ProjectPage) -> None:
    rebuilt = ProjectPage(name=page.name, display_name=page.display_name, last_serial=page.last_serial,
                          files=tuple(reversed(page.files)), versions=("1.0", "0.9", "1.0", "0.8", "1.0rc1"),
                          status=page.status, status_reason=page.status_reason)
    assert rebuilt == page


@pytest.mark.parametrize("source", ["simple", "json-api"])
def test_rendered_json_parses_back_to_the_same_page(source: str) -> None:
    if source == "simple":
        original = parse_simple_project_json(upstream_simple(), display_name="Demo.Project")
    else:
        api = upstream_json_api()
        del api["releases"]["not-a-version"]  # its version cannot be told from its filename
        original = parse_json_api(api)
    rendered = render_project_json(original, url_for=identity)
    assert parse_simple_project_json(rendered, display_name=original.display_name) == original
    again = parse_simple_project_json(rendered, display_name=original.display_name)
    assert render_project_json(again, url_for=identity) == rendered


def test_render_project_json_of_strange_text_stays_valid_ascii_json(page: ProjectPage) -> None:
    odd = replace(page, display_name="caf\u00e9", status="active", status_reason="lone \ud800 surrogate")
    body = render_project_json(odd, url_for=identity)
    assert body.isascii()
    assert json.loads(body)["project-status"]["reason"] == "lone \ud800 surrogate"
    html = render_project_html(odd, url_for=identity, repository_meta=True)
    assert "Links for café".encode() in html


# --- root pages ------------------------------------------------------------------------------


def root_entries() -> list[tuple[str, NormalizedName, int]]:
    names = ["Zope", "a&b", "Django", "<Script>", 'quote"d', "caf\u00e9", "x_y.z", "0"]
    return [(name, canonicalize_name(name), 1000 + i) for i, name in enumerate(names)]


def test_render_root_html_matches_golden() -> None:
    assert render_root_html(root_entries(), prefix="/pypi") == (GOLDEN / "root.html").read_bytes()


def test_render_root_json_matches_golden() -> None:
    assert render_root_json(root_entries(), last_serial=99) == canonical_json(GOLDEN / "root.v1_json")


def many_projects(count: int) -> list[tuple[str, NormalizedName, int]]:
    rng = random.Random(count)
    tricky = ["A&B", "<b>", "it's", 'say "hi"', "Ünïcode", "a/b", "sp ace", "#hash", "q?x"]
    projects = [(f"Pkg_{i:05d}.Name", canonicalize_name(f"Pkg_{i:05d}.Name"), i) for i in range(count)]
    projects += [(name, canonicalize_name(name), 7) for name in tricky]
    rng.shuffle(projects)
    return projects


def test_render_root_html_lists_every_project_escaped_and_ordered() -> None:
    projects = many_projects(5000)
    parsed = parse_html(render_root_html(projects, prefix="/pypi/"))
    expected = sorted(projects, key=lambda p: p[1])
    assert parsed.metas == {"pypi:repository-version": "1.4"}
    assert [text for _, text in parsed.anchors] == [display for display, _, _ in expected]
    hrefs = [attrs["href"] for attrs, _ in parsed.anchors]
    assert hrefs[:3] == ["/pypi/simple/%23hash/", "/pypi/simple/%3Cb%3E/", "/pypi/simple/a%26b/"]
    assert {"/pypi/simple/a%2Fb/", "/pypi/simple/sp%20ace/", "/pypi/simple/q%3Fx/",
            "/pypi/simple/pkg-00042-name/"} <= set(hrefs)
    assert len(set(hrefs)) == len(projects)


def test_render_root_json_lists_every_project_with_its_serial_in_order() -> None:
    projects = many_projects(5000)
    doc = json.loads(render_root_json(projects, last_serial=123))
    expected = sorted(projects, key=lambda p: p[1])
    assert doc["meta"] == {"api-version": "1.4", "_last-serial": 123}
    assert doc["projects"] == [{"name": display, "_last-serial": serial} for display, _, serial in expected]


def test_render_root_pages_of_no_projects_are_valid() -> None:
    assert json.loads(render_root_json([], last_serial=0)) == {
        "meta": {"api-version": "1.4", "_last-serial": 0}, "projects": []}
    assert parse_html(render_root_html(iter([]), prefix="")).anchors == []


def test_render_root_pages_are_deterministic_whatever_the_input_order() -> None:
    projects = many_projects(300)
    shuffled = copy.copy(projects)
    random.Random(1).shuffle(shuffled)
    assert render_root_json(projects, last_serial=5) == render_root_json(iter(shuffled), last_serial=5)
    assert render_root_html(projects, prefix="/p") == render_root_html(iter(shuffled), prefix="/p")


def test_render_root_json_escapes_any_display_name_as_ascii() -> None:
    projects: list[tuple[str, NormalizedName, int]] = [
        ('a"b\\c\n\u00e9\ud800', NormalizedName("odd"), 1)]
    body = render_root_json(projects, last_serial=1)
    assert body.isascii()
    assert json.loads(body)["projects"][0]["name"] == 'a"b\\c\n\u00e9\ud800'
    assert render_root_html(projects, prefix="").count(b"&#55296;") == 1
