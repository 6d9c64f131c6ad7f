"""The one way out: every request pypimirror sends to the upstream goes through here.

Whatever goes wrong on the wire (a refused connection, a stalled transfer, a dead proxy, an
error status) reaches callers as an :class:`~pypimirror.errors.UpstreamError`, never as
tornado's "HTTP 599". Every request carries the configured User-Agent, timeouts that bound
connecting and stalling but never the length of a transfer, and the configured proxy, and
the environment's ``http_proxy`` variables never apply. Transient failures are retried with
back-off before they are reported. URLs are masked before they reach a log line or a message.
"""

from __future__ import annotations

__all__ = [
    "FETCH_ERRORS",
    "MAX_BODY_SIZE",
    "MAX_REDIRECTS",
    "PROXY_SCHEMES",
    "STALL_BYTES_PER_SECOND",
    "Fetch",
    "UpstreamClient",
    "UpstreamResponse",
    "UpstreamSettings",
    "check_proxy_url",
    "configure_curl_client",
    "fetch_with_curl",
    "mask_url",
    "parse_retry_after",
    "read_last_serial",
]

import asyncio
import email.utils
import http.client
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import urlsplit, urlunsplit

import pycurl
from tornado.curl_httpclient import CurlAsyncHTTPClient, CurlError
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse
from tornado.httputil import HTTPHeaders

from pypimirror.errors import (
    ConfigError,
    ConfigProblem,
    UpstreamError,
    UpstreamStatusError,
    UpstreamUnavailable,
)

logger = logging.getLogger(__name__)

#: tornado's default (100 MiB) also caps streamed bodies; a mirror moves files far larger.
MAX_BODY_SIZE = 64 * 1024**3

#: A transfer slower than this for ``stall_timeout`` seconds counts as stalled.
STALL_BYTES_PER_SECOND = 1024

MAX_REDIRECTS = 5

PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")

#: What a ``fetch`` may raise when no usable answer arrived; everything else is a bug.
FETCH_ERRORS = (HTTPClientError, pycurl.error, OSError)

#: Swap point for tests: a request in, a response for *every* HTTP status out (like
#: ``raise_error=False``); it raises only when no answer arrived at all.
Fetch = Callable[[HTTPRequest], Awaitable[HTTPResponse]]

_CURLE_HTTP2_STREAM = 92  # not exported by pycurl
_CURLE_PROXY = 97  # not exported by pycurl; SOCKS/proxy handshake failures since curl 7.73

#: curl error number -> (short reason for people, worth another attempt?)
_CURL_ERRORS: dict[int, tuple[str, bool]] = {
    pycurl.E_COULDNT_RESOLVE_PROXY: ("could not resolve the proxy host", True),
    pycurl.E_COULDNT_RESOLVE_HOST: ("could not resolve host", True),
    pycurl.E_COULDNT_CONNECT: ("could not connect", True),
    pycurl.E_HTTP2: ("HTTP/2 error", True),
    _CURLE_HTTP2_STREAM: ("HTTP/2 stream error", True),
    pycurl.E_PARTIAL_FILE: ("transfer closed early", True),
    pycurl.E_OPERATION_TIMEDOUT: ("timed out", True),
    pycurl.E_SSL_CONNECT_ERROR: ("TLS handshake failed", True),
    pycurl.E_GOT_NOTHING: ("empty reply", True),
    pycurl.E_SEND_ERROR: ("connection reset while sending", True),
    pycurl.E_RECV_ERROR: ("connection reset while receiving", True),
    _CURLE_PROXY: ("proxy handshake failed", True),
    pycurl.E_UNSUPPORTED_PROTOCOL: ("unsupported protocol", False),
    pycurl.E_URL_MALFORMAT: ("malformed URL", False),
    pycurl.E_WRITE_ERROR: ("body not accepted", False),
    pycurl.E_ABORTED_BY_CALLBACK: ("aborted", False),
    pycurl.E_TOO_MANY_REDIRECTS: ("too many redirects", False),
    pycurl.E_PEER_FAILED_VERIFICATION: ("TLS certificate not trusted", False),
}


def configure_curl_client(max_clients: int) -> None:
    """Make ``AsyncHTTPClient()`` a libcurl client with room for mirror-sized bodies.

    Call it before the first ``AsyncHTTPClient()`` on the event loop: tornado caches one
    client per loop and never reconfigures an existing one. Calling it again is harmless
    (the latest arguments apply to clients created afterwards).
    """
    AsyncHTTPClient.configure(
        CurlAsyncHTTPClient, max_clients=max_clients, max_body_size=MAX_BODY_SIZE
    )


