"""Relay an upstream answer to a client at the client's pace, for proxy mode.

A relayed file is never held whole in memory, however large it is and however slowly the client
reads: body pieces wait in a queue that the client's writes drain, and the upstream transfer is
paused while more than ``high_water`` bytes wait and resumed below ``low_water`` (curl's pause/resume);
what was already on its way when the pause took effect (tornado's buffer of up to 1 MiB and
curl's current read) still arrives, so the queue peaks a little above ``high_water``. A relay
started while the server's buffer budget is spent gets the small marks instead.
The answer's head (status and headers) is known before its body, so the client can be told the
status while the body streams. Which headers cross the proxy is decided here, by two allowlists:
a header we do not name (``Set-Cookie``, ``Strict-Transport-Security``, ``Alt-Svc``, hop-by-hop
headers, a client's credentials or ``X-Forwarded-For``) never reaches the other side.
A body without ``Content-Length`` ends when the upstream closes, so a cut-off transfer looks
complete; when the caller knows the file's length (``expected_size``, from a stored page) such a
``200``'s body is counted, and one that runs past it or ends short of it fails as a break would.
"""

from __future__ import annotations

__all__ = [
    "HIGH_WATER",
    "LOW_WATER",
    "SMALL_HIGH_WATER",
    "SMALL_LOW_WATER",
    "RELAYED_REQUEST_HEADERS",
    "RELAYED_RESPONSE_HEADERS",
    "Relay",
    "RelayHead",
    "open_relay",
    "relay_footprint",
    "relayed_request_headers",
    "relayed_response_headers",
]

import asyncio
import logging
import re
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import pycurl
from tornado.httputil import HTTPHeaders, HTTPInputError

from pypimirror.errors import UpstreamError
from pypimirror.upstream import UpstreamClient, UpstreamResponse, mask_url

logger = logging.getLogger(__name__)

#: Queued body bytes above which the upstream transfer is paused, and below which it resumes.
HIGH_WATER = 4 * 1024 * 1024
LOW_WATER = 1024 * 1024
#: The marks of a relay started while the buffer budget is spent (:mod:`pypimirror.buffers`).
SMALL_HIGH_WATER = 256 * 1024
SMALL_LOW_WATER = 64 * 1024
# The most bytes handed to the client in one write (and one flush); less for a relay whose
# high water is lower, so that a batch waiting for a slow client is not the larger part.
_BATCH_BYTES = 1024 * 1024
# What tornado's curl client holds before it pauses a transfer itself, and then hands over at
# once: it may arrive after our pause took effect.
_DELIVERY_BYTES = 1024 * 1024
# Bytes curl reads from the socket at a time: fewer, larger pieces cost less Python per MB.
_CURL_BUFFER_BYTES = 256 * 1024
# CURLOPT_SUPPRESS_CONNECT_HEADERS (pycurl has no name for it): an HTTP proxy's answer to
# CONNECT must not look like the upstream's head.
_CURLOPT_SUPPRESS_CONNECT_HEADERS = 265

#: Request headers passed upstream: ranges and conditions, so the upstream answers 206/304/412.
#: Everything else stays here: hop-by-hop headers, ``Authorization``, ``Cookie``,
#: ``X-Forwarded-For``, and ``Accept-Encoding`` (the body stays identity, so ``Content-Length``
#: and ``Range`` keep meaning bytes of the file).
RELAYED_REQUEST_HEADERS = frozenset(
    {"range", "if-range", "if-match", "if-none-match", "if-modified-since", "if-unmodified-since"}
)

#: Response headers passed to the client: what describes the bytes, their validators and caching.
RELAYED_RESPONSE_HEADERS = frozenset(
    {
        "accept-ranges",
        "age",
        "cache-control",
        "content-disposition",
        "content-encoding",
        "content-length",
        "content-range",
        "content-type",
        "etag",
        "expires",
        "last-modified",
        "retry-after",
        "vary",
    }
)

_STATUS_LINE_RE = re.compile(r"HTTP/[0-9.]+ +([0-9]{3})\b")


def relay_footprint(high_water: int) -> int:
    """The most body bytes a relay with ``high_water`` holds at once: its queue up to the mark,
    what was on its way when the pause took effect, and the batch being written to the client
    (measured: ~6 MiB with the default marks, ~1.3 MiB with the small ones)."""
    return high_water + _DELIVERY_BYTES + min(_BATCH_BYTES, high_water)


def relayed_request_headers(headers: HTTPHeaders) -> dict[str, str]:
    """The client's headers that go upstream (:data:`RELAYED_REQUEST_HEADERS`), repeats joined."""
    return {name: ", ".join(headers.get_list(name)) for name in headers if name.lower() in RELAYED_REQUEST_HEADERS}


