"""The info page at ``{prefix}/``: what a person opening the mirror in a browser should learn.

Rendering is :func:`pypimirror.infopage.render_info_page`; this handler gathers who asks
(address, mode, the URL they reached us at) and the mirror's status. Status read from the
database is at most a few seconds old; a database that cannot be read makes that part of the
page say so, never the page fail.
"""

from __future__ import annotations

__all__ = ["InfoHandler"]

import logging
import socket
import time

from tornado.http1connection import HTTP1Connection

from pypimirror.clientip import IPModeMatcher, resolve_client_ip
from pypimirror.errors import DatabaseError
from pypimirror.infopage import InfoPage, public_origin, render_info_page
from pypimirror.status import MirrorStatus, StatusReader

from .base import BaseHandler, RequestContext

logger = logging.getLogger(__name__)


class InfoHandler(BaseHandler):
    """``GET``/``HEAD {prefix}/``; ``packages_url`` and ``redirect_url`` say where misses go per mode."""

    def initialize(
        self,
        *,
        context: RequestContext,
        prefix: str,
        status: StatusReader,
        modes: IPModeMatcher,
        packages_url: str,
        redirect_url: str,
        views: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.init_base(context)
        self.views = views
        self.prefix = prefix
        self.status = status
        self.modes = modes
        self.packages_url = packages_url
        self.redirect_url = redirect_url

    async def get(self) -> None:
        status, error = await self._read_status()
        scheme, host = self._origin()
        mode = self.modes.mode_for(self.client.ip)
        page = InfoPage(
            index_url=f"{scheme}://{host}{self.prefix}/simple/",
            host=host,
            scheme=scheme,
            prefix=self.prefix,
            client_ip=self.client.ip_text,
            mode=mode,
            miss_url=self.packages_url if mode == "proxy" else self.redirect_url,
            now=time.time(),
            status=status,
            status_error=error,
            views=self.views,
        )
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")  # it shows the client's own address and mode
        await self.send_body(render_info_page(page))

    async def head(self) -> None:
        await self.get()

    async def _read_status(self) -> tuple[MirrorStatus | None, str | None]:
        try:
            return await self.status.snapshot(), None
        except DatabaseError as exc:
            logger.warning("info page without status: %s", exc)
            return None, "the database cannot be read"

    def _origin(self) -> tuple[str, str]:
        headers = self.request.headers
        peer = resolve_client_ip(self.request.remote_ip, None, None, ())
        trusted = peer is not None and any(
            peer.version == network.version and peer in network for network in self._context.trusted_proxies
        )
        return public_origin(
            tls=self.request.protocol == "https",
            host=headers.get("Host"),
            forwarded_host=headers.get("X-Forwarded-Host"),
            forwarded_proto=headers.get("X-Forwarded-Proto"),
            from_trusted_proxy=trusted,
            own_address=self._own_address(),
        )

    def _own_address(self) -> str:
        """``ip:port`` of the socket the request came in on (``[v6]:port`` for IPv6)."""
        connection = self.request.connection
        if isinstance(connection, HTTP1Connection) and connection.stream.socket is not None:
            address = connection.stream.socket.getsockname()
            if connection.stream.socket.family == socket.AF_INET6:
                return f"[{address[0]}]:{address[1]}"
            return f"{address[0]}:{address[1]}"
        return "localhost"