async def fetch_with_curl(request: HTTPRequest) -> HTTPResponse:
    """The production :data:`Fetch`: the loop's shared libcurl client.

    Refuses to run on tornado's pure-Python client, which would silently ignore our curl
    options, and with them the proxy setting.
    """
    client = AsyncHTTPClient()
    if not isinstance(client, CurlAsyncHTTPClient):
        raise RuntimeError(
            "configure_curl_client() must run before the first AsyncHTTPClient() on this loop"
        )
    return await client.fetch(request, raise_error=False)


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, safe for logs and messages.

    >>> mask_url("socks5h://bob:secret@127.0.0.1:1080")
    'socks5h://bob:***@127.0.0.1:1080'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))


def check_proxy_url(url: str) -> None:
    """Raise ``ValueError`` (with a message naming the masked URL) unless curl can use it.

    Accepted: ``scheme://[user:password@]host[:port]`` with a scheme in
    :data:`PROXY_SCHEMES`. ``socks5h`` lets the proxy resolve host names; plain ``socks5``
    resolves them locally, which may pick an address the proxy cannot reach.
    """
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ValueError(f"{mask_url(url)!r} is not a URL: {exc}") from None
    if parts.scheme not in PROXY_SCHEMES:
        raise ValueError(
            f"{mask_url(url)!r}: scheme must be one of {', '.join(PROXY_SCHEMES)}"
        )
    if not parts.hostname:
        raise ValueError(f"{mask_url(url)!r} names no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{mask_url(url)!r}: a proxy URL has no path, query or fragment")


def read_last_serial(headers: Mapping[str, str]) -> int | None:
    """The ``X-PyPI-Last-Serial`` of an answer, or None when missing or not a serial.

    Pass tornado's ``HTTPHeaders`` (case-insensitive). Callers treat None as stale, as
    bandersnatch does: an answer that cannot prove its age is not trusted.
    """
    value = headers.get("X-PyPI-Last-Serial", "").strip()
    if not (value.isascii() and value.isdigit()):
        return None
    return int(value)


def parse_retry_after(value: str, now: float) -> float | None:
    """Seconds to wait according to a ``Retry-After`` value (delta seconds or an HTTP date).

    None when the value is neither; a date in the past means 0.
    """
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT by definition
        return None
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    """How every outbound request behaves; built once from the configuration."""

    user_agent: str
    proxy: str | None
    connect_timeout: float
    stall_timeout: float
    attempts: int = 3
    backoff_base: float = 0.5
    backoff_max: float = 30.0

    def __post_init__(self) -> None:
        if self.proxy is not None:
            try:
                check_proxy_url(self.proxy)
            except ValueError as exc:
                raise ConfigError([ConfigProblem("upstream.proxy", str(exc))]) from None
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {self.attempts!r}")


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    """An answer with an expected status; ``url`` is the final URL after redirects."""

    url: str
    status: int
    headers: HTTPHeaders
    body: bytes


class _Failure(NamedTuple):
    error: UpstreamError
    is_transient: bool