def relayed_response_headers(headers: HTTPHeaders) -> list[tuple[str, str]]:
    """The upstream's headers that go to the client (:data:`RELAYED_RESPONSE_HEADERS`), in order."""
    return [(name, value) for name, value in headers.get_all() if name.lower() in RELAYED_RESPONSE_HEADERS]


@dataclass(frozen=True, slots=True)
class RelayHead:
    """The upstream's final answer before its body: status and headers (redirects already followed)."""

    status: int
    headers: HTTPHeaders


class Relay:
    """One upstream answer in flight: its head, then its body at the reader's pace.

    Built by :func:`open_relay`. All of it runs on the event loop: curl's pieces arrive through
    tornado's callbacks, and :meth:`body` is read by one coroutine. The curl handle is touched
    only while the transfer runs (tornado resets and reuses it afterwards).
    """

    def __init__(
        self, url: str, *, high_water: int = HIGH_WATER, low_water: int = LOW_WATER, expected_size: int | None = None
    ) -> None:
        self.url = url
        self._expected_size = expected_size
        self._high_water = high_water
        self._low_water = low_water
        self._batch_bytes = min(_BATCH_BYTES, high_water)
        self._loop = asyncio.get_running_loop()
        self._head: asyncio.Future[RelayHead] = self._loop.create_future()
        self._status: int | None = None
        self._headers = HTTPHeaders()
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._wake = asyncio.Event()
        self._curl: pycurl.Curl | None = None
        self._paused = False
        self._pause_scheduled = False
        self._aborted = False
        self._stopped = False  # the transfer was stopped here: the body is not the file
        self._fetch: asyncio.Future[UpstreamResponse] | None = None

    @property
    def queued_bytes(self) -> int:
        """Body bytes received and not yet taken by :meth:`body`."""
        return self._queued

    async def head(self) -> RelayHead:
        """The final answer's status and headers.

        Raises :class:`~pypimirror.errors.UpstreamError` if none arrived.
        """
        return await asyncio.shield(self._head)

    async def body(self) -> AsyncIterator[bytes]:
        """The body in batches of up to 1 MiB, as fast as the caller takes them.

        Raises :class:`~pypimirror.errors.UpstreamError` after the last piece received if the
        transfer failed before the body's end, and instead of the piece that runs past
        ``expected_size`` or after the last if the body ended short of it (a ``200`` without
        ``Content-Length`` only: with one, curl itself tells a short body).
        """
        fetch = self._started()
        remaining = self._unframed_length()
        while True:
            if self._queue:
                batch = self._take_batch()
                if remaining is not None:
                    remaining -= len(batch)
                    if remaining < 0:
                        await self._stop()
                        raise self._length_error("runs past")
                yield batch
                if self._paused and self._queued < self._low_water:
                    self._set_paused(False)
            elif fetch.done():
                break
            else:
                self._wake.clear()
                await self._wake.wait()
        fetch.result()
        if remaining:
            raise self._length_error("ends short of")

    @property
    def is_aborted(self) -> bool:
        """Whether :meth:`cancel` or :meth:`abort` was called."""
        return self._aborted

    def cancel(self) -> None:
        """Ask the transfer to stop (the client left); what arrives from now on is dropped.

        curl has no cancel call: its progress callback, which runs at least once a second,
        answers "abort" from now on, and a paused transfer is resumed so that it runs.
        """
        if self._aborted:
            return
        self._aborted = True
        self._queue.clear()
        self._queued = 0
        self._set_paused(False)

    async def abort(self) -> None:
        """:meth:`cancel`, then wait until curl has let go of the transfer."""
        fetch = self._started()
        self.cancel()
        await asyncio.wait([fetch])

    # -- StreamReceiver: called on the event loop by UpstreamClient.stream -------------------

    def prepare_curl(self, curl: pycurl.Curl) -> None:
        self._curl = curl
        curl.setopt(pycurl.BUFFERSIZE, _CURL_BUFFER_BYTES)
        curl.setopt(_CURLOPT_SUPPRESS_CONNECT_HEADERS, 1)
        curl.setopt(pycurl.NOPROGRESS, 0)
        curl.setopt(pycurl.XFERINFOFUNCTION, self._progress)

    def on_header_line(self, line: str) -> None:
        if self._head.done():
            return  # trailers, or lines still queued when the transfer failed
        line = line.rstrip("\r\n")
        status = _STATUS_LINE_RE.match(line)
        if status is not None:
            self._status = int(status[1])
            self._headers = HTTPHeaders()
        elif line:
            try:
                self._headers.parse_line(line)
            except HTTPInputError:
                logger.debug("dropped a malformed header line from %s: %r", mask_url(self.url), line)
        elif self._status is not None and not self._is_interim(self._status):
            self._head.set_result(RelayHead(self._status, self._headers))

    def on_chunk(self, chunk: bytes) -> None:
        # Pieces may arrive before the head's last lines: tornado hands over the rest of a body
        # at once when a transfer ends, while header lines wait in the loop's queue. Before the
        # head is known the transfer is never paused, so that it can always end.
        if self._aborted:
            return
        self._queue.append(chunk)
        self._queued += len(chunk)
        self._wake.set()
        if self._queued > self._high_water and self._head.done() and not self._pause_scheduled:
            # Later, not now: tornado may resume its own pause of this transfer right after
            # this callback, which would undo ours.
            self._pause_scheduled = True
            self._loop.call_soon(self._pause_if_full)

    # -- internals ----------------------------------------------------------------------------

    def _start(self, fetch: asyncio.Future[UpstreamResponse]) -> None:
        self._fetch = fetch
        fetch.add_done_callback(self._on_fetch_done)

    def _started(self) -> asyncio.Future[UpstreamResponse]:
        if self._fetch is None:
            raise RuntimeError("a Relay is started by open_relay()")
        return self._fetch

    def _is_interim(self, status: int) -> bool:
        """A 1xx, or a redirect curl is about to follow: not the answer we relay."""
        return status < 200 or (300 <= status < 400 and status != 304 and "Location" in self._headers)

    def _take_batch(self) -> bytes:
        pieces = [self._queue.popleft()]
        size = len(pieces[0])
        while self._queue and size + len(self._queue[0]) <= self._batch_bytes:
            piece = self._queue.popleft()
            pieces.append(piece)
            size += len(piece)
        self._queued -= size
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _pause_if_full(self) -> None:
        self._pause_scheduled = False
        if self._queued > self._high_water and not self._aborted:
            self._set_paused(True)

    def _set_paused(self, paused: bool) -> None:
        curl = self._curl
        if curl is None:
            return
        self._paused = paused
        try:
            curl.pause(pycurl.PAUSE_RECV if paused else pycurl.PAUSE_CONT)
        except pycurl.error:
            pass  # the transfer is already over; the fetch reports how it ended

    def _progress(self, _down_total: int, _down_now: int, _up_total: int, _up_now: int) -> int:
        return 1 if self._aborted or self._stopped else 0

    def _unframed_length(self) -> int | None:
        """The length to count the body against: ``expected_size`` for a 200 the upstream sent
        without ``Content-Length`` (and unencoded), None when there is nothing to check."""
        if self._expected_size is None or not self._head.done() or self._head.exception() is not None:
            return None
        head = self._head.result()
        if head.status != 200 or "Content-Length" in head.headers or "Content-Encoding" in head.headers:
            return None
        return self._expected_size

    async def _stop(self) -> None:
        """End the transfer (its body is not the file) and wait until curl has let go of it."""
        self._stopped = True
        self._queue.clear()
        self._queued = 0
        self._set_paused(False)
        await asyncio.wait([self._started()])

    def _length_error(self, how: str) -> UpstreamError:
        return UpstreamError(
            f"GET {mask_url(self.url)}: the body without Content-Length {how} the {self._expected_size} bytes "
            "its stored page lists", self.url,
        )

    def _on_fetch_done(self, fetch: asyncio.Future[UpstreamResponse]) -> None:
        self._curl = None  # tornado resets the handle and reuses it for another transfer
        self._paused = False
        self._wake.set()
        if self._head.done():
            if not fetch.cancelled():
                fetch.exception()  # retrieved here; body() or abort() decide what it means
            return
        if fetch.cancelled():
            self._head.cancel()
        elif (error := fetch.exception()) is not None:
            self._head.set_exception(error)
        else:
            response = fetch.result()
            self._head.set_result(RelayHead(response.status, response.headers))


def open_relay(
    client: UpstreamClient,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    user_agent: str | None = None,
    high_water: int = HIGH_WATER,
    low_water: int = LOW_WATER,
    expected_size: int | None = None,
) -> Relay:
    """Start relaying ``method`` (GET or HEAD) of ``url``; await :meth:`Relay.head`, then read
    :meth:`Relay.body` (or :meth:`Relay.abort` it). Call on the event loop."""
    if method not in ("GET", "HEAD"):
        raise ValueError(f"only GET and HEAD are relayed, not {method!r}")
    relay = Relay(url, high_water=high_water, low_water=low_water, expected_size=expected_size)
    relay._start(asyncio.ensure_future(client.stream(method, url, relay, headers=headers, user_agent=user_agent)))
    logger.debug("relaying %s %s", method, mask_url(url))
    return relay
