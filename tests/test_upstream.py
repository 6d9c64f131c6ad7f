"""upstream.py: retries, error mapping and masking with a swapped fetch; then the real thing
(libcurl against Tornado servers and pproxy on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import email.utils
import inspect
import logging
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import pycurl
import pytest
import tornado.curl_httpclient
import tornado.httpclient
from tornado.curl_httpclient import CurlError
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse
from tornado.httpserver import HTTPServer
from tornado.httputil import HTTPHeaders
from tornado.iostream import StreamClosedError
from tornado.testing import bind_unused_port
from tornado.web import Application, RequestHandler

from pypimirror.errors import (
    ConfigError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamUnavailable,
)
from pypimirror.upstream import (
    FETCH_ERRORS,
    MAX_REDIRECTS,
    STALL_BYTES_PER_SECOND,
    UpstreamClient,
    UpstreamSettings,
    check_proxy_url,
    fetch_with_curl,
    parse_retry_after,
    read_last_serial,
)

URL = "http://127.0.0.1:9/simple/"


def make_settings(**overrides: Any) -> UpstreamSettings:
    values: dict[str, Any] = {
        "user_agent": "pypimirror-test/1",
        "proxy": None,
        "connect_timeout": 2.0,
        "stall_timeout": 1.0,
        "attempts": 3,
        "backoff_base": 0.5,
        "backoff_max": 30.0,
    }
    values.update(overrides)
    return UpstreamSettings(**values)


# ---------------------------------------------------------------------------------------------
# Unit tests: the fetch is a script of answers and exceptions.


@dataclass
class Answer:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class ScriptedFetch:
    """A fetch that plays its outcomes in order and remembers each request."""

    def __init__(self, *outcomes: Answer | Exception) -> None:
        self.outcomes = list(outcomes)
        self.requests: list[HTTPRequest] = []

    async def __call__(self, request: HTTPRequest) -> HTTPResponse:
        self.requests.append(request)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return HTTPResponse(
            request,
            outcome.status,
            headers=HTTPHeaders(outcome.headers),
            buffer=BytesIO(outcome.body),
            effective_url=request.url + "#final",
        )


class RecordedSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def make_client(
    fetch: ScriptedFetch,
    sleep: RecordedSleep | None = None,
    clock: float = 1_000_000.0,
    **settings: Any,
) -> UpstreamClient:
    return UpstreamClient(
        make_settings(**settings), fetch=fetch, sleep=sleep or RecordedSleep(), clock=lambda: clock
    )


@pytest.mark.gen_test
async def test_get_returns_status_headers_body_and_final_url() -> None:
    fetch = ScriptedFetch(Answer(200, b"hello", {"X-PyPI-Last-Serial": "42"}))
    response = await make_client(fetch).get(URL, headers={"Accept": "application/json"})
    assert (response.status, response.body, response.url) == (200, b"hello", URL + "#final")
    assert read_last_serial(response.headers) == 42
    assert fetch.requests[0].headers["Accept"] == "application/json"


@pytest.mark.gen_test
async def test_get_and_head_follow_redirects_with_no_total_time_limit() -> None:
    fetch = ScriptedFetch(Answer(200), Answer(200))
    client = make_client(fetch, connect_timeout=4.5)
    await client.get(URL)
    await client.head(URL)
    for request, method in zip(fetch.requests, ["GET", "HEAD"]):
        assert request.method == method
        assert request.user_agent == "pypimirror-test/1"
        assert request.connect_timeout == 4.5
        assert request.request_timeout == 0
        assert request.follow_redirects is True
        assert request.max_redirects == MAX_REDIRECTS


@pytest.mark.gen_test
async def test_post_sends_body_and_content_type_and_does_not_follow_redirects() -> None:
    fetch = ScriptedFetch(Answer(200, b"<ok/>"))
    response = await make_client(fetch).post(URL, b"<call/>", content_type="text/xml")
    request = fetch.requests[0]
    assert (request.method, request.body, request.headers["Content-Type"]) == (
        "POST",
        b"<call/>",
        "text/xml",
    )
    assert request.follow_redirects is False
    assert response.body == b"<ok/>"


class RecordingCurl:
    def __init__(self) -> None:
        self.options: dict[int, object] = {}

    def setopt(self, option: int, value: object) -> None:
        self.options[option] = value


@pytest.mark.parametrize(
    ("proxy", "expected"),
    [
        (None, {pycurl.PROXY: ""}),
        (
            "socks5h://bob:pw@127.0.0.1:1080",
            {pycurl.PROXY: "socks5h://bob:pw@127.0.0.1:1080", pycurl.NOPROXY: ""},
        ),
    ],
)
@pytest.mark.gen_test
async def test_curl_handle_gets_stall_detection_and_an_explicit_proxy(
    proxy: str | None, expected: dict[int, object]
) -> None:
    fetch = ScriptedFetch(Answer(200))
    await make_client(fetch, proxy=proxy, stall_timeout=2.2).get(URL)
    curl = RecordingCurl()
    prepare = fetch.requests[0].prepare_curl_callback
    assert prepare is not None
    prepare(curl)
    assert curl.options == {
        pycurl.LOW_SPEED_LIMIT: STALL_BYTES_PER_SECOND,
        pycurl.LOW_SPEED_TIME: 3,
        **expected,
    }


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
@pytest.mark.gen_test
async def test_retryable_status_is_retried_then_succeeds(status: int) -> None:
    fetch = ScriptedFetch(Answer(status), Answer(200, b"ok"))
    sleep = RecordedSleep()
    response = await make_client(fetch, sleep).get(URL)
    assert response.body == b"ok"
    assert len(fetch.requests) == 2
    assert len(sleep.delays) == 1


@pytest.mark.gen_test
async def test_retryable_status_gives_up_after_attempts_with_status_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fetch = ScriptedFetch(*[Answer(503)] * 3)
    sleep = RecordedSleep()
    with pytest.raises(UpstreamStatusError) as caught:
        await make_client(fetch, sleep).get(URL)
    assert caught.value.status == 503
    assert str(caught.value) == f"GET {URL}: upstream answered 503 Service Unavailable"
    assert (len(fetch.requests), len(sleep.delays)) == (3, 2)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "503 Service Unavailable; attempt 1 of 3, retrying in" in warnings[0]


@pytest.mark.parametrize("status", [301, 400, 401, 403, 404, 410])
@pytest.mark.gen_test
async def test_unexpected_final_status_raises_at_once(status: int) -> None:
    fetch = ScriptedFetch(Answer(status))
    sleep = RecordedSleep()
    with pytest.raises(UpstreamStatusError) as caught:
        await make_client(fetch, sleep).get(URL)
    assert caught.value.status == status
    assert caught.value.url == URL
    assert (len(fetch.requests), sleep.delays) == (1, [])


@pytest.mark.gen_test
async def test_404_is_an_answer_for_head_and_for_get_when_allowed() -> None:
    fetch = ScriptedFetch(Answer(404), Answer(404))
    client = make_client(fetch)
    assert (await client.head(URL)).status == 404
    assert (await client.get(URL, ok_statuses=(200, 404))).status == 404


@pytest.mark.gen_test
async def test_backoff_doubles_with_jitter_between_attempts() -> None:
    timeout = CurlError(pycurl.E_OPERATION_TIMEDOUT, "Operation timed out")
    fetch = ScriptedFetch(*[timeout] * 4)
    sleep = RecordedSleep()
    with pytest.raises(UpstreamUnavailable):
        await make_client(fetch, sleep, attempts=4, backoff_base=1.0).get(URL)
    assert len(sleep.delays) == 3
    for delay, floor in zip(sleep.delays, [1.0, 2.0, 4.0]):
        assert floor <= delay <= floor + 1.0


@pytest.mark.gen_test
async def test_backoff_is_capped_at_backoff_max() -> None:
    fetch = ScriptedFetch(*[Answer(500)] * 3)
    sleep = RecordedSleep()
    with pytest.raises(UpstreamStatusError):
        await make_client(fetch, sleep, backoff_base=10.0, backoff_max=12.0).get(URL)
    assert sleep.delays[1] == 12.0


NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("retry_after", "expected_delay"),
    [
        ("7", 7.0),
        (email.utils.formatdate(NOW + 12, usegmt=True), 12.0),
        ("3600", 30.0),  # capped at backoff_max
        (email.utils.formatdate(NOW - 60, usegmt=True), 0.0),
    ],
)
@pytest.mark.gen_test
async def test_retry_after_sets_the_delay(retry_after: str, expected_delay: float) -> None:
    fetch = ScriptedFetch(Answer(429, headers={"Retry-After": retry_after}), Answer(200))
    sleep = RecordedSleep()
    await make_client(fetch, sleep, clock=NOW).get(URL)
    assert sleep.delays == [pytest.approx(expected_delay)]


@pytest.mark.gen_test
async def test_unparsable_retry_after_falls_back_to_backoff() -> None:
    fetch = ScriptedFetch(Answer(503, headers={"Retry-After": "soon"}), Answer(200))
    sleep = RecordedSleep()
    await make_client(fetch, sleep, backoff_base=2.0).get(URL)
    assert 2.0 <= sleep.delays[0] <= 4.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        (" 120 ", 120.0),
        ("Tue, 14 Nov 2023 22:13:30 GMT", 10.0),
        ("Tue, 14 Nov 2023 22:13:00 GMT", 0.0),
        ("", None),
        ("-5", None),
        ("1.5", None),
        ("tomorrow", None),
        ("Tue, 14 Nov 2023 22:13:30", None),  # no zone: not an HTTP date
    ],
)
def test_parse_retry_after(value: str, expected: float | None) -> None:
    assert parse_retry_after(value, now=1_700_000_000.0) == expected


# Every kind of exception a fetch can raise: (exception, error class, words in the message,
# retried?). The coverage test below fails if tornado or pycurl grows an exception class
# that no row exercises.
FETCH_EXCEPTIONS: list[tuple[Exception, type[UpstreamError], str, bool]] = [
    (CurlError(7, "Failed to connect to 127.0.0.1 port 9"), UpstreamUnavailable, "could not connect (curl error 7: Failed to connect", True),
    (CurlError(6, "Could not resolve host: example.org"), UpstreamUnavailable, "could not resolve host", True),
    (CurlError(28, "Operation too slow"), UpstreamUnavailable, "timed out (curl error 28: Operation too slow)", True),
    (CurlError(56, "Connection reset by peer"), UpstreamUnavailable, "connection reset while receiving", True),
    (CurlError(52, "Empty reply from server"), UpstreamUnavailable, "empty reply", True),
    (CurlError(97, "Failed to receive SOCKS response"), UpstreamUnavailable, "proxy handshake failed", True),
    (CurlError(60, "SSL certificate problem"), UpstreamUnavailable, "TLS certificate not trusted", False),
    (CurlError(47, "Maximum (5) redirects followed"), UpstreamUnavailable, "too many redirects", False),
    (CurlError(23, "body exceeded max_body_size"), UpstreamUnavailable, "body not accepted", False),
    (CurlError(99, "something new"), UpstreamUnavailable, "transfer failed (curl error 99: something new)", False),
    (HTTPClientError(599, "Timeout"), UpstreamUnavailable, "no answer (Timeout)", True),
    (HTTPClientError(503), UpstreamStatusError, "upstream answered 503 Service Unavailable", True),
    (HTTPClientError(403), UpstreamStatusError, "upstream answered 403 Forbidden", False),
    (pycurl.error(48, "unknown option"), UpstreamUnavailable, "curl refused the request (curl error 48: unknown option)", False),
    (ConnectionRefusedError(111, "Connection refused"), UpstreamUnavailable, "no answer (ConnectionRefusedError", True),
    (TimeoutError("timed out"), UpstreamUnavailable, "no answer (TimeoutError: timed out)", True),
    (socket.gaierror(-2, "Name or service not known"), UpstreamUnavailable, "no answer (gaierror", True),
    (ssl.SSLError(1, "handshake failure"), UpstreamUnavailable, "no answer (SSLError", True),
    (StreamClosedError(), UpstreamUnavailable, "no answer (StreamClosedError: Stream is closed)", True),
]  # fmt: skip


@pytest.mark.parametrize(("exception", "error_class", "words", "is_transient"), FETCH_EXCEPTIONS)
@pytest.mark.gen_test
async def test_every_fetch_exception_is_mapped_to_an_upstream_error(
    exception: Exception, error_class: type[UpstreamError], words: str, is_transient: bool
) -> None:
    secret_url = "http://bob:hunter2@127.0.0.1:9/simple/"
    fetch = ScriptedFetch(exception, exception)
    with pytest.raises(UpstreamError) as caught:
        await make_client(fetch, attempts=2).get(secret_url)
    error = caught.value
    assert type(error) is error_class
    assert str(error).startswith("GET http://bob:***@127.0.0.1:9/simple/: ")
    assert words in str(error)
    assert "hunter2" not in str(error)
    assert error.url == "http://bob:***@127.0.0.1:9/simple/"
    assert error.__cause__ is exception
    assert len(fetch.requests) == (2 if is_transient else 1)


def test_every_exception_class_of_the_http_stack_is_mapped() -> None:
    modules = [tornado.httpclient, tornado.curl_httpclient, pycurl]
    classes = {
        member
        for module in modules
        for _, member in inspect.getmembers(module, inspect.isclass)
        if issubclass(member, Exception)
    }
    covered = {type(row[0]) for row in FETCH_EXCEPTIONS}
    assert classes  # the introspection found something to check
    for cls in classes:
        assert issubclass(cls, FETCH_ERRORS), cls
        assert any(issubclass(row, cls) for row in covered), f"no FETCH_EXCEPTIONS row for {cls}"


@pytest.mark.gen_test
async def test_unavailable_error_names_the_masked_proxy() -> None:
    fetch = ScriptedFetch(CurlError(7, "Failed to connect to 127.0.0.1 port 80 over proxy"))
    client = make_client(fetch, attempts=1, proxy="socks5h://bob:hunter2@127.0.0.1:9")
    with pytest.raises(UpstreamUnavailable) as caught:
        await client.get(URL)
    assert str(caught.value).endswith("via proxy socks5h://bob:***@127.0.0.1:9")
    assert "hunter2" not in str(caught.value)


@pytest.mark.gen_test
async def test_exception_outside_the_http_stack_propagates_unchanged() -> None:
    fetch = ScriptedFetch(ValueError("a bug"))
    with pytest.raises(ValueError, match="a bug"):
        await make_client(fetch).get(URL)
    assert len(fetch.requests) == 1


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:3128",
        "https://proxy.example.org",
        "socks5://127.0.0.1:1080",
        "socks5h://bob:pw@127.0.0.1:1080/",
    ],
)
def test_check_proxy_url_accepts_supported_proxies(url: str) -> None:
    check_proxy_url(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://127.0.0.1:21", "'ftp://127.0.0.1:21': scheme must be one of http, https, socks5,"),
        ("socks4://127.0.0.1:1080", "scheme must be one of"),
        ("127.0.0.1:3128", "scheme must be one of"),
        ("http://", "'http://' names no host"),
        ("http://bob:pw@127.0.0.1:port", "'http://bob:***@127.0.0.1:port' is not a URL"),
        ("http://127.0.0.1:3128/path", "a proxy URL has no path, query or fragment"),
    ],
)
def test_check_proxy_url_rejects_what_curl_cannot_use(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=None) as caught:
        check_proxy_url(url)
    assert message in str(caught.value)
    assert "pw@" not in str(caught.value)


def test_settings_with_a_bad_proxy_raise_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        make_settings(proxy="socks4://bob:pw@127.0.0.1:1080")
    assert caught.value.problems[0].key_path == "upstream.proxy"
    assert "socks4://bob:***@127.0.0.1:1080" in str(caught.value)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"X-PyPI-Last-Serial": "12345"}, 12345),
        ({"x-pypi-last-serial": " 7 "}, 7),
        ({}, None),
        ({"X-PyPI-Last-Serial": ""}, None),
        ({"X-PyPI-Last-Serial": "-3"}, None),
        ({"X-PyPI-Last-Serial": "12a"}, None),
        ({"X-PyPI-Last-Serial": "²"}, None),
    ],
)
def test_read_last_serial(headers: dict[str, str], expected: int | None) -> None:
    assert read_last_serial(HTTPHeaders(headers)) == expected


# ---------------------------------------------------------------------------------------------
# Integration: libcurl against real servers on 127.0.0.1.


class PageHandler(RequestHandler):
    def get(self) -> None:
        self.set_header("X-PyPI-Last-Serial", "42")
        self.set_header("X-Seen-User-Agent", self.request.headers.get("User-Agent", ""))
        self.write(b"hello")

    def head(self) -> None:
        self.set_header("Content-Length", "5")

    def post(self) -> None:
        self.set_header("X-Seen-Content-Type", self.request.headers.get("Content-Type", ""))
        self.write(self.request.body[::-1])


class RedirectHandler(RequestHandler):
    def get(self) -> None:
        self.redirect("/page")


class FlakyHandler(RequestHandler):
    def initialize(self, failures: list[int]) -> None:
        self.failures = failures

    def get(self) -> None:
        if self.failures:
            self.set_status(self.failures.pop(0))
        else:
            self.write(b"finally")


class StallHandler(RequestHandler):
    """Sends headers and a few bytes, then nothing until the client gives up."""

    async def get(self) -> None:
        self.gone = asyncio.Event()
        self.write(b"x" * 100)
        await self.flush()
        await asyncio.wait_for(self.gone.wait(), timeout=10)

    def on_connection_close(self) -> None:
        self.gone.set()


class TrickleHandler(RequestHandler):
    """A slow but steady body that takes longer than the stall timeout in total."""

    async def get(self) -> None:
        for _ in range(8):
            self.write(b"y" * 4096)
            await self.flush()
            await asyncio.sleep(0.2)


@asynccontextmanager
async def serve_origin(**handler_kwargs: Any) -> AsyncIterator[str]:
    sock, port = bind_unused_port()
    app = Application(
        [
            ("/page", PageHandler),
            ("/redirect", RedirectHandler),
            ("/flaky", FlakyHandler, {"failures": handler_kwargs.get("failures", [])}),
            ("/stall", StallHandler),
            ("/trickle", TrickleHandler),
        ]
    )
    server = HTTPServer(app)
    server.add_sockets([sock])
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        await server.close_all_connections()


def unused_port() -> int:
    sock, port = bind_unused_port()
    sock.close()
    return port


@pytest.mark.gen_test
async def test_real_get_head_post_and_redirect(curl_client: AsyncHTTPClient) -> None:
    client = UpstreamClient(make_settings())
    async with serve_origin() as origin:
        got = await client.get(f"{origin}/page")
        head = await client.head(f"{origin}/page")
        posted = await client.post(f"{origin}/page", b"abc", content_type="text/xml")
        redirected = await client.get(f"{origin}/redirect")
        missing = await client.head(f"{origin}/nothing-here")
    assert (got.status, got.body, read_last_serial(got.headers)) == (200, b"hello", 42)
    assert got.headers["X-Seen-User-Agent"] == "pypimirror-test/1"
    assert (head.status, head.body, head.headers["Content-Length"]) == (200, b"", "5")
    assert (posted.body, posted.headers["X-Seen-Content-Type"]) == (b"cba", "text/xml")
    assert (redirected.url, redirected.body) == (f"{origin}/page", b"hello")
    assert missing.status == 404


@pytest.mark.gen_test
async def test_real_server_errors_are_retried_until_success(curl_client: AsyncHTTPClient) -> None:
    sleep = RecordedSleep()
    client = UpstreamClient(make_settings(), sleep=sleep)
    async with serve_origin(failures=[503, 502]) as origin:
        response = await client.get(f"{origin}/flaky")
    assert response.body == b"finally"
    assert len(sleep.delays) == 2


@pytest.mark.gen_test
async def test_closed_port_raises_unavailable_after_all_attempts(
    curl_client: AsyncHTTPClient,
) -> None:
    sleep = RecordedSleep()
    url = f"http://127.0.0.1:{unused_port()}/simple/"
    with pytest.raises(UpstreamUnavailable) as caught:
        await UpstreamClient(make_settings(), sleep=sleep).get(url)
    assert str(caught.value).startswith(f"GET {url}: could not connect (curl error 7: ")
    assert len(sleep.delays) == 2


@pytest.mark.parametrize("variable", ["http_proxy", "all_proxy", "ALL_PROXY"])
@pytest.mark.gen_test
async def test_proxy_variables_of_the_environment_are_ignored(
    curl_client: AsyncHTTPClient, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, f"http://127.0.0.1:{unused_port()}")
    async with serve_origin() as origin:
        # Control: a plain libcurl fetch obeys the variable and fails on the dead proxy.
        with pytest.raises(CurlError, match="proxy"):
            await curl_client.fetch(f"{origin}/page")
        response = await UpstreamClient(make_settings()).get(f"{origin}/page")
    assert response.body == b"hello"


@pytest.mark.gen_test(timeout=15)
async def test_stalled_transfer_times_out_but_slow_steady_one_completes(
    curl_client: AsyncHTTPClient,
) -> None:
    client = UpstreamClient(make_settings(stall_timeout=1.0, attempts=1))
    async with serve_origin() as origin:
        started = time.monotonic()
        trickle = await client.get(f"{origin}/trickle")
        trickle_seconds = time.monotonic() - started
        with pytest.raises(UpstreamUnavailable) as caught:
            await client.get(f"{origin}/stall")
    assert len(trickle.body) == 8 * 4096
    assert trickle_seconds > 1.0  # longer than stall_timeout in total, yet not cut off
    assert f"GET {origin}/stall: timed out (curl error 28: " in str(caught.value)


@pytest.mark.gen_test
async def test_default_fetch_refuses_the_pure_python_client(io_loop: Any) -> None:
    saved = AsyncHTTPClient._save_configuration()
    AsyncHTTPClient.configure("tornado.simple_httpclient.SimpleAsyncHTTPClient")
    try:
        with pytest.raises(RuntimeError, match="configure_curl_client"):
            await fetch_with_curl(HTTPRequest("http://127.0.0.1:9/"))
    finally:
        AsyncHTTPClient().close()
        AsyncHTTPClient._restore_configuration(saved)


# ---------------------------------------------------------------------------------------------
# Through real proxies (pproxy in a subprocess).


@dataclass
class ProxyServer:
    socks_port: int
    http_port: int
    auth_socks_port: int
    log: Path

    def saw(self, protocol: str, origin: str) -> bool:
        """True when the proxy's log shows a tunnel of ``protocol`` to ``origin``'s port."""
        target = origin.removeprefix("http://")
        return any(
            line.startswith(f"{protocol} ") and line.endswith(f"-> {target}")
            for line in self.log.read_text().splitlines()
        )


def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert process.poll() is None, "pproxy exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"pproxy did not listen on {port}")


@pytest.fixture(scope="module")
def proxy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyServer]:
    log_path = tmp_path_factory.mktemp("pproxy") / "log"
    server = ProxyServer(unused_port(), unused_port(), unused_port(), log_path)
    with server.log.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "pproxy", "-v", "--auth", "0",
                "-l", f"socks5://127.0.0.1:{server.socks_port}",
                "-l", f"http://127.0.0.1:{server.http_port}",
                "-l", f"socks5://127.0.0.1:{server.auth_socks_port}#bob:s3cret",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        for port in (server.socks_port, server.http_port, server.auth_socks_port):
            wait_for_port(port, process)
        yield server
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("scheme", "protocol"), [("socks5h", "socks5"), ("socks5", "socks5"), ("http", "http")]
)
@pytest.mark.gen_test
async def test_requests_go_through_the_configured_proxy(
    curl_client: AsyncHTTPClient,
    proxy_server: ProxyServer,
    monkeypatch: pytest.MonkeyPatch,
    scheme: str,
    protocol: str,
) -> None:
    monkeypatch.setenv("no_proxy", "*")  # must not let requests bypass the configured proxy
    port = proxy_server.http_port if protocol == "http" else proxy_server.socks_port
    client = UpstreamClient(make_settings(proxy=f"{scheme}://127.0.0.1:{port}"))
    async with serve_origin() as origin:
        response = await client.get(f"{origin}/page")
    assert response.body == b"hello"
    assert proxy_server.saw(protocol, origin)


@pytest.mark.e2e
@pytest.mark.gen_test
async def test_socks_proxy_with_credentials_from_the_url(
    curl_client: AsyncHTTPClient, proxy_server: ProxyServer
) -> None:
    good = f"socks5h://bob:s3cret@127.0.0.1:{proxy_server.auth_socks_port}"
    bad = f"socks5h://bob:wrong@127.0.0.1:{proxy_server.auth_socks_port}"
    async with serve_origin() as origin:
        response = await UpstreamClient(make_settings(proxy=good)).get(f"{origin}/page")
        with pytest.raises(UpstreamUnavailable) as caught:
            await UpstreamClient(make_settings(proxy=bad, attempts=1)).get(f"{origin}/page")
    assert response.body == b"hello"
    assert proxy_server.saw("socks5", origin)
    assert "proxy handshake failed" in str(caught.value)
    masked = f"socks5h://bob:***@127.0.0.1:{proxy_server.auth_socks_port}"
    assert str(caught.value).endswith(f"via proxy {masked}")


@pytest.mark.e2e
@pytest.mark.parametrize("scheme", ["socks5h", "http"])
@pytest.mark.gen_test
async def test_stopped_proxy_gives_unavailable_naming_the_proxy(
    curl_client: AsyncHTTPClient, scheme: str
) -> None:
    proxy = f"{scheme}://127.0.0.1:{unused_port()}"
    sleep = RecordedSleep()
    async with serve_origin() as origin:
        with pytest.raises(UpstreamUnavailable) as caught:
            await UpstreamClient(make_settings(proxy=proxy), sleep=sleep).get(f"{origin}/page")
    message = str(caught.value)
    assert message.startswith(f"GET {origin}/page: could not connect (curl error 7: ")
    assert message.endswith(f"via proxy {proxy}")
    assert len(sleep.delays) == 2