class UpstreamClient:
    """Sends GET, HEAD and POST requests with retries; see the module docstring.

    ``fetch`` is :func:`fetch_with_curl` unless a test passes its own; ``sleep`` and
    ``clock`` are the back-off's notion of time.
    """

    def __init__(
        self,
        settings: UpstreamSettings,
        *,
        fetch: Fetch | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._fetch = fetch or fetch_with_curl
        self._sleep = sleep
        self._clock = clock

    async def get(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        ok_statuses: Collection[int] = (200,),
    ) -> UpstreamResponse:
        """GET ``url``, following redirects; statuses outside ``ok_statuses`` raise."""
        return await self._send(self._build_request("GET", url, headers), ok_statuses)

    async def head(
        self, url: str, *, ok_statuses: Collection[int] = (200, 404)
    ) -> UpstreamResponse:
        """HEAD ``url``, following redirects; a 404 is an answer ("not there"), not an error."""
        return await self._send(self._build_request("HEAD", url), ok_statuses)

    async def post(
        self, url: str, body: bytes, *, content_type: str, ok_statuses: Collection[int] = (200,)
    ) -> UpstreamResponse:
        """POST ``body``; redirects are not followed (curl would turn them into GETs)."""
        request = self._build_request("POST", url, {"Content-Type": content_type}, body)
        return await self._send(request, ok_statuses)

    def _build_request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> HTTPRequest:
        settings = self.settings
        return HTTPRequest(
            url,
            method=method,
            headers=HTTPHeaders(headers or {}),
            body=body,
            user_agent=settings.user_agent,
            connect_timeout=settings.connect_timeout,
            request_timeout=0,  # curl's total-time limit would kill large downloads
            follow_redirects=method != "POST",
            max_redirects=MAX_REDIRECTS,
            prepare_curl_callback=self._prepare_curl,
        )

    def _prepare_curl(self, curl: pycurl.Curl) -> None:
        """Options tornado has no argument for: stall detection and a hermetic proxy."""
        curl.setopt(pycurl.LOW_SPEED_LIMIT, STALL_BYTES_PER_SECOND)
        curl.setopt(pycurl.LOW_SPEED_TIME, max(1, math.ceil(self.settings.stall_timeout)))
        if self.settings.proxy is None:
            curl.setopt(pycurl.PROXY, "")  # "" overrides http_proxy/all_proxy from the env
        else:
            curl.setopt(pycurl.PROXY, self.settings.proxy)  # curl parses scheme and userinfo
            curl.setopt(pycurl.NOPROXY, "")  # "" overrides no_proxy from the environment

    async def _send(self, request: HTTPRequest, ok_statuses: Collection[int]) -> UpstreamResponse:
        """Fetch until an expected status, a final failure, or the last attempt."""
        attempts = self.settings.attempts
        attempt = 1
        while True:
            retry_after: float | None = None
            try:
                response = await self._fetch(request)
            except FETCH_ERRORS as exc:
                failure = self._map_fetch_error(exc, request)
                if not failure.is_transient or attempt == attempts:
                    raise failure.error from exc
                error: UpstreamError = failure.error
            else:
                if response.code in ok_statuses:
                    return UpstreamResponse(
                        response.effective_url, response.code, response.headers, response.body
                    )
                error = self._status_error(request, response.code)
                if not _is_retryable_status(response.code) or attempt == attempts:
                    raise error
                retry_after = parse_retry_after(
                    response.headers.get("Retry-After", ""), self._clock()
                )
            delay = self._backoff_delay(attempt, retry_after)
            logger.warning(
                "%s; attempt %d of %d, retrying in %.1f s", error, attempt, attempts, delay
            )
            await self._sleep(delay)
            attempt += 1

    def _backoff_delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential back-off with jitter, or the server's ``Retry-After``; both capped."""
        settings = self.settings
        if retry_after is not None:
            return min(retry_after, settings.backoff_max)
        delay = settings.backoff_base * 2.0 ** (attempt - 1)
        return min(settings.backoff_max, delay + random.uniform(0, settings.backoff_base))

    def _status_error(self, request: HTTPRequest, status: int) -> UpstreamStatusError:
        phrase = http.client.responses.get(status, "Unknown")
        return UpstreamStatusError(
            f"{_describe(request)}: upstream answered {status} {phrase}",
            mask_url(request.url),
            status,
        )

    def _map_fetch_error(self, exc: Exception, request: HTTPRequest) -> _Failure:
        """The one translation of what a fetch raises into pypimirror's errors."""
        if isinstance(exc, HTTPClientError) and exc.code != 599:
            # Only a fetch called with raise_error=True gets here; it is still an answer.
            return _Failure(self._status_error(request, exc.code), _is_retryable_status(exc.code))
        if isinstance(exc, CurlError):
            reason, is_transient = _CURL_ERRORS.get(exc.errno, ("transfer failed", False))
            detail = f"{reason} (curl error {exc.errno}: {exc.message})"
        elif isinstance(exc, pycurl.error):
            errno, message = exc.args if len(exc.args) == 2 else (0, str(exc))
            reason, is_transient = _CURL_ERRORS.get(errno, ("curl refused the request", False))
            detail = f"{reason} (curl error {errno}: {message})"
        elif isinstance(exc, HTTPClientError):
            detail, is_transient = f"no answer ({exc.message})", True
        else:
            detail, is_transient = f"no answer ({type(exc).__name__}: {exc})", True
        if self.settings.proxy is not None:
            detail += f" via proxy {mask_url(self.settings.proxy)}"
        message = f"{_describe(request)}: {detail}"
        return _Failure(UpstreamUnavailable(message, mask_url(request.url)), is_transient)


def _describe(request: HTTPRequest) -> str:
    return f"{request.method} {mask_url(request.url)}"


def _is_retryable_status(status: int) -> bool:
    """429 and 5xx are the upstream (or its CDN) saying "not now"; everything else is final."""
    return status == 429 or 500 <= status <= 598
