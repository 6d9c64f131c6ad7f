"""The relay's header policy (tables), its reading of heads, and its back-pressure on real curl."""

from __future__ import annotations

import asyncio

import pytest
from fakeindex import FakeIndex
from tornado.httpclient import AsyncHTTPClient, HTTPRequest, HTTPResponse
from tornado.httputil import HTTPHeaders

from pypimirror.errors import UpstreamError, UpstreamUnavailable
from pypimirror.relay import (
    open_relay,
    relayed_request_headers,
    relayed_response_headers,
)
from pypimirror.upstream import UpstreamClient, UpstreamSettings

MIB = 1024 * 1024


def headers_of(*pairs: tuple[str, str]) -> HTTPHeaders:
    headers = HTTPHeaders()
    for name, value in pairs:
        headers.add(name, value)
    return headers


@pytest.mark.parametrize(
    ("sent", "forwarded"),
    [
        ([("Range", "bytes=0-9")], {"Range": "bytes=0-9"}),
        ([("If-None-Match", '"a"'), ("If-None-Match", '"b"')], {"If-None-Match": '"a", "b"'}),
        ([("If-Modified-Since", "Mon, 01 Jan 2024 00:00:00 GMT"), ("If-Range", '"a"'), ("If-Match", "*"),
          ("If-Unmodified-Since", "Mon, 01 Jan 2024 00:00:00 GMT")],
         {"If-Modified-Since": "Mon, 01 Jan 2024 00:00:00 GMT", "If-Range": '"a"', "If-Match": "*",
          "If-Unmodified-Since": "Mon, 01 Jan 2024 00:00:00 GMT"}),
        ([("Authorization", "Basic eA=="), ("Cookie", "a=b"), ("Proxy-Authorization", "x"), ("Connection", "close"),
          ("Keep-Alive", "5"), ("TE", "trailers"), ("Upgrade", "h2c"), ("X-Forwarded-For", "192.0.2.1"),
          ("Accept-Encoding", "gzip"), ("Host", "mirror"), ("User-Agent", "pip")], {}),
    ],
)
def test_relayed_request_headers_are_ranges_and_conditions_only(sent: list[tuple[str, str]],
                                                                 forwarded: dict[str, str]) -> None:
    assert relayed_request_headers(headers_of(*sent)) == forwarded


@pytest.mark.parametrize(
    ("received", "relayed"),
    [
        ([("Content-Type", "application/zip"), ("Content-Length", "10"), ("ETag", '"x"'),
          ("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT"), ("Accept-Ranges", "bytes"), ("Cache-Control", "max-age=1"),
          ("Content-Range", "bytes 0-9/20"), ("Age", "3"), ("Expires", "0"), ("Vary", "Accept"), ("Retry-After", "5"),
          ("Content-Disposition", "attachment"), ("Content-Encoding", "gzip")],
         [("Content-Type", "application/zip"), ("Content-Length", "10"), ("Etag", '"x"'),
          ("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT"), ("Accept-Ranges", "bytes"), ("Cache-Control", "max-age=1"),
          ("Content-Range", "bytes 0-9/20"), ("Age", "3"), ("Expires", "0"), ("Vary", "Accept"), ("Retry-After", "5"),
          ("Content-Disposition", "attachment"), ("Content-Encoding", "gzip")]),
        ([("Set-Cookie", "a=1"), ("Connection", "keep-alive"), ("Keep-Alive", "timeout=5"),
          ("Transfer-Encoding", "chunked"), ("Proxy-Authenticate", "Basic"), ("Trailer", "x"), ("Upgrade", "h2"),
          ("Strict-Transport-Security", "max-age=1"), ("Alt-Svc", "h3"), ("Server", "nginx"), ("Location", "/x"),
          ("X-Served-By", "cache")], []),
    ],
)
def test_relayed_response_headers_describe_the_bytes_only(received: list[tuple[str, str]],
                                                          relayed: list[tuple[str, str]]) -> None:
    assert relayed_response_headers(headers_of(*received)) == relayed


