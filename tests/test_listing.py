"""listing.py: both listing formats, parsed from tables of documents; fetch_listing against a
swapped fetch."""

from __future__ import annotations

import json
import logging
import xmlrpc.client
from io import BytesIO
from typing import Any

import pytest
from tornado.httpclient import HTTPRequest, HTTPResponse
from tornado.httputil import HTTPHeaders

from pypimirror.errors import MalformedUpstreamError, UpstreamStatusError
from pypimirror.listing import (
    ListedProject,
    fetch_listing,
    parse_simple_root_listing,
    parse_xmlrpc_listing,
)
from pypimirror.upstream import UpstreamClient, UpstreamSettings


def simple_root(projects: Any, meta: Any = None) -> bytes:
    document: dict[str, Any] = {"meta": meta or {"api-version": "1.4", "_last-serial": 99}}
    document["projects"] = projects
    return json.dumps(document).encode()


def xmlrpc_answer(result: Any) -> bytes:
    return xmlrpc.client.dumps((result,), methodresponse=True).encode()


def xmlrpc_struct(members: str) -> bytes:
    return (
        "<?xml version='1.0'?><methodResponse><params><param><value><struct>"
        f"{members}</struct></value></param></params></methodResponse>"
    ).encode()


def member(name: str, value: str) -> str:
    return f"<member><name>{name}</name><value>{value}</value></member>"


# --- PEP 691 JSON root ------------------------------------------------------------------------

SIMPLE_CASES: list[tuple[str, bytes, dict[str, ListedProject]]] = [
    (
        "display names keyed by normalized name",
        simple_root([{"name": "Frob_Nicate", "_last-serial": 5}, {"name": "0", "_last-serial": 1}]),
        {"frob-nicate": ListedProject("Frob_Nicate", 5), "0": ListedProject("0", 1)},
    ),
    (
        "duplicate keeps the higher serial and its display name",
        simple_root(
            [{"name": "Foo.Bar", "_last-serial": 3}, {"name": "foo-bar", "_last-serial": 8}]
        ),
        {"foo-bar": ListedProject("foo-bar", 8)},
    ),
    (
        "duplicate with a lower serial later is ignored",
        simple_root([{"name": "Foo", "_last-serial": 9}, {"name": "FOO", "_last-serial": 2}]),
        {"foo": ListedProject("Foo", 9)},
    ),
    (
        "no meta at all is tolerated",
        json.dumps({"projects": [{"name": "a", "_last-serial": 0}]}).encode(),
        {"a": ListedProject("a", 0)},
    ),
    (
        "unknown keys are ignored",
        simple_root([{"name": "a", "_last-serial": 4, "extra": True}], {"api-version": "1.99"}),
        {"a": ListedProject("a", 4)},
    ),
]


@pytest.mark.parametrize(
    ("body", "expected"), [c[1:] for c in SIMPLE_CASES], ids=[c[0] for c in SIMPLE_CASES]
)
def test_parse_simple_root_listing(body: bytes, expected: dict[str, ListedProject]) -> None:
    assert parse_simple_root_listing(body) == expected


def test_simple_entries_without_usable_name_or_serial_are_skipped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = simple_root(
        [
            {"name": "good", "_last-serial": 7},
            {"name": "no-serial"},
            {"name": "string-serial", "_last-serial": "7"},
            {"name": "bool-serial", "_last-serial": True},
            {"name": "negative", "_last-serial": -1},
            {"name": "float", "_last-serial": 7.0},
            {"name": "../etc", "_last-serial": 7},
            {"name": 12, "_last-serial": 7},
            "not-an-object",
        ]
    )
    with caplog.at_level(logging.WARNING, logger="pypimirror.listing"):
        listing = parse_simple_root_listing(body)
    assert listing == {"good": ListedProject("good", 7)}
    [record] = caplog.records
    assert record.getMessage().startswith(
        "skipped 8 of 9 listed projects without a valid name and integer serial, e.g. "
        "'no-serial', 'string-serial', 'bool-serial', 'negative', 'float'"
    )


