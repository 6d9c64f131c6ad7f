"""Sending a page of the :class:`~pypimirror.pagecache.PageCache`: validators, 304s, gzip, serial.

Pages (simple pages, JSON-API documents) are answered from memory with a strong ``ETag`` and a
``Last-Modified`` of the file, ``304 Not Modified`` for a current client copy, the page's
``X-PyPI-Last-Serial`` when it has one, and the gzip encoding when the client accepts it. Each
encoding is its own representation with its own ETag, so a cache never mixes them up.
"""

from __future__ import annotations

__all__ = [
    "CachedPageHandler",
    "PageFiles",
    "Representation",
    "accepts_gzip",
    "normalized_name",
    "page_unreadable",
]

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from packaging.utils import InvalidName, NormalizedName, canonicalize_name
from tornado.web import HTTPError

from pypimirror.errors import StorageError
from pypimirror.pagecache import CachedPage, PageCache, SerialReader
from pypimirror.storage import MAX_PROJECT_NAME_LENGTH, RepoLayout

from .base import CHUNK_SIZE, BaseHandler, RequestContext

logger = logging.getLogger(__name__)

_GZIP_NAMES = ("gzip", "x-gzip")
# Longer Accept-Encoding headers are parsed without caching (real ones are far shorter).
_CACHEABLE_LENGTH = 256


