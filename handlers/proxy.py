"""Proxy mode: answer a request with the upstream's answer, streamed at the client's pace.

:class:`ProxyingHandler` is the base of a handler that may relay (today
:class:`~pypimirror.handlers.files.PackageFileHandler`, for files we do not hold). It promises:

* the same method upstream (GET or HEAD), with the client's ``Range`` and ``If-*`` headers and
  its ``User-Agent`` (so the upstream's download statistics see the installer, as after a 302);
  nothing else of the client's (:data:`~pypimirror.relay.RELAYED_REQUEST_HEADERS`);
* the upstream's status passed through (200, 206, 304, 404, 5xx ...) with the headers that
  describe the bytes (:data:`~pypimirror.relay.RELAYED_RESPONSE_HEADERS`); redirects are
  followed here, never shown to the client;
* no answer from the upstream → ``502``; a body that breaks off → the client's connection is
  closed, so it sees an incomplete response, never a short ``200``; so is a ``200`` without
  ``Content-Length`` (re-framed as chunked) whose length is not what the stored page lists;
* a client that leaves, or takes nothing for ``timeouts.write``, ends the upstream transfer;
* the body waiting for the client counts against the process's buffer budget
  (:mod:`pypimirror.buffers`): a relay queues up to 4 MiB while the budget has room for
  that, else 256 KiB;
* each upstream failure is logged and counted in ``/metrics`` (``pypimirror_upstream_errors``,
  reason ``proxy_unanswered`` or ``proxy_body_broken``);
* the access log says ``proxied`` for every answer proxy mode gave, its 502s included.
"""

from __future__ import annotations

__all__ = ["ProxyingHandler"]

import logging

from tornado.web import HTTPError

from pypimirror.errors import UpstreamError
from pypimirror.metrics import Metrics
from pypimirror.relay import (
    HIGH_WATER,
    LOW_WATER,
    SMALL_HIGH_WATER,
    SMALL_LOW_WATER,
    Relay,
    RelayHead,
    open_relay,
    relay_footprint,
    relayed_request_headers,
    relayed_response_headers,
)
from pypimirror.upstream import UpstreamClient
from pypimirror.urlmask import mask_url

from .base import BaseHandler, ClientGone

logger = logging.getLogger(__name__)


class ProxyingHandler(BaseHandler):
    """A handler that can answer with the upstream's answer (see the module docstring)."""

    _relay: Relay | None = None
    metrics: Metrics  # set by the concrete handler's initialize

    async def relay_from_upstream(self, upstream: UpstreamClient, url: str, *, expected_size: int | None = None) -> None:
        """Answer this GET or HEAD with the upstream's answer for ``url``.

        ``expected_size`` is the length the whole body must have (known from a stored page): a
        200 without ``Content-Length`` that ends short of it or runs past it broke off.
        """
        full = relay_footprint(HIGH_WATER)
        taken = self.buffers.take(full, relay_footprint(SMALL_HIGH_WATER))
        try:
            await self._relay_within(HIGH_WATER if taken == full else SMALL_HIGH_WATER, upstream, url, expected_size)
        finally:
            self.buffers.give_back(taken)

    async def _relay_within(
        self, high_water: int, upstream: UpstreamClient, url: str, expected_size: int | None
    ) -> None:
        self.proxied = True
        request = self.request
        relay = self._relay = open_relay(
            upstream,
            request.method or "GET",
            url,
            headers=relayed_request_headers(request.headers),
            user_agent=request.headers.get("User-Agent"),
            high_water=high_water,
            low_water=LOW_WATER if high_water == HIGH_WATER else SMALL_LOW_WATER,
            expected_size=expected_size,
        )
        try:
            head = await relay.head()
        except UpstreamError as exc:
            if relay.is_aborted:
                return  # the client left first; there is no one to answer
            logger.warning("proxying %s %s failed: %s", request.method, mask_url(url), exc)
            self.metrics.observe_upstream_error("proxy_unanswered")
            raise HTTPError(502) from None
        self._send_head(head)
        try:
            async for batch in relay.body():
                self.write(batch)
                await self.flush_or_abort()
        except ClientGone:
            await relay.abort()
            return
        except UpstreamError as exc:
            if relay.is_aborted:
                return
            logger.warning("proxying %s %s broke off: %s; closing the client's connection", request.method,
                           mask_url(url), exc)
            self.metrics.observe_upstream_error("proxy_body_broken")
            self.close_connection()
            return
        self.finish()

    def on_connection_close(self) -> None:
        """The client left while we waited for the upstream: stop the transfer."""
        super().on_connection_close()
        if self._relay is not None:
            self._relay.cancel()

    def _send_head(self, head: RelayHead) -> None:
        self.set_status(head.status)
        self.clear_header("Content-Type")  # tornado's default; only the upstream's may apply
        for name, value in relayed_response_headers(head.headers):
            self.add_header(name, value)