def scripted_client(lines: list[str], chunks: list[bytes], *, fail: Exception | None = None,
                    final_code: int = 200) -> UpstreamClient:
    """A client whose fetch plays ``lines`` and ``chunks`` to the callbacks, as curl would."""

    async def fetch(request: HTTPRequest) -> HTTPResponse:
        assert request.header_callback is not None and request.streaming_callback is not None
        for line in lines:
            request.header_callback(line)
        for chunk in chunks:
            request.streaming_callback(chunk)
        if fail is not None:
            raise fail
        return HTTPResponse(request, final_code, headers=HTTPHeaders({"X-From": "response"}))

    return UpstreamClient(UpstreamSettings("test", None, 1, 1, attempts=1), fetch=fetch)


REDIRECT = ["HTTP/1.1 302 Found\r\n", "Location: /there\r\n", "Content-Length: 0\r\n", "\r\n"]
FINAL = ["HTTP/2 200 \r\n", "content-type: application/zip\r\n", "content-length: 3\r\n", "\r\n"]


@pytest.mark.parametrize(
    ("lines", "status", "content_type"),
    [
        (FINAL, 200, "application/zip"),
        (REDIRECT + FINAL, 200, "application/zip"),
        (["HTTP/1.1 100 Continue\r\n", "\r\n", *FINAL], 200, "application/zip"),
        (["HTTP/1.1 304 Not Modified\r\n", "Location: /x\r\n", "\r\n"], 304, None),
        (["HTTP/1.1 302 Found\r\n", "Content-Type: text/html\r\n", "\r\n"], 302, "text/html"),  # not followed
    ],
)
@pytest.mark.gen_test
async def test_the_head_is_the_final_answer_after_redirects(lines: list[str], status: int,
                                                            content_type: str | None) -> None:
    relay = open_relay(scripted_client(lines, [b"abc"]), "GET", "http://127.0.0.1:9/f")
    head = await relay.head()
    assert (head.status, head.headers.get("Content-Type")) == (status, content_type)
    assert [batch async for batch in relay.body()] == [b"abc"]


@pytest.mark.gen_test
async def test_a_malformed_header_line_is_dropped() -> None:
    lines = ["HTTP/1.1 200 OK\r\n", "Content-Type: text/plain\x01\r\n", "ETag: \"ok\"\r\n", "\r\n"]
    relay = open_relay(scripted_client(lines, []), "GET", "http://127.0.0.1:9/f")
    head = await relay.head()
    assert relayed_response_headers(head.headers) == [("Etag", '"ok"')]


@pytest.mark.gen_test
async def test_without_a_complete_head_the_final_response_is_the_head() -> None:
    relay = open_relay(scripted_client(["HTTP/1.1 200 OK\r\n"], [b"x"]), "GET", "http://127.0.0.1:9/f")
    head = await relay.head()
    assert (head.status, head.headers["X-From"]) == (200, "response")


@pytest.mark.gen_test
async def test_a_failure_before_the_head_raises_from_head() -> None:
    client = scripted_client([], [], fail=OSError("connection refused"))
    relay = open_relay(client, "GET", "http://127.0.0.1:9/f")
    with pytest.raises(UpstreamUnavailable, match=r"^GET http://127\.0\.0\.1:9/f: no answer \(OSError: connection"):
        await relay.head()


@pytest.mark.gen_test
async def test_a_failure_mid_body_raises_after_the_pieces_received() -> None:
    client = scripted_client(FINAL, [b"ab"], fail=OSError("reset"))
    relay = open_relay(client, "GET", "http://127.0.0.1:9/f")
    assert (await relay.head()).status == 200
    received = []
    with pytest.raises(UpstreamUnavailable, match="reset"):
        async for batch in relay.body():
            received.append(batch)
    assert received == [b"ab"]


UNFRAMED = ["HTTP/1.1 200 OK\r\n", "Content-Type: application/zip\r\n", "\r\n"]


