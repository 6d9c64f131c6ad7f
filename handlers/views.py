"""The views: ``{prefix}/+cooldown/{duration}/…``, ``{prefix}/+view/{name}/…`` and
``{prefix}/+asof/{timestamp}/…`` (docs/views.md).

Under each view the mirror serves a complete index: the simple root and project pages (same
negotiation, ``Vary``, validators, 304 and gzip as the plain index), the JSON-API documents,
and the package files and their ``.metadata``. Pages come from :class:`~pypimirror.viewpages.ViewPages`,
made from the plain pages the page cache holds. A file the view offers is answered exactly as
on the plain index (the file handler's own code: held, redirected or proxied, and its GET is a
vote); a file the view leaves out is a 403 whose body and ``X-PyPI-Mirror-View-Reason`` header
say why. A view URL that names no view (a malformed duration, an unknown name) is a 404 whose
status line and body give the reason in one line.
"""

from __future__ import annotations

__all__ = [
    "VIEW_REASON_HEADER",
    "ViewJsonApiHandler",
    "ViewPackageFileHandler",
    "ViewProjectHandler",
    "ViewRootHandler",
]

import logging
from collections.abc import Awaitable
from typing import Any

from packaging.utils import NormalizedName
from tornado.web import HTTPError

from pypimirror.errors import MalformedUpstreamError, StorageError
from pypimirror.listedfiles import project_of
from pypimirror.pagecache import PageCache, read_json_api_serial, read_simple_json_serial
from pypimirror.viewpages import ViewedEntry, ViewPages
from pypimirror.views import View, ViewError, ViewResolver, one_line

from .base import RequestContext
from .cached import CachedPageHandler, PageFiles, normalized_name, page_unreadable
from .files import PackageFileHandler
from .simple import SimplePageHandler, SimpleRootHandler

logger = logging.getLogger(__name__)

#: The response header that says why a view refused a file.
VIEW_REASON_HEADER = "X-PyPI-Mirror-View-Reason"
_JSON_CONTENT_TYPE = "application/json"
_SOURCE_VARIANT = "index.v1_json"  # the plain page every view page is made from
_PACKAGES = "/packages/"


def resolve_view(resolver: ViewResolver, kind: str, argument: str) -> View:
    """The view a URL names, or a 404 whose reason says why there is none."""
    try:
        return resolver.resolve(kind, argument)
    except ViewError as exc:
        raise view_not_found(exc) from None


async def viewed_project(
    pages: PageCache, files: PageFiles, views: ViewPages, view: View, name: NormalizedName
) -> ViewedEntry:
    """``name``'s plain page as ``view`` shows it; :class:`ViewError` if the view shows none."""
    try:
        source = await pages.get(files.project_page(name, _SOURCE_VARIANT), read_simple_json_serial)
        return await views.project(view, name, source)
    except StorageError as exc:
        raise page_unreadable(exc) from None
    except MalformedUpstreamError as exc:
        raise stored_page_malformed(exc) from None


def stored_page_malformed(exc: MalformedUpstreamError) -> HTTPError:
    """The answer for a stored page a view cannot read: 503, as for a page that cannot be read."""
    return HTTPError(503, "%s", exc)


def view_not_found(exc: ViewError) -> HTTPError:
    """The answer for a page a view cannot show: 404, the reason in one line."""
    return HTTPError(404, reason=one_line(str(exc)))


class _ViewPageHandler(CachedPageHandler):
    """What the view's page handlers share: the views, and a view resolved from the URL."""

    def init_views(
        self, context: RequestContext, pages: PageCache, files: PageFiles, views: ViewPages, resolver: ViewResolver
    ) -> None:
        self.init_pages(context, pages, files)
        self.views = views
        self.resolver = resolver

    async def viewed(self, view: View, name: NormalizedName) -> ViewedEntry:
        try:
            return await viewed_project(self.pages, self.files, self.views, view, name)
        except ViewError as exc:
            raise view_not_found(exc) from None


class ViewRootHandler(SimpleRootHandler):
    """``{prefix}/+{kind}/{argument}/simple/``: the view's project list, in the negotiated variant."""

    def initialize(  # type: ignore[override]
        self, *, context: RequestContext, pages: PageCache, files: PageFiles, views: ViewPages,
        resolver: ViewResolver, prefix: str,
    ) -> None:
        super().initialize(context=context, pages=pages, files=files)
        self.views = views
        self.resolver = resolver
        self.prefix = prefix

    async def get(self, *args: str) -> None:
        await self._serve_view(*args, include_body=True)

    async def head(self, *args: str) -> None:
        await self._serve_view(*args, include_body=False)

    async def _serve_view(self, kind: str, argument: str, slash: str, *, include_body: bool) -> None:
        view = resolve_view(self.resolver, kind, argument)
        if not slash:
            self.redirect_to(f"{self.prefix}/{view.label}/simple/", 301)
            return
        variant = self.negotiate()
        try:
            source = await self.pages.get(self.files.root_page(_SOURCE_VARIANT))
        except StorageError as exc:
            raise page_unreadable(exc) from None
        if source is None:
            raise HTTPError(404)
        try:
            entry = await self.views.root(view, source)
        except MalformedUpstreamError as exc:
            raise stored_page_malformed(exc) from None
        except ViewError as exc:
            raise view_not_found(exc) from None
        page = self.views.rendered(entry, variant.value)
        # A view that lists every project has the plain root's JSON (it names no URL).
        rep = await self.encode(page) if page is not None else await self._representation(variant)
        sending = self.send_page(rep, content_type=variant.content_type, include_body=include_body)
        if sending is not None:
            await sending