SIMPLE_ERRORS: list[tuple[bytes, str]] = [
    (b"<html>not json</html>", "upstream listing is not JSON: "),
    (b"\xff\xfe\xfa", "upstream listing is not JSON: "),
    (b"", "upstream listing is not JSON: "),
    (b"[]", "upstream listing is not a JSON object"),
    (json.dumps({"meta": {"api-version": "1.0"}}).encode(), "upstream listing has no 'projects' list"),
    (json.dumps({"projects": {"a": 1}}).encode(), "upstream listing has no 'projects' list"),
    (simple_root([]), "upstream listing is empty; refusing to treat that as 'every project was removed'"),
    (simple_root([{"name": "a"}, {"name": "b"}]), "none of the 2 listed projects has a valid name and an integer serial"),
    (simple_root([{"name": "a", "_last-serial": 1}], {"api-version": "2.0"}), "upstream listing has api-version '2.0'; only version 1.x is understood"),
    (simple_root([{"name": "a", "_last-serial": 1}], {"api-version": 1}), "upstream listing has api-version 1; only"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "message"), SIMPLE_ERRORS)
def test_parse_simple_root_listing_refuses_what_is_not_a_whole_listing(
    body: bytes, message: str
) -> None:
    with pytest.raises(MalformedUpstreamError) as caught:
        parse_simple_root_listing(body, url="http://127.0.0.1:9/simple/")
    assert str(caught.value).startswith(message)
    assert caught.value.url == "http://127.0.0.1:9/simple/"


# --- XML-RPC list_packages_with_serial --------------------------------------------------------

XMLRPC_CASES: list[tuple[str, bytes, dict[str, ListedProject]]] = [
    (
        "as xmlrpc.client writes it",
        xmlrpc_answer({"Frob_Nicate": 5, "zope.interface": 12}),
        {"frob-nicate": ListedProject("Frob_Nicate", 5), "zope-interface": ListedProject("zope.interface", 12)},
    ),
    (
        "i4, int and i8 are all integers",
        xmlrpc_struct(member("a", "<i4>1</i4>") + member("b", "<int>2</int>") + member("c", "<i8>30000000000</i8>")),
        {"a": ListedProject("a", 1), "b": ListedProject("b", 2), "c": ListedProject("c", 30000000000)},
    ),
    (
        "duplicate by normalized name keeps the higher serial",
        xmlrpc_answer({"Django": 3, "django": 1}),
        {"django": ListedProject("Django", 3)},
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "expected"), [c[1:] for c in XMLRPC_CASES], ids=[c[0] for c in XMLRPC_CASES]
)
def test_parse_xmlrpc_listing(body: bytes, expected: dict[str, ListedProject]) -> None:
    assert parse_xmlrpc_listing(body) == expected


def test_xmlrpc_members_without_integer_serial_are_skipped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = xmlrpc_struct(
        member("good", "<int>4</int>")
        + member("flag", "<boolean>1</boolean>")
        + member("text", "<string>4</string>")
        + member("bad name!", "<int>4</int>")
    )
    with caplog.at_level(logging.WARNING, logger="pypimirror.listing"):
        listing = parse_xmlrpc_listing(body)
    assert listing == {"good": ListedProject("good", 4)}
    assert "skipped 3 of 4 listed projects" in caplog.text


BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(
        b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
        for i in range(1, 10)
    )
    + b"]><methodResponse><params><param><value><string>&lol9;</string></value></param>"
    + b"</params></methodResponse>"
)

XMLRPC_ERRORS: list[tuple[bytes, str]] = [
    (xmlrpc.client.dumps(xmlrpc.client.Fault(-32500, "HTTPTooManyRequests: rate limited"), methodresponse=True).encode(),
     "upstream XML-RPC fault -32500: HTTPTooManyRequests: rate limited"),
    (b"", "upstream XML-RPC answer does not parse: ExpatError: no element found"),
    (b"<html><body>Bad gateway</body></html>", "upstream XML-RPC answer does not parse: ResponseError: no methodResponse found"),
    (b"<methodResponse><params><param><value><foo/></value></param></params></methodResponse>",
     "upstream XML-RPC answer does not parse: ResponseError: unknown tag 'foo'"),
    (xmlrpc_struct(member("a", "<int>x</int>")), "upstream XML-RPC answer does not parse: ValueError: invalid literal for int()"),
    (BILLION_LAUGHS, "upstream XML-RPC answer does not parse: ExpatError: limit on input amplification factor"),
    (xmlrpc_answer(["a", 1]), "upstream XML-RPC answer is not one struct"),
    (b"<methodResponse><params><param><value><int>1</int></value></param>"
     b"<param><value><int>2</int></value></param></params></methodResponse>", "upstream XML-RPC answer is not one struct"),
    (b"<methodResponse><params></params></methodResponse>", "upstream XML-RPC answer is not one struct"),
    (xmlrpc.client.dumps(({"a": 1},), "list_packages_with_serial").encode(), "upstream XML-RPC answer is not one struct"),
    (xmlrpc_answer({}), "upstream listing is empty; refusing to treat that as 'every project was removed'"),
    (xmlrpc_answer({"a": "1", "b": 2.5}), "none of the 2 listed projects has a valid name and an integer serial"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "message"), XMLRPC_ERRORS)
