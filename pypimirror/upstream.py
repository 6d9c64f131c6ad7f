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
    "StreamReceiver",
    "DownloadResult",
    "Fetch",
    "UpstreamClient",
    "UpstreamResponse",
    "UpstreamSettings",
    "check_proxy_url",
    "configure_curl_client",
    "fetch_with_curl",
    "parse_retry_after",
    "read_last_serial",
]

import asyncio
import hashlib
import http.client
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple, Protocol
from urllib.parse import urlsplit

import pycurl
from tornado.curl_httpclient import CurlAsyncHTTPClient, CurlError
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse
from tornado.httputil import HTTPHeaders

from pypimirror.errors import (
    ConfigError,
    ConfigProblem,
    IntegrityError,
    PyPIMirrorError,
    StorageError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamUnavailable,
)
from pypimirror.httpdate import parse_http_date
from pypimirror.urlmask import mask_url

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
    when = parse_http_date(value, now=now)
    return None if when is None else max(0.0, when - now)


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


@dataclass(frozen=True, slots=True)
class DownloadResult:
    """A body stored whole: its length, its sha256 and the upstream's ``Last-Modified``."""

    size: int
    sha256: str
    last_modified: float | None


class StreamReceiver(Protocol):
    """Takes an answer piece by piece, on the event loop, as :meth:`UpstreamClient.stream` gets it."""

    def prepare_curl(self, curl: pycurl.Curl) -> None:
        """Called with the transfer's curl handle before it starts (after our own options)."""

    def on_header_line(self, line: str) -> None:
        """Each raw header line, status lines included, of every answer (redirects too)."""

    def on_chunk(self, chunk: bytes) -> None:
        """Each piece of the final answer's body, exactly as the upstream sent it."""


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

    async def stream(
        self,
        method: str,
        url: str,
        receiver: StreamReceiver,
        *,
        headers: Mapping[str, str] | None = None,
        user_agent: str | None = None,
    ) -> UpstreamResponse:
        """Send one GET or HEAD whose answer, whatever its status, goes to ``receiver`` as it arrives.

        One attempt only, since part of the answer may already have been passed on. Redirects
        are followed; the body is never decoded (no ``Accept-Encoding`` is sent); a
        ``user_agent`` replaces the configured one. Raises
        :class:`~pypimirror.errors.UpstreamUnavailable` unless the whole answer arrived.
        Returns the final answer's status and headers (its body went to ``receiver``).
        """
        request = self._build_request(method, url, headers)
        request.user_agent = user_agent or self.settings.user_agent
        request.decompress_response = False
        request.header_callback = receiver.on_header_line
        request.streaming_callback = receiver.on_chunk

        def prepare_stream(curl: pycurl.Curl) -> None:
            self._prepare_curl(curl)
            receiver.prepare_curl(curl)

        request.prepare_curl_callback = prepare_stream
        try:
            response = await self._fetch(request)
        except FETCH_ERRORS as exc:
            raise self._map_fetch_error(exc, request).error from exc
        return UpstreamResponse(response.effective_url, response.code, response.headers, b"")

    async def download_to(
        self,
        url: str,
        path: Path,
        *,
        size: int | None = None,
        sha256: str | None = None,
        cancel: asyncio.Event | None = None,
    ) -> DownloadResult:
        """Stream the body of ``url`` into ``path`` (created, or truncated per attempt).

        Nothing is buffered in memory: each chunk is hashed and written as it arrives (chunks
        are at most 1 MiB, so the write stays short on the event loop). Only a stall ends a
        transfer, never its length. A body that does not end at its ``Content-Length`` is a
        transient failure and retried like a refused connection or a 5xx. A body whose length
        differs from ``size`` or whose digest differs from ``sha256`` raises
        :class:`~pypimirror.errors.IntegrityError` at once, without another attempt: the bytes
        are what the upstream serves, and only a later run may see them fixed. Writing stops
        at ``size`` bytes, so a longer body never takes more disk than promised. Setting
        ``cancel`` aborts the transfer (an ``UpstreamUnavailable`` "cancelled"). On any
        failure ``path`` is removed; on success the caller owns it (fsync, rename).
        """
        attempts = self.settings.attempts
        try:
            for attempt in range(1, attempts + 1):
                try:
                    return await self._download_once(url, path, size, sha256, cancel)
                except _RetryableDownload as retry:
                    if attempt == attempts:
                        raise retry.error from retry.__cause__
                    delay = self._backoff_delay(attempt, retry.retry_after)
                    logger.warning(
                        "%s; attempt %d of %d, retrying in %.1f s", retry.error, attempt, attempts, delay
                    )
                    await self._sleep(delay)
            raise AssertionError("unreachable: the last attempt returns or raises")
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    async def _download_once(
        self,
        url: str,
        path: Path,
        size: int | None,
        sha256: str | None,
        cancel: asyncio.Event | None,
    ) -> DownloadResult:
        """One attempt; raises :class:`_RetryableDownload` for what another attempt may fix."""
        if cancel is not None and cancel.is_set():
            raise UpstreamUnavailable(f"GET {mask_url(url)}: download cancelled", mask_url(url))
        with open(path, "wb") as handle:
            sink = _DownloadSink(handle, size, cancel)
            request = self._build_request("GET", url)
            request.streaming_callback = sink.write
            request.decompress_response = False  # the bytes as stored upstream, never re-encoded
            request.prepare_curl_callback = sink.prepare_curl(self._prepare_curl)
            try:
                response = await self._fetch(request)
            except FETCH_ERRORS as exc:
                if sink.failure is not None:
                    raise sink.failure from exc
                failure = self._map_fetch_error(exc, request)
                if failure.is_transient:
                    raise _RetryableDownload(failure.error) from exc
                raise failure.error from exc
        if response.code != 200:
            error = self._status_error(request, response.code)
            if not _is_retryable_status(response.code):
                raise error
            retry_after = parse_retry_after(response.headers.get("Retry-After", ""), self._clock())
            raise _RetryableDownload(error, retry_after)
        if sink.failure is not None:
            raise sink.failure
        declared = response.headers.get("Content-Length", "").strip()
        if declared.isdigit() and int(declared) != sink.received:
            message = f"{_describe(request)}: body ended after {sink.received} of {declared} bytes"
            raise _RetryableDownload(UpstreamUnavailable(message, mask_url(url)))
        digest = sink.hasher.hexdigest()
        if size is not None and sink.received != size:
            raise IntegrityError(str(path), f"{size} bytes", f"{sink.received} bytes")
        if sha256 is not None and digest != sha256:
            raise IntegrityError(str(path), f"sha256 {sha256}", f"sha256 {digest}")
        return DownloadResult(sink.received, digest, _last_modified(response.headers))

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


