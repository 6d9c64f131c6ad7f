"""The simple index: ``{prefix}/simple/`` and ``{prefix}/simple/{project}/`` (PEP 503, PEP 691).

The variant (``text/html``, ``v1+html``, ``v1+json``) is negotiated from ``Accept`` or
``?format=``; nothing acceptable is a 406. Every answer, errors included, carries
``Vary: Accept, Accept-Encoding``. A project name that is not normalized, or lacks its trailing
slash, is redirected (301) to ``{prefix}/simple/{normalized}/``, query kept.

Project pages carry ``X-PyPI-Last-Serial``, read from the page served: ``meta._last-serial`` of
the JSON variant, the closing ``<!--SERIAL n-->`` comment of the HTML variants (both written by
the same sync step). Reading it from the served bytes, rather than from a sibling file, means a
page never goes out with the serial of another version of itself. The root page is large (tens
of MB for all of PyPI): gzip clients get its pre-compressed ``.gz`` sibling, never an on-the-fly
compression; project pages are compressed in memory, once per cached page.
"""

from __future__ import annotations

__all__ = ["SimplePageHandler", "SimpleProjectHandler", "SimpleRootHandler"]

import logging
from collections.abc import Awaitable

from packaging.utils import NormalizedName
from tornado.web import HTTPError

from pypimirror.advisorypages import AdvisoryPages
from pypimirror.errors import StorageError
from pypimirror.negotiation import PageVariant, choose_variant
from pypimirror.pagecache import PageCache, SerialReader, read_simple_html_serial, read_simple_json_serial

from .base import RequestContext
from .cached import CachedPageHandler, PageFiles, Representation, normalized_name, page_unreadable

logger = logging.getLogger(__name__)

_SERIAL_READERS: dict[PageVariant, SerialReader] = {
    PageVariant.HTML: read_simple_html_serial,
    PageVariant.V1_HTML: read_simple_html_serial,
    PageVariant.V1_JSON: read_simple_json_serial,
}
_GZIP_SUFFIX = ".gz"


class SimplePageHandler(CachedPageHandler):
    """Negotiation and the ``Vary`` header shared by the root and the project pages."""

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Vary", "Accept, Accept-Encoding")

    def negotiate(self) -> PageVariant:
        variant = choose_variant(self.request.headers.get("Accept"), self.get_query_argument("format", None))
        if variant is None:
            raise HTTPError(406)
        return variant


class SimpleRootHandler(SimplePageHandler):
    """``{prefix}/simple/``: every project, in the negotiated variant."""

    def initialize(self, *, context: RequestContext, pages: PageCache, files: PageFiles) -> None:
        self.init_pages(context, pages, files)

    async def get(self) -> None:
        await self._serve(include_body=True)

    async def head(self) -> None:
        await self._serve(include_body=False)

    async def _serve(self, *, include_body: bool) -> None:
        variant = self.negotiate()
        rep = await self._representation(variant)
        sending = self.send_page(rep, content_type=variant.content_type, include_body=include_body)
        if sending is not None:
            await sending

    async def _representation(self, variant: PageVariant) -> Representation:
        path = self.files.root_page(variant.value)
        try:
            if self.wants_gzip():
                compressed = await self.pages.get_precompressed(path, path + _GZIP_SUFFIX)
                if compressed is not None:
                    return Representation.compressed(compressed, compressed.body)
            page = await self.pages.get(path)
        except StorageError as exc:
            raise page_unreadable(exc) from None
        if page is None:
            raise HTTPError(404)
        return Representation.identity(page)


class SimpleProjectHandler(SimplePageHandler):
    """``{prefix}/simple/{project}/``: one project's page, in the negotiated variant.

    With ``advisories``, the page of a project an advisory names is served flagged
    (:mod:`pypimirror.advisorypages`).
    """

    def initialize(
        self,
        *,
        context: RequestContext,
        pages: PageCache,
        files: PageFiles,
        prefix: str,
        advisories: AdvisoryPages | None = None,
    ) -> None:
        self.init_pages(context, pages, files)
        self.prefix = prefix
        self.advisories = advisories

    def get(self, name: str, slash: str) -> Awaitable[None] | None:
        return self._serve(name, slash, include_body=True)

    def head(self, name: str, slash: str) -> Awaitable[None] | None:
        return self._serve(name, slash, include_body=False)

    def _serve(self, name: str, slash: str, *, include_body: bool) -> Awaitable[None] | None:
        """A page memory holds is answered at once (no coroutine); an awaitable means more to do."""
        normalized = normalized_name(name)
        if normalized != name or not slash:
            self.redirect_to(f"{self.prefix}/simple/{normalized}/", 301)
            return None
        variant = self.negotiate()
        if self.advisories is not None and self.advisories.affects(normalized):
            return self._send_flagged(self.advisories, normalized, variant, include_body=include_body)
        return self.send_stored_page(
            self.files.project_page(normalized, variant.value),
            _SERIAL_READERS[variant],
            content_type=variant.content_type,
            include_body=include_body,
        )

    def _send_flagged(
        self, advisories: AdvisoryPages, name: NormalizedName, variant: PageVariant, *, include_body: bool
    ) -> Awaitable[None] | None:
        """The page with the advisory policy applied, rendered from the stored JSON variant."""
        return self.send_derived_page(
            self.files.project_page(name, PageVariant.V1_JSON.value),
            read_simple_json_serial,
            lambda source: advisories.flagged_page_now(source, name, variant),
            lambda source: advisories.flagged_page(source, name, variant),
            content_type=variant.content_type,
            include_body=include_body,
        )