def test_parse_xmlrpc_listing_refuses_faults_and_garbage(body: bytes, message: str) -> None:
    with pytest.raises(MalformedUpstreamError) as caught:
        parse_xmlrpc_listing(body, url="http://127.0.0.1:9/pypi")
    assert str(caught.value).startswith(message)
    assert caught.value.url == "http://127.0.0.1:9/pypi"


# --- fetch_listing ----------------------------------------------------------------------------


class ScriptedFetch:
    def __init__(self, *answers: tuple[int, dict[str, str], bytes]) -> None:
        self.answers = list(answers)
        self.requests: list[HTTPRequest] = []

    async def __call__(self, request: HTTPRequest) -> HTTPResponse:
        self.requests.append(request)
        status, headers, body = self.answers.pop(0)
        return HTTPResponse(request, status, headers=HTTPHeaders(headers), buffer=BytesIO(body))


async def no_sleep(delay: float) -> None:
    pass


def make_client(fetch: ScriptedFetch) -> UpstreamClient:
    settings = UpstreamSettings(
        user_agent="pypimirror-test/1", proxy=None, connect_timeout=2, stall_timeout=5, attempts=2
    )
    return UpstreamClient(settings, fetch=fetch, sleep=no_sleep)


JSON_TYPE = "application/vnd.pypi.simple.v1+json"


@pytest.mark.gen_test
async def test_fetch_listing_simple_json_asks_for_pep_691_json(
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = simple_root([{"name": "Foo", "_last-serial": 3}])
    fetch = ScriptedFetch((200, {"Content-Type": f"{JSON_TYPE}; charset=utf-8"}, body))
    with caplog.at_level(logging.INFO, logger="pypimirror.listing"):
        listing = await fetch_listing(make_client(fetch), "http://127.0.0.1:9/", "simple-json")
    assert listing == {"foo": ListedProject("Foo", 3)}
    [request] = fetch.requests
    assert (request.method, request.url) == ("GET", "http://127.0.0.1:9/simple/")
    assert request.headers["Accept"] == JSON_TYPE
    assert "upstream lists 1 projects (simple-json)" in caplog.text


@pytest.mark.parametrize(
    ("headers", "shown"),
    [({"Content-Type": "text/html; charset=utf-8"}, "text/html; charset=utf-8"), ({}, "missing")],
)
@pytest.mark.gen_test
async def test_fetch_listing_simple_json_refuses_another_content_type(
    headers: dict[str, str], shown: str
) -> None:
    body = simple_root([{"name": "Foo", "_last-serial": 3}])
    fetch = ScriptedFetch((200, headers, body))
    with pytest.raises(MalformedUpstreamError) as caught:
        await fetch_listing(make_client(fetch), "http://127.0.0.1:9", "simple-json")
    assert str(caught.value) == f"upstream did not answer PEP 691 JSON (Content-Type: {shown})"
    assert caught.value.url == "http://127.0.0.1:9/simple/"


@pytest.mark.gen_test
async def test_fetch_listing_xmlrpc_posts_list_packages_with_serial() -> None:
    fetch = ScriptedFetch((200, {"Content-Type": "text/xml"}, xmlrpc_answer({"Foo": 3})))
    listing = await fetch_listing(make_client(fetch), "http://127.0.0.1:9", "xmlrpc")
    assert listing == {"foo": ListedProject("Foo", 3)}
    [request] = fetch.requests
    assert (request.method, request.url) == ("POST", "http://127.0.0.1:9/pypi")
    assert request.headers["Content-Type"] == "text/xml"
    assert request.body is not None
    assert xmlrpc.client.loads(request.body) == ((), "list_packages_with_serial")


@pytest.mark.parametrize("mode", ["simple-json", "xmlrpc"])
@pytest.mark.gen_test
async def test_fetch_listing_reports_a_failing_upstream(mode: Any) -> None:
    fetch = ScriptedFetch((503, {}, b""), (503, {}, b""))
    with pytest.raises(UpstreamStatusError) as caught:
        await fetch_listing(make_client(fetch), "http://127.0.0.1:9", mode)
    assert caught.value.status == 503
    assert len(fetch.requests) == 2