class _RetryableDownload(Exception):
    """An attempt failed in a way another attempt may not (carries the error to report)."""

    def __init__(self, error: UpstreamError, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


class _DownloadSink:
    """Receives a download's chunks on the event loop: hashes them and writes them to a file.

    It never raises into tornado (which would only log it and go on): a failure is kept in
    ``failure`` and the transfer is aborted through curl's progress callback instead.
    """

    def __init__(self, handle: BinaryIO, limit: int | None, cancel: asyncio.Event | None) -> None:
        self.handle = handle
        self.limit = limit
        self.cancel = cancel
        self.hasher = hashlib.sha256()
        self.received = 0
        self.failure: PyPIMirrorError | None = None

    def write(self, chunk: bytes) -> None:
        if self.failure is not None:
            return
        self.received += len(chunk)
        if self.limit is not None and self.received > self.limit:
            self.failure = IntegrityError(
                self.handle.name, f"{self.limit} bytes", f"more than {self.limit} bytes"
            )
            return
        self.hasher.update(chunk)
        try:
            self.handle.write(chunk)
        except OSError as exc:
            self.failure = StorageError(f"cannot write {self.handle.name!r}: {exc.strerror}")

    def prepare_curl(self, prepare: Callable[[pycurl.Curl], None]) -> Callable[[pycurl.Curl], None]:
        """``prepare`` plus a progress callback that aborts on a failure or on ``cancel``."""

        def prepare_download(curl: pycurl.Curl) -> None:
            prepare(curl)
            curl.setopt(pycurl.NOPROGRESS, 0)
            curl.setopt(pycurl.XFERINFOFUNCTION, self._progress)

        return prepare_download

    def _progress(self, _down_total: int, _down_now: int, _up_total: int, _up_now: int) -> int:
        if self.cancel is not None and self.cancel.is_set() and self.failure is None:
            self.failure = UpstreamUnavailable(f"download of {self.handle.name!r} cancelled")
        return 1 if self.failure is not None else 0


def _last_modified(headers: HTTPHeaders) -> float | None:
    """Unix time of ``Last-Modified``, or None when absent or not an HTTP date."""
    when = parse_http_date(headers.get("Last-Modified"))
    return None if when is None else float(when)


def _describe(request: HTTPRequest) -> str:
    return f"{request.method} {mask_url(request.url)}"


def _is_retryable_status(status: int) -> bool:
    """429 and 5xx are the upstream (or its CDN) saying "not now"; everything else is final."""
    return status == 429 or 500 <= status <= 598