class ViewProjectHandler(_ViewPageHandler, SimplePageHandler):
    """``{prefix}/+{kind}/{argument}/simple/{project}/``: the project's page as the view shows it."""

    def initialize(
        self, *, context: RequestContext, pages: PageCache, files: PageFiles, views: ViewPages,
        resolver: ViewResolver, prefix: str,
    ) -> None:
        self.init_views(context, pages, files, views, resolver)
        self.prefix = prefix

    def get(self, *args: str) -> Awaitable[None] | None:
        return self._serve(*args, include_body=True)

    def head(self, *args: str) -> Awaitable[None] | None:
        return self._serve(*args, include_body=False)

    def _serve(self, kind: str, argument: str, name: str, slash: str, *, include_body: bool) -> Awaitable[None] | None:
        """A page memory holds, current and in the client's encoding, is answered at once."""
        view = resolve_view(self.resolver, kind, argument)
        normalized = normalized_name(name)
        if normalized != name or not slash:
            self.redirect_to(f"{self.prefix}/{view.label}/simple/{normalized}/", 301)
            return None
        variant = self.negotiate()
        source = self.pages.get_fresh(self.files.project_page(normalized, _SOURCE_VARIANT))
        entry = self.views.fresh(view, normalized, source) if source is not None else None
        page = self.views.rendered(entry, variant.value) if entry is not None else None
        rep = self.representation_now(page) if page is not None else None
        if rep is None:
            return self._load_and_send_view(view, normalized, variant.value, variant.content_type, include_body)
        return self.send_page(rep, content_type=variant.content_type, include_body=include_body)

    async def _load_and_send_view(
        self, view: View, name: NormalizedName, variant: str, content_type: str, include_body: bool
    ) -> None:
        entry = await self.viewed(view, name)
        page = await self.views.render(view, entry, variant)
        sending = self.send_page(await self.encode(page), content_type=content_type, include_body=include_body)
        if sending is not None:
            await sending


class ViewJsonApiHandler(_ViewPageHandler):
    """``{prefix}/+{kind}/{argument}/pypi/{project}/json`` (and ``…/{project}/json``): the
    stored JSON-API document with only the files the view offers."""

    def initialize(
        self, *, context: RequestContext, pages: PageCache, files: PageFiles, views: ViewPages,
        resolver: ViewResolver, canonical_url: str,
    ) -> None:
        self.init_views(context, pages, files, views, resolver)
        self.canonical_url = canonical_url

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Vary", "Accept-Encoding")

    async def get(self, *args: str) -> None:
        await self._serve(*args, include_body=True)

    async def head(self, *args: str) -> None:
        await self._serve(*args, include_body=False)

    async def _serve(self, kind: str, argument: str, name: str, *, include_body: bool) -> None:
        view = resolve_view(self.resolver, kind, argument)
        normalized = normalized_name(name)
        if normalized != name:
            self.redirect_to(self.canonical_url.format(view=view.label, name=normalized), 301)
            return
        try:
            document = await self.pages.get(self.files.json_document(normalized), read_json_api_serial)
        except StorageError as exc:
            raise page_unreadable(exc) from None
        if document is None:
            raise HTTPError(404)
        entry = await self.viewed(view, normalized)
        try:
            page = await self.views.render_json_document(view, entry, document)
        except MalformedUpstreamError as exc:
            raise stored_page_malformed(exc) from None
        sending = self.send_page(await self.encode(page), content_type=_JSON_CONTENT_TYPE, include_body=include_body)
        if sending is not None:
            await sending


class ViewPackageFileHandler(PackageFileHandler):
    """``{prefix}/+{kind}/{argument}/packages/…``: a file the view offers, answered as on the
    plain index; any other is a 403 with the reason."""

    def initialize(  # type: ignore[override]
        self, *, pages: PageCache, files: PageFiles, views: ViewPages, resolver: ViewResolver, prefix: str,
        **file_route: Any,
    ) -> None:
        super().initialize(**file_route)
        self.pages = pages
        self.files = files
        self.views = views
        self.resolver = resolver
        self.prefix = prefix

    async def get(self, *args: str) -> None:
        if await self._offered(*args):
            answer = super().get()
            if answer is not None:
                await answer

    async def head(self, *args: str) -> None:
        if await self._offered(*args):
            answer = super().head()
            if answer is not None:
                await answer

    async def _offered(self, kind: str, argument: str) -> bool:
        """Whether the view offers the requested file; if not, the 403 has been sent."""
        view = resolve_view(self.resolver, kind, argument)
        raw = self.request.path  # undecoded, as the file handler reads it
        self.route_base = raw[: raw.index(_PACKAGES, len(self.prefix)) + len(_PACKAGES)]
        path = self._package_path()
        dist_relpath = path.dist_relpath
        filename = dist_relpath.rpartition("/")[2]
        name = project_of(dist_relpath)
        if name is None:
            reason: str | None = f"{filename}: the name of this file names no project"
        else:
            try:
                entry = await viewed_project(self.pages, self.files, self.views, view, name)
            except ViewError as exc:
                reason = f"{filename}: {exc}"
            else:
                reason = entry.refusal(dist_relpath, filename, self.prefix)
        if reason is None:
            return True
        self._refuse(view, reason)
        return False

    def _refuse(self, view: View, reason: str) -> None:
        text = f"refused by {view.label}: {reason}"
        self.set_status(403)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header(VIEW_REASON_HEADER, one_line(text))
        self.finish(f"403 Forbidden: {text}\n")
