"""The OSV API subset: ``POST {prefix}/osv/v1/query``, ``POST {prefix}/osv/v1/querybatch`` and
``GET {prefix}/osv/v1/vulns/{id}``, answered from the stored advisories (:mod:`pypimirror.osvapi`).

Answers are ``application/json`` and never cached by clients (the advisories change with each
sync). A malformed request is a 400 with OSV's error shape (``{"code": 3, "message": ...}``),
an unknown ID a 404 (``{"code": 5, ...}``), and a database that cannot be read a 503.
"""

from __future__ import annotations

__all__ = ["OsvQueryBatchHandler", "OsvQueryHandler", "OsvVulnHandler"]

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pypimirror.errors import DatabaseError
from pypimirror.osvapi import AdvisoryLookup, OsvRequestError, dump, parse_batch, parse_query

from .base import BaseHandler, RequestContext

logger = logging.getLogger(__name__)

#: A request body larger than this is refused: a full batch of queries is far smaller.
MAX_REQUEST_BYTES = 1024**2

# OSV's error codes (gRPC's): the request was bad; the record does not exist; the service is down.
_INVALID_ARGUMENT = 3
_NOT_FOUND = 5
_UNAVAILABLE = 14


class _OsvHandler(BaseHandler):
    def initialize(self, *, context: RequestContext, advisories: AdvisoryLookup) -> None:
        self.init_base(context)
        self.advisories = advisories

    async def answer(self, compute: Callable[[], Awaitable[Mapping[str, Any] | None]]) -> None:
        """Send what ``compute`` returns (None: 404), or the error it ran into, in OSV's shapes."""
        try:
            body = await compute()
        except OsvRequestError as exc:
            await self._send(400, {"code": _INVALID_ARGUMENT, "message": str(exc)})
            return
        except DatabaseError as exc:
            logger.warning("OSV API: %s", exc)
            await self._send(503, {"code": _UNAVAILABLE, "message": "the advisory database cannot be read"})
            return
        if body is None:
            await self._send(404, {"code": _NOT_FOUND, "message": "Bug not found."})
            return
        await self._send(200, body)

    def request_json(self) -> object:
        """The request body as JSON; a body too large or not JSON is the client's error."""
        body = self.request.body
        if len(body) > MAX_REQUEST_BYTES:
            raise OsvRequestError(f"the request body is larger than {MAX_REQUEST_BYTES} bytes")
        try:
            return json.loads(body)
        except ValueError:
            raise OsvRequestError("the request body is not JSON") from None

    async def _send(self, status: int, body: Mapping[str, Any]) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        await self.send_body(dump(body))


class OsvQueryHandler(_OsvHandler):
    """``POST .../v1/query``: the full records that apply to one package (and version)."""

    async def post(self) -> None:
        await self.answer(lambda: self.advisories.query(parse_query(self.request_json())))


class OsvQueryBatchHandler(_OsvHandler):
    """``POST .../v1/querybatch``: per query, the IDs and modified times that apply."""

    async def post(self) -> None:
        await self.answer(lambda: self.advisories.query_batch(parse_batch(self.request_json())))


class OsvVulnHandler(_OsvHandler):
    """``GET .../v1/vulns/{id}``: one stored record."""

    async def get(self, advisory_id: str) -> None:
        await self.answer(lambda: self.advisories.record(advisory_id))