@dataclass(frozen=True, slots=True)
class PageFiles:
    """Where the page files are (:class:`~pypimirror.storage.RepoLayout`'s places), as strings.

    Built once; per request a path is one f-string instead of several pathlib joins. Names
    must be valid normalized project names, which the handlers check before asking.
    """

    simple_dir: str
    json_dir: str

    @classmethod
    def of(cls, layout: RepoLayout) -> PageFiles:
        return cls(simple_dir=str(layout.simple_dir), json_dir=str(layout.json_dir))

    def root_page(self, variant: str) -> str:
        return f"{self.simple_dir}/{variant}"

    def project_page(self, name: NormalizedName, variant: str) -> str:
        return f"{self.simple_dir}/{name}/{variant}"

    def json_document(self, name: NormalizedName) -> str:
        return f"{self.json_dir}/{name}"


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether ``Accept-Encoding`` allows gzip (RFC 9110 §12.5.3).

    ``gzip`` (or ``x-gzip``) with q > 0 does; so does ``*`` with q > 0 unless gzip is named with
    q=0. A malformed q counts as 0; no header means identity only.
    """
    if not accept_encoding:
        return False
    if len(accept_encoding) > _CACHEABLE_LENGTH:
        return _accepts_gzip(accept_encoding)
    return _cached_accepts_gzip(accept_encoding)


def _accepts_gzip(accept_encoding: str) -> bool:
    named: float | None = None
    wildcard: float | None = None
    for item in accept_encoding.lower().split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        q = _q_of(params)
        if coding in _GZIP_NAMES:
            named = q if named is None else max(named, q)
        elif coding == "*":
            wildcard = q
    if named is not None:
        return named > 0
    return wildcard is not None and wildcard > 0


_cached_accepts_gzip = functools.lru_cache(maxsize=64)(_accepts_gzip)


def _q_of(params: list[str]) -> float:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip() == "q":
            try:
                q = float(value)
            except ValueError:
                return 0.0
            return q if 0 <= q <= 1 else 0.0
    return 1.0


@dataclass(frozen=True, slots=True)
class Representation:
    """The bytes one response sends for a page, with their validators."""

    body: bytes
    etag: str
    mtime: float
    last_modified: str
    gzip: bool
    serial: int | None  # sent as X-PyPI-Last-Serial when known

    @classmethod
    def identity(cls, page: CachedPage) -> Representation:
        return cls(page.body, page.etag, page.mtime, page.last_modified, gzip=False, serial=page.last_serial)

    @classmethod
    def compressed(cls, page: CachedPage, body: bytes) -> Representation:
        """``body`` as the gzip encoding of ``page`` (or ``page`` itself a ``.gz`` file)."""
        return cls(body, page.gzip_etag, page.mtime, page.last_modified, gzip=True, serial=page.last_serial)


class CachedPageHandler(BaseHandler):
    """A handler that answers with pages of the page cache."""

    def init_pages(self, context: RequestContext, pages: PageCache, files: PageFiles) -> None:
        self.init_base(context)
        self.pages = pages
        self.files = files

    def wants_gzip(self) -> bool:
        return accepts_gzip(self.request.headers.get("Accept-Encoding"))

    async def encode(self, page: CachedPage) -> Representation:
        """The representation the client gets: gzip (compressed once per page) if it accepts it."""
        return self.representation_now(page) or Representation.compressed(page, await self.pages.gzipped(page))

    def representation_now(self, page: CachedPage) -> Representation | None:
        """:meth:`encode` without waiting: None if the client takes gzip and ``page`` has not
        been compressed yet."""
        if not self.wants_gzip():
            return Representation.identity(page)
        return Representation.compressed(page, page.gzipped) if page.gzipped is not None else None

    def send_stored_page(
        self, path: str, read_serial: SerialReader | None, *, content_type: str, include_body: bool
    ) -> Awaitable[None] | None:
        """Answer with the page file at ``path`` (404 if there is none).

        The hot path: a page memory holds, found current within the last second and already in
        the encoding the client takes, is answered at once, with no system call and no
        coroutine. Otherwise the returned awaitable loads (or compresses) it first.
        """
        page = self.pages.get_fresh(path)
        rep = self.representation_now(page) if page is not None else None
        if rep is None:
            return self._load_and_send(path, read_serial, None, content_type=content_type, include_body=include_body)
        return self.send_page(rep, content_type=content_type, include_body=include_body)

    def send_derived_page(
        self,
        path: str,
        read_serial: SerialReader | None,
        kept: Callable[[CachedPage], CachedPage | None],
        derive: Callable[[CachedPage], Awaitable[CachedPage]],
        *,
        content_type: str,
        include_body: bool,
    ) -> Awaitable[None] | None:
        """Answer with a page derived from the stored page at ``path`` (404 if there is none).

        ``derive`` makes it from the stored page; ``kept`` returns it without waiting when it was
        made from that very page before (None otherwise). So a derived page memory holds is
        answered at once, like a plain one (:meth:`send_stored_page`).
        """
        source = self.pages.get_fresh(path)
        derived = kept(source) if source is not None else None
        rep = self.representation_now(derived) if derived is not None else None
        if rep is not None:
            return self.send_page(rep, content_type=content_type, include_body=include_body)
        return self._load_and_send(path, read_serial, derive, content_type=content_type, include_body=include_body)

    async def _load_and_send(
        self,
        path: str,
        read_serial: SerialReader | None,
        derive: Callable[[CachedPage], Awaitable[CachedPage]] | None,
        *,
        content_type: str,
        include_body: bool,
    ) -> None:
        """Load the stored page at ``path`` (404 if there is none) and send it, or what
        ``derive`` makes of it."""
        try:
            source = await self.pages.get(path, read_serial)
        except StorageError as exc:
            raise page_unreadable(exc) from None
        if source is None:
            raise HTTPError(404)
        rep = await self.encode(source if derive is None else await derive(source))
        sending = self.send_page(rep, content_type=content_type, include_body=include_body)
        if sending is not None:
            await sending

    def send_page(self, rep: Representation, *, content_type: str, include_body: bool) -> Awaitable[None] | None:
        """Answer 200 (or 304 if the client's copy is current) with ``rep``; an awaitable only
        while the body is still being written (a slow client, or a body over one chunk)."""
        self.set_header("Content-Type", content_type)
        self.set_header("ETag", rep.etag)
        self.set_header("Last-Modified", rep.last_modified)
        if rep.serial is not None:
            self.set_header("X-PyPI-Last-Serial", str(rep.serial))
        if rep.gzip:
            self.set_header("Content-Encoding", "gzip")
        if self.is_not_modified(rep.mtime):
            self.set_status(304)
            self.finish()
            return None
        self.set_header("Content-Length", str(len(rep.body)))
        if not include_body:
            self.finish()
            return None
        if len(rep.body) > CHUNK_SIZE:
            return self.send_body(rep.body)
        return self.finish_in_time(rep.body)


def page_unreadable(exc: StorageError) -> HTTPError:
    """The answer for a page that exists but cannot be read: 503, logged as one line (no
    traceback), since the fault is ours, may pass, and another mirror may answer meanwhile."""
    return HTTPError(503, "%s", exc)


def normalized_name(name: str) -> NormalizedName:
    """The normalized form of a valid project name; anything else (``..``, ``%2F``, ``ä``, a name
    longer than :data:`~pypimirror.storage.MAX_PROJECT_NAME_LENGTH`) is a 404.

    The one check of a project name in a request path, for the simple and both JSON-API routes.
    The length is checked first, so an overlong name costs one ``len`` and never reaches the
    cache below, the normalizer or the disk (normalizing only shortens a name).
    """
    if len(name) > MAX_PROJECT_NAME_LENGTH:
        raise HTTPError(404)
    return _cached_normalized_name(name)


@functools.lru_cache(maxsize=4096)
def _cached_normalized_name(name: str) -> NormalizedName:
    """Cached: the same few hot names come again and again (a refused one raises, so is not
    kept); with keys bounded by the length check, the cache holds at most about a megabyte."""
    try:
        return canonicalize_name(name, validate=True)
    except InvalidName:
        raise HTTPError(404) from None