@pytest.mark.parametrize(
    ("lines", "chunks", "expected_size", "received"),
    [
        (UNFRAMED, [b"ab", b"c"], 3, b"abc"),
        (UNFRAMED, [b"ab"], None, b"ab"),  # no listed size: nothing to check against
        (FINAL, [b"abc"], 5, b"abc"),  # a Content-Length frames the body: curl tells a short one
        (["HTTP/1.1 206 Partial Content\r\n", "\r\n"], [b"a"], 3, b"a"),  # a part, not the file
        (["HTTP/1.1 200 OK\r\n", "Content-Encoding: gzip\r\n", "\r\n"], [b"zz"], 3, b"zz"),
    ],
)
@pytest.mark.gen_test
async def test_a_body_is_checked_against_the_expected_size_only_when_unframed(
    lines: list[str], chunks: list[bytes], expected_size: int | None, received: bytes
) -> None:
    relay = open_relay(scripted_client(lines, chunks), "GET", "http://127.0.0.1:9/f", expected_size=expected_size)
    await relay.head()
    assert b"".join([batch async for batch in relay.body()]) == received


@pytest.mark.parametrize(("chunks", "how", "received"), [([b"ab"], "ends short of", b"ab"), ([b"abcd"], "runs past", b"")])
@pytest.mark.gen_test
async def test_an_unframed_body_of_another_length_than_expected_raises(
    chunks: list[bytes], how: str, received: bytes
) -> None:
    relay = open_relay(scripted_client(UNFRAMED, chunks), "GET", "http://127.0.0.1:9/f", expected_size=3)
    await relay.head()
    taken = bytearray()
    with pytest.raises(UpstreamError, match=f"the body without Content-Length {how} the 3 bytes its stored page lists"):
        async for batch in relay.body():
            taken += batch
    assert (bytes(taken), relay.is_aborted) == (received, False)


def test_only_get_and_head_are_relayed() -> None:
    with pytest.raises(ValueError, match="only GET and HEAD are relayed, not 'POST'"):
        open_relay(scripted_client([], []), "POST", "http://127.0.0.1:9/f")


@pytest.mark.gen_test(timeout=20)
async def test_a_reader_that_stops_taking_pauses_the_transfer_and_loses_nothing(
    curl_client: AsyncHTTPClient, fake_index: FakeIndex
) -> None:
    fake_index.add_project("big", ["1.0"], payload_size=24 * MIB, sdist=False)
    (dist,) = fake_index.files("big")
    client = UpstreamClient(UpstreamSettings("test", None, 5, 5, attempts=1))
    high = 2 * MIB
    relay = open_relay(client, "GET", fake_index.url + dist.path, high_water=high, low_water=MIB // 2)
    assert (await relay.head()).status == 200
    body = relay.body()
    received = [await anext(body)]
    most_queued = 0
    for _ in range(10):  # the reader stalls for a second; the queue must stop near the mark
        await asyncio.sleep(0.1)
        most_queued = max(most_queued, relay.queued_bytes)
    # Past the mark come only the bytes already on their way when the pause took effect:
    # tornado's own buffer (up to 1 MiB, delivered at once) and curl's reads in flight.
    assert high <= most_queued < high + 2 * MIB
    received.extend([batch async for batch in body])
    assert b"".join(received) == dist.content


@pytest.mark.gen_test(timeout=20)
async def test_abort_ends_a_paused_transfer(curl_client: AsyncHTTPClient, fake_index: FakeIndex) -> None:
    fake_index.add_project("big", ["1.0"], payload_size=24 * MIB, sdist=False)
    (dist,) = fake_index.files("big")
    client = UpstreamClient(UpstreamSettings("test", None, 5, 5, attempts=1))
    relay = open_relay(client, "GET", fake_index.url + dist.path, high_water=MIB, low_water=MIB // 2)
    await relay.head()
    await asyncio.sleep(0.3)  # paused by now: nobody reads
    started = asyncio.get_running_loop().time()
    await relay.abort()
    assert relay.is_aborted and relay.queued_bytes == 0
    assert asyncio.get_running_loop().time() - started < 3
