"""Proxy mode: files we do not hold, streamed from the fake upstream through the mirror's app.

The mirror runs in the test's loop (pytest-tornado), the fake upstream in its own thread, and
every byte goes over real sockets on 127.0.0.1 through the real libcurl client.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from typing import Any

import pytest
from fakedists import BuiltDist
from fakeindex import FakeIndex
from fakeindex import render_project_json as render_upstream_page
from tornado.httpclient import AsyncHTTPClient, HTTPResponse

from prometheus_client.parser import text_string_to_metric_families

from pypimirror.app import Services
from pypimirror.pages import parse_simple_project_json, render_project_json, rewrite_file_url
from pypimirror.storage import RepoLayout, atomic_write

PREFIX = "/pypi"  # as in conftest.py
MIB = 1024 * 1024

# The conftest fixtures' types: fetch(path, **options), raw_request(target) and the recorders.
Fetch = Callable[..., Awaitable[HTTPResponse]]
RawRequest = Callable[[bytes], Awaitable[bytes]]
RecordingVotes = Any
RecordingLog = Any


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


REDIRECT_URL = f"http://127.0.0.1:{closed_port()}/packages"  # a 302 there could never succeed


@pytest.fixture(autouse=True)
def _curl(curl_client: AsyncHTTPClient) -> None:
    """The loop's shared client (the mirror's way out) is libcurl before anything asks for one."""


@pytest.fixture
def http_client(curl_client: AsyncHTTPClient, http_server: object) -> Iterator[AsyncHTTPClient]:
    """The test's own client, apart from the mirror's (pytest-tornado's would close the shared one)."""
    client = AsyncHTTPClient(force_instance=True)
    yield client
    client.close()


@pytest.fixture
def config_data(request: pytest.FixtureRequest, config_data: dict[str, Any], fake_index: FakeIndex) -> dict[str, Any]:
    """The mirror in proxy mode for everyone, in front of the fake; a test overrides keys by
    ``@pytest.mark.parametrize("config_data", [{...}], indirect=True)``."""
    return {
        **config_data,
        "upstream": {"pypi_url": fake_index.pypi_url, "packages_url": fake_index.packages_url,
                     "redirect_url": REDIRECT_URL},
        "ip_modes": {"default": "proxy"},
        "timeouts": {"upstream": "1s", "write": "2s"},
        **getattr(request, "param", {}),
    }


@pytest.fixture
def wheel(fake_index: FakeIndex) -> BuiltDist:
    fake_index.add_project("demo", ["1.0"], payload_size=300_000)
    return next(dist for dist in fake_index.files("demo") if dist.filename.endswith(".whl"))


def mirror_path(dist: BuiltDist, suffix: str = "") -> str:
    return f"{PREFIX}{dist.path}{suffix}"


# --------------------------------------------------------------------------- relaying


@pytest.mark.gen_test
async def test_missing_file_is_streamed_from_the_upstream_voted_and_logged_as_proxied(
    fetch: Fetch, wheel: BuiltDist, fake_index: FakeIndex, votes: RecordingVotes, access_log: RecordingLog
) -> None:
    response = await fetch(mirror_path(wheel), headers={"User-Agent": "pip/24.0"})
    assert response.code == 200 and response.body == wheel.content
    assert response.headers["Content-Length"] == str(wheel.size)
    assert response.headers["ETag"] == f'"{wheel.sha256}"' and "Last-Modified" in response.headers
    assert response.headers["Content-Type"] == "application/octet-stream"  # the upstream's, not tornado's default
    assert fake_index.count_requests(wheel.path, "GET") == 1
    assert votes.offers == [(wheel.path.removeprefix("/packages/"), "127.0.0.0", "pip/24.0")]
    (entry,) = access_log.entries
    assert (entry.status, entry.bytes_sent, entry.proxied) == (200, wheel.size, True)


@pytest.mark.gen_test
async def test_head_is_sent_upstream_as_head(fetch: Fetch, wheel: BuiltDist, fake_index: FakeIndex,
                                             votes: RecordingVotes) -> None:
    response = await fetch(mirror_path(wheel), method="HEAD")
    assert (response.code, response.body) == (200, b"")
    assert response.headers["Content-Length"] == str(wheel.size)
    assert fake_index.count_requests(wheel.path, "HEAD") == 1 and fake_index.count_requests(wheel.path, "GET") == 0
    assert votes.offers == []


@pytest.mark.gen_test
async def test_metadata_miss_is_proxied_and_not_voted(fetch: Fetch, wheel: BuiltDist, votes: RecordingVotes,
                                                      access_log: RecordingLog) -> None:
    response = await fetch(mirror_path(wheel, ".metadata"))
    assert response.code == 200 and response.body == wheel.metadata
    assert votes.offers == [] and access_log.entries[0].proxied


@pytest.mark.gen_test
async def test_range_is_forwarded_and_the_206_relayed(fetch: Fetch, wheel: BuiltDist) -> None:
    response = await fetch(mirror_path(wheel), headers={"Range": "bytes=1000-1999"})
    assert response.code == 206 and response.body == wheel.content[1000:2000]
    assert response.headers["Content-Range"] == f"bytes 1000-1999/{wheel.size}"
    assert response.headers["Content-Length"] == "1000"


@pytest.mark.gen_test
async def test_if_none_match_is_forwarded_and_the_304_relayed(fetch: Fetch, wheel: BuiltDist) -> None:
    response = await fetch(mirror_path(wheel), headers={"If-None-Match": f'"{wheel.sha256}"'})
    assert (response.code, response.body) == (304, b"")


@pytest.mark.gen_test
async def test_upstream_404_passes_through_as_404(fetch: Fetch, fake_index: FakeIndex,
                                                  access_log: RecordingLog) -> None:
    path = f"/packages/00/11/{'2' * 60}/absent-1.0-py3-none-any.whl"
    response = await fetch(PREFIX + path)
    assert response.code == 404 and fake_index.count_requests(path) == 1
    assert access_log.entries[0].proxied


@pytest.mark.gen_test
async def test_local_file_is_served_locally_even_for_proxy_clients(
    fetch: Fetch, fake_index: FakeIndex, mirror_config: Any, access_log: RecordingLog
) -> None:
    relpath = f"ab/cd/{'e' * 60}/local-1.0-py3-none-any.whl"
    local = mirror_config.cache.tiers[0].path / relpath
    local.parent.mkdir(parents=True)
    local.write_bytes(b"local bytes")
    response = await fetch(f"{PREFIX}/packages/{relpath}")
    assert (response.code, response.body) == (200, b"local bytes")
    assert fake_index.requests == [] and not access_log.entries[0].proxied


@pytest.mark.gen_test
async def test_only_range_conditions_and_user_agent_go_upstream(
    fetch: Fetch, wheel: BuiltDist, fake_index: FakeIndex
) -> None:
    sent = {
        "User-Agent": "uv/0.5.0", "Range": "bytes=0-9", "If-Modified-Since": "Mon, 01 Jan 2024 00:00:00 GMT",
        "Authorization": "Basic c2VjcmV0", "Cookie": "session=1", "X-Forwarded-For": "192.0.2.7",
        "Accept-Encoding": "gzip", "Proxy-Authorization": "Basic eA==", "X-Custom": "1",
    }
    response = await fetch(mirror_path(wheel), headers=sent)
    assert response.code == 206
    (record,) = fake_index.requests
    received = record.headers
    assert received["User-Agent"] == "uv/0.5.0" and received["Range"] == "bytes=0-9"
    assert received["If-Modified-Since"] == sent["If-Modified-Since"]
    for name in ("Authorization", "Cookie", "X-Forwarded-For", "Accept-Encoding", "Proxy-Authorization", "X-Custom"):
        assert name not in received, name


@pytest.mark.gen_test
async def test_a_client_without_user_agent_is_sent_as_ours(raw_request: RawRequest, wheel: BuiltDist,
                                                          fake_index: FakeIndex) -> None:
    answer = await raw_request(mirror_path(wheel).encode())
    assert answer.startswith(b"HTTP/1.1 200 OK")
    assert fake_index.requests[0].headers["User-Agent"].startswith("pypimirror/")


@pytest.mark.gen_test
async def test_only_headers_that_describe_the_bytes_come_back(fetch: Fetch, wheel: BuiltDist,
                                                              fake_index: FakeIndex) -> None:
    fake_index.fail_next(wheel.path, status=200, body=b"hello", headers={
        "Content-Type": "application/zip", "Cache-Control": "max-age=60", "Set-Cookie": "tracker=1",
        "Strict-Transport-Security": "max-age=31536000", "Alt-Svc": 'h3=":443"', "X-Served-By": "cache-1",
    })
    response = await fetch(mirror_path(wheel))
    assert (response.code, response.body) == (200, b"hello")
    assert response.headers["Content-Type"] == "application/zip"
    assert response.headers["Cache-Control"] == "max-age=60"
    for name in ("Set-Cookie", "Strict-Transport-Security", "Alt-Svc", "X-Served-By"):
        assert name not in response.headers, name


@pytest.mark.gen_test
async def test_upstream_redirects_are_followed_here(fetch: Fetch, wheel: BuiltDist, fake_index: FakeIndex) -> None:
    fake_index.fail_next(wheel.path, status=302, headers={"Location": fake_index.url + wheel.path})
    response = await fetch(mirror_path(wheel))
    assert response.code == 200 and response.body == wheel.content
    assert fake_index.count_requests(wheel.path) == 2


@pytest.mark.gen_test
async def test_a_redirect_loop_ends_in_502_after_five_hops(fetch: Fetch, wheel: BuiltDist, fake_index: FakeIndex,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    fake_index.fail_next(wheel.path, status=302, times=None, headers={"Location": wheel.path})
    response = await fetch(mirror_path(wheel))
    assert response.code == 502 and response.body == b"502 Bad Gateway\n"
    assert fake_index.count_requests(wheel.path) == 6
    assert "too many redirects" in caplog.text


@pytest.mark.gen_test
async def test_post_is_refused_and_never_reaches_the_upstream(fetch: Fetch, wheel: BuiltDist,
                                                             fake_index: FakeIndex) -> None:
    response = await fetch(mirror_path(wheel), method="POST", body=b"x")
    assert response.code == 405 and fake_index.requests == []


# --------------------------------------------------------------------------- ip_modes


TRUSTED = {"trusted_proxies": ["127.0.0.1/32"]}


@pytest.mark.parametrize(
    ("config_data", "client_ip", "proxied"),
    [
        ({**TRUSTED, "ip_modes": {"default": "302", "rules": [{"cidr": "2001:db8::/32", "mode": "proxy"}]}},
         "2001:db8::5", True),
        ({**TRUSTED, "ip_modes": {"default": "302", "rules": [{"cidr": "2001:db8::/32", "mode": "proxy"}]}},
         "2001:db9::5", False),
        ({**TRUSTED, "ip_modes": {"default": "proxy", "rules": [{"cidr": "10.0.0.0/8", "mode": "302"},
                                                                 {"cidr": "10.1.0.0/16", "mode": "proxy"}]}},
         "10.1.2.3", False),
        ({**TRUSTED, "ip_modes": {"default": "proxy", "rules": [{"cidr": "10.0.0.0/8", "mode": "302"}]}},
         "192.0.2.1", True),
        ({**TRUSTED, "ip_modes": {"default": "302", "rules": [{"cidr": "192.0.2.0/24", "mode": "proxy"}]}},
         "::ffff:192.0.2.9", True),
    ],
    indirect=["config_data"],
)
@pytest.mark.gen_test
async def test_the_first_matching_rule_picks_proxy_or_302(
    config_data: dict[str, Any], fetch: Fetch, wheel: BuiltDist, client_ip: str, proxied: bool, access_log: RecordingLog
) -> None:
    response = await fetch(mirror_path(wheel), headers={"X-Forwarded-For": client_ip})
    if proxied:
        assert response.code == 200 and response.body == wheel.content
    else:
        assert response.code == 302 and response.headers["Location"] == REDIRECT_URL + wheel.path.removeprefix(
            "/packages")
    assert access_log.entries[0].proxied is proxied


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize("config_data", [{"upstream": {"pypi_url": "http://127.0.0.1:9",
                                                        "packages_url": f"http://127.0.0.1:{closed_port()}/packages"}}],
                         indirect=True)
@pytest.mark.gen_test
async def test_refused_upstream_gives_502_and_a_log_line(
    config_data: dict[str, Any], fetch: Fetch, caplog: pytest.LogCaptureFixture, access_log: RecordingLog,
    services: Services,
) -> None:
    path = f"/packages/00/11/{'2' * 60}/demo-1.0-py3-none-any.whl"
    with caplog.at_level(logging.WARNING, logger="pypimirror.handlers.proxy"):
        response = await fetch(PREFIX + path)
    assert response.code == 502 and response.body == b"502 Bad Gateway\n"
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert re.search(rf"proxying GET http://127\.0\.0\.1:\d+{path} failed: GET .*: could not connect", caplog.text)
    assert access_log.entries[0].status == 502 and access_log.entries[0].proxied
    assert upstream_errors(services) == {"proxy_unanswered": 1}


@pytest.mark.gen_test(timeout=10)
async def test_an_upstream_that_stalls_before_answering_gives_502(
    fetch: Fetch, wheel: BuiltDist, fake_index: FakeIndex, caplog: pytest.LogCaptureFixture
) -> None:
    fake_index.delay(wheel.path, 8)  # timeouts.upstream is 1s
    started = asyncio.get_running_loop().time()
    response = await fetch(mirror_path(wheel))
    assert response.code == 502 and asyncio.get_running_loop().time() - started < 5
    assert "timed out" in caplog.text


async def read_raw(port: int, target: str) -> tuple[bytes, bytes]:
    """``(head, body)`` of one GET read until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: mirror\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    body = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return head, body


@pytest.mark.gen_test
async def test_upstream_closing_mid_body_closes_the_client_connection(
    http_server: object, http_port: int, wheel: BuiltDist, fake_index: FakeIndex, caplog: pytest.LogCaptureFixture,
    access_log: RecordingLog, services: Services,
) -> None:
    fake_index.truncate_next(wheel.path, at_bytes=100_000)
    head, body = await read_raw(http_port, mirror_path(wheel))
    assert head.startswith(b"HTTP/1.1 200 OK") and f"Content-Length: {wheel.size}\r\n".encode() in head
    assert len(body) < wheel.size  # the connection closed before the promised length: no complete response
    assert "broke off" in caplog.text and "closing the client's connection" in caplog.text
    assert access_log.entries[0].bytes_sent < wheel.size
    assert upstream_errors(services) == {"proxy_body_broken": 1}


def store_page(layout: RepoLayout, fake_index: FakeIndex, name: str) -> None:
    """Store the project's page as the index sync would: the upstream's, with file URLs made ours."""
    project = fake_index.project(name)
    page = parse_simple_project_json(render_upstream_page(project, fake_index.url, project.last_serial))
    url_for = partial(rewrite_file_url, packages_url=fake_index.packages_url, prefix=PREFIX)
    atomic_write(layout.project_page(page.name, "index.v1_json"), render_project_json(page, url_for=url_for))


async def read_to_close(port: int, target: str) -> tuple[bytes, bytes]:
    """``(head, body)`` of one GET sent with ``Connection: close``, read until the server closes
    (an empty head if it closed before answering)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: mirror\r\nConnection: close\r\n\r\n".encode())
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


def upstream_errors(services: Services) -> dict[str, float]:
    """``pypimirror_upstream_errors_total`` by reason, as /metrics shows it."""
    return {sample.labels["reason"]: sample.value
            for family in text_string_to_metric_families(services.metrics.render().decode())
            for sample in family.samples if sample.name == "pypimirror_upstream_errors_total"}


def dechunk(body: bytes) -> tuple[bytes, bool]:
    """The data of a chunked body, and whether it ended with the terminating chunk."""
    data = bytearray()
    while b"\r\n" in body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return bytes(data), rest == b"\r\n"
        if len(rest) < size + 2:
            data += rest[:size]
            break
        data += rest[:size]
        body = rest[size + 2 :]
    return bytes(data), False


@pytest.mark.parametrize(("at_bytes", "extra", "how"), [(100_000, b"", "ends short of"), (-1, b"x" * 5000, "runs past")])
@pytest.mark.gen_test
async def test_an_unframed_body_whose_length_is_not_the_pages_closes_the_client_connection_uncleanly(
    http_server: object, http_port: int, wheel: BuiltDist, fake_index: FakeIndex, layout: RepoLayout,
    caplog: pytest.LogCaptureFixture, access_log: RecordingLog, services: Services, at_bytes: int, extra: bytes,
    how: str,
) -> None:
    store_page(layout, fake_index, "demo")
    fake_index.send_unframed_next(wheel.path, at_bytes=at_bytes, extra=extra)
    head, body = await read_to_close(http_port, mirror_path(wheel))
    if head:  # the head went out before the body was found wrong (else no answer at all)
        assert head.startswith(b"HTTP/1.1 200 OK") and b"Transfer-Encoding: chunked" in head
    data, terminated = dechunk(body)
    assert not terminated  # no clean end: the client knows the response is incomplete
    assert wheel.content.startswith(data) and len(data) < wheel.size + len(extra)
    assert f"without Content-Length {how} the {wheel.size} bytes its stored page lists" in caplog.text
    assert "closing the client's connection" in caplog.text
    assert access_log.entries[0].bytes_sent <= wheel.size
    assert upstream_errors(services) == {"proxy_body_broken": 1}


@pytest.mark.gen_test
async def test_an_unframed_body_of_the_listed_length_is_relayed_whole(
    http_server: object, http_port: int, wheel: BuiltDist, fake_index: FakeIndex, layout: RepoLayout,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store_page(layout, fake_index, "demo")
    fake_index.send_unframed_next(wheel.path)
    head, body = await read_to_close(http_port, mirror_path(wheel))
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert dechunk(body) == (wheel.content, True)
    assert "broke off" not in caplog.text


@pytest.mark.gen_test
async def test_a_held_file_whose_size_differs_from_its_page_is_proxied_instead(
    fetch: Fetch, wheel: BuiltDist, fake_index: FakeIndex, layout: RepoLayout, mirror_config: Any,
    access_log: RecordingLog,
) -> None:
    store_page(layout, fake_index, "demo")
    local = mirror_config.cache.tiers[0].path / wheel.path.removeprefix("/packages/")
    local.parent.mkdir(parents=True)
    local.write_bytes(wheel.content[:-1])  # one byte short
    response = await fetch(mirror_path(wheel))
    assert (response.code, response.body) == (200, wheel.content)
    assert fake_index.count_requests(wheel.path, "GET") == 1 and access_log.entries[0].proxied


@pytest.mark.gen_test
async def test_a_client_that_leaves_ends_the_request_and_the_upstream_transfer(
    http_server: object, http_port: int, fake_index: FakeIndex, services: Services, access_log: RecordingLog,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_index.add_project("big", ["1.0"], payload_size=16 * MIB, sdist=False)
    (dist,) = fake_index.files("big")
    reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
    writer.write(f"GET {mirror_path(dist)} HTTP/1.1\r\nHost: mirror\r\n\r\n".encode())
    assert (await reader.readexactly(15)) == b"HTTP/1.1 200 OK"
    writer.close()
    for _ in range(100):
        if access_log.entries and services.in_flight.count == 0:
            break
        await asyncio.sleep(0.05)
    (entry,) = access_log.entries
    assert entry.proxied and entry.bytes_sent < dist.size and services.in_flight.count == 0
    assert "broke off" not in caplog.text


# --------------------------------------------------------------------------- the buffer budget


@pytest.mark.gen_test
async def test_a_relay_starting_while_the_budget_is_spent_gets_small_marks_and_the_whole_file(
    fetch: Fetch, fake_index: FakeIndex, services: Services
) -> None:
    fake_index.add_project("big", ["1.0"], payload_size=3 * MIB, sdist=False)
    (dist,) = fake_index.files("big")
    budget = services.buffers
    held_elsewhere = budget.take(budget.limit, 0)
    response = await fetch(mirror_path(dist))
    assert response.code == 200 and response.body == dist.content
    assert (budget.in_use, budget.squeezed) == (held_elsewhere, 1)


@pytest.mark.gen_test
async def test_a_relay_takes_its_high_water_from_the_budget_and_gives_it_back(
    fetch: Fetch, wheel: BuiltDist, services: Services
) -> None:
    assert (await fetch(mirror_path(wheel))).body == wheel.content
    assert (services.buffers.in_use, services.buffers.squeezed) == (0, 0)


@pytest.mark.gen_test
async def test_a_proxied_download_counts_in_the_hit_rate_as_proxy_with_its_bytes(
    fetch: Fetch, wheel: BuiltDist, services: Services
) -> None:
    assert (await fetch(mirror_path(wheel))).code == 200
    assert (await fetch(mirror_path(wheel, ".metadata"))).code == 200  # not a download
    counts, _ = services.hits.take()
    assert [(c.outcome, c.requests, c.bytes) for c in counts] == [("proxy", 1, wheel.size)]
