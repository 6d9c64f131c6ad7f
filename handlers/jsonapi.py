"""The stored JSON-API documents: ``{prefix}/pypi/{project}/json`` and ``{prefix}/{project}/json``.

The document the last sync wrote for the project, as ``application/json`` with
``X-PyPI-Last-Serial`` (its ``last_serial``: a downstream bandersnatch treats a missing header as
a stale page), validators, 304 and gzip. A name that is not normalized is redirected (301) to
the same form of URL with the normalized name; a project we have no document for is a 404 (the
upstream is never asked).
"""

from __future__ import annotations

__all__ = ["JsonApiHandler"]

import logging

from packaging.utils import InvalidName, canonicalize_name
from tornado.web import HTTPError

from pypimirror.pagecache import PageCache, read_json_api_serial

from .base import RequestContext
from .cached import CachedPageHandler, PageFiles

logger = logging.getLogger(__name__)

_CONTENT_TYPE = "application/json"


class JsonApiHandler(CachedPageHandler):
    """One project's JSON-API document; ``canonical_url`` is the route's URL with a ``{name}`` field."""

    def initialize(
        self, *, context: RequestContext, pages: PageCache, files: PageFiles, canonical_url: str
    ) -> None:
        self.init_pages(context, pages, files)
        self.canonical_url = canonical_url

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Vary", "Accept-Encoding")

    async def get(self, name: str) -> None:
        await self._serve(name, include_body=True)

    async def head(self, name: str) -> None:
        await self._serve(name, include_body=False)

    async def _serve(self, name: str, *, include_body: bool) -> None:
        try:
            normalized = canonicalize_name(name, validate=True)
        except InvalidName:
            raise HTTPError(404) from None
        if normalized != name:
            self.redirect_to(self.canonical_url.format(name=normalized), 301)
            return
        page = await self.pages.get(self.files.json_document(normalized), read_json_api_serial)
        if page is None:
            raise HTTPError(404)
        rep = await self.encode(page)
        await self.send_page(rep, content_type=_CONTENT_TYPE, serial=page.last_serial, include_body=include_body)
