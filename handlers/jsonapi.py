"""The stored JSON-API documents: ``{prefix}/pypi/{project}/json`` and ``{prefix}/{project}/json``.

The document the last sync wrote for the project, as ``application/json`` with
``X-PyPI-Last-Serial`` (its ``last_serial``: a downstream bandersnatch treats a missing header as
a stale page), validators, 304 and gzip. A name that is not normalized is redirected (301) to
the same form of URL with the normalized name; a project we have no document for is a 404 (the
upstream is never asked). With the advisory policy on, the document of a project an advisory
names carries its yanks.
"""

from __future__ import annotations

__all__ = ["JsonApiHandler"]

import logging
from collections.abc import Awaitable

from packaging.utils import NormalizedName

from pypimirror.advisorypages import JSON_API, AdvisoryPages
from pypimirror.pagecache import PageCache, read_json_api_serial

from .base import RequestContext
from .cached import CachedPageHandler, PageFiles, normalized_name

logger = logging.getLogger(__name__)

_CONTENT_TYPE = "application/json"


class JsonApiHandler(CachedPageHandler):
    """One project's JSON-API document; ``canonical_url`` is the route's URL with a ``{name}`` field."""

    def initialize(
        self,
        *,
        context: RequestContext,
        pages: PageCache,
        files: PageFiles,
        canonical_url: str,
        advisories: AdvisoryPages | None = None,
    ) -> None:
        self.init_pages(context, pages, files)
        self.canonical_url = canonical_url
        self.advisories = advisories

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Vary", "Accept-Encoding")

    def get(self, name: str) -> Awaitable[None] | None:
        return self._serve(name, include_body=True)

    def head(self, name: str) -> Awaitable[None] | None:
        return self._serve(name, include_body=False)

    def _serve(self, name: str, *, include_body: bool) -> Awaitable[None] | None:
        """A document memory holds is answered at once (no coroutine); an awaitable means more to do."""
        normalized = normalized_name(name)
        if normalized != name:
            self.redirect_to(self.canonical_url.format(name=normalized), 301)
            return None
        if self.advisories is not None and self.advisories.affects(normalized):
            return self._send_flagged(self.advisories, normalized, include_body=include_body)
        return self.send_stored_page(
            self.files.json_document(normalized), read_json_api_serial,
            content_type=_CONTENT_TYPE, include_body=include_body,
        )

    def _send_flagged(
        self, advisories: AdvisoryPages, name: NormalizedName, *, include_body: bool
    ) -> Awaitable[None] | None:
        """The document with the advisory policy's yanks (:mod:`pypimirror.advisorypages`)."""
        return self.send_derived_page(
            self.files.json_document(name),
            read_json_api_serial,
            lambda source: advisories.flagged_page_now(source, name, JSON_API),
            lambda source: advisories.flagged_page(source, name, JSON_API),
            content_type=_CONTENT_TYPE,
            include_body=include_body,
        )
