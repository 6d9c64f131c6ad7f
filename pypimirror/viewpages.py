"""The pages of the views, made from the plain index's pages and kept in memory while they hold.

A view's page is never stored on disk: it is the plain page (as the :class:`~pypimirror.pagecache.PageCache`
holds it) passed through the view (:mod:`pypimirror.views`) and rendered by the same renderers
as the plain index, with file URLs pointing into the view. :class:`ViewPages` keeps, per view
and project, the viewed page model and each variant rendered from it, in a least-recently-used
map bounded by bytes. An entry is used only while

* the plain page it was made from is the very object the page cache holds: the page cache
  hands out a new object when the sync replaced the file, so a sync that changes a project
  changes its views within the second the page cache takes to notice; and
* the view's own clock has not reached the moment a left-out file comes of age (a cooldown
  view changes with time alone); and
* the advisory policy (:class:`~pypimirror.advisorypages.AdvisoryPages`, when on) has not been
  reloaded since: a view's page is flagged by the same policy as the plain page, after the
  view's own filtering, so new advisories, a withdrawal or a waiver running out change it too.

Each rendered page carries a strong ETag (a digest of its bytes: two renderings of the same
content agree), a ``Last-Modified`` that moves when the content does, and its serial. Parsing
and rendering a large page runs in a worker thread, as the page cache reads large files.
"""

from __future__ import annotations

__all__ = ["DEFAULT_MAX_BYTES", "ROOT", "ViewPages", "ViewedEntry", "view_json_document"]

import email.utils
import functools
import hashlib
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from packaging.utils import NormalizedName, canonicalize_name

from pypimirror.advisorypages import AdvisoryPages
from pypimirror.errors import MalformedUpstreamError
from pypimirror.listedfiles import files_on_this_mirror
from pypimirror.pagecache import BLOCKING_LIMIT, CachedPage, off_loop_if
from pypimirror.pagemodel import DistFile, ProjectPage, parse_simple_project_json
from pypimirror.pages import (
    RootEntry,
    render_project_html,
    render_project_json,
    render_root_html,
    render_root_json,
    rewrite_file_url,
)
from pypimirror.views import View, ViewedProject

logger = logging.getLogger(__name__)

#: The default bound of the rendered view pages and their models, all views together.
DEFAULT_MAX_BYTES = 128 * 1024 * 1024
#: The variant name of a project's JSON-API document among its rendered pages.
JSON_API: Final = "json"
#: The key of a view's root page (no project is named "").
ROOT: Final = NormalizedName("")

_NO_KEY = (0, 0, 0)
# The "plain page" of a project the mirror has none of: one object, so entries made from it stay
# valid until the project gets a page (another object).
_ABSENT: Final = CachedPage(path="", body=b"", etag='""', mtime=0.0, last_modified="", last_serial=None, key=_NO_KEY)


@dataclass(eq=False, slots=True)
class ViewedEntry:
    """One project (or root) of one view: the plain page it came from, what the view made of it,
    and the variants rendered so far (each with the plain document it was made from)."""

    label: str
    source: CachedPage
    viewed: ViewedProject | None  # None for a root
    changes_at: float
    generation: int = 0  # of the advisory policy the page was flagged by
    pages: dict[str, tuple[CachedPage, CachedPage]] = field(default_factory=dict)  # variant -> (page, its source)
    _offered: frozenset[str] | None = None  # the package paths of the files the view keeps

    @property
    def weight(self) -> int:
        return len(self.source.body) + sum(len(page.body) for page, _ in self.pages.values())

    def refusal(self, relpath: str, filename: str, prefix: str) -> str | None:
        """Why the view refuses the file at package path ``relpath`` (named ``filename``); None
        if the view's page lists exactly that path."""
        assert self.viewed is not None, "a root lists no files"
        if self._offered is None:
            self._offered = frozenset(relpath for relpath, _ in files_on_this_mirror(self.viewed.page, prefix))
        if relpath in self._offered:
            return None
        page = self.viewed.page
        reason = self.viewed.refused.get(filename)
        if reason is not None:
            return f"{filename}: {reason}"
        if page.status == "quarantined":
            return f"the project {page.name} is quarantined, so it offers no files"
        return f"the page of {page.name} does not list this file"


class ViewPages:
    """Rendered view pages by (view label, project, variant), bounded by ``max_bytes`` (module docstring).

    For the IOLoop thread only. ``prefix`` is the mirror's, ``packages_url`` the upstream's
    (the stored JSON-API documents link there); ``clock`` is wall-clock time, which views compare
    with upload times. With ``advisories``, project pages are flagged by its policy.
    """

    def __init__(
        self,
        prefix: str,
        packages_url: str,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.time,
        advisories: AdvisoryPages | None = None,
    ) -> None:
        self.prefix = prefix.rstrip("/")
        self.packages_url = packages_url
        self.max_bytes = max_bytes
        self._clock = clock
        self._advisories = advisories
        self._entries: OrderedDict[tuple[str, NormalizedName], ViewedEntry] = OrderedDict()
        self._bytes = 0

    @property
    def held_bytes(self) -> int:
        return self._bytes

    def view_prefix(self, view: View) -> str:
        return f"{self.prefix}/{view.label}"

    # --- projects ----------------------------------------------------------------------

    def fresh(self, view: View, name: NormalizedName, source: CachedPage) -> ViewedEntry | None:
        """The entry of ``name`` in ``view`` if it was made from ``source`` and still holds; no I/O."""
        entry = self._entries.get((view.label, name))
        if (entry is None or entry.source is not source or self._clock() >= entry.changes_at
                or entry.generation != self._generation()):
            return None
        self._entries.move_to_end((view.label, name))
        return entry

    async def project(self, view: View, name: NormalizedName, source: CachedPage | None) -> ViewedEntry:
        """The entry of ``name`` in ``view``, made from the plain page ``source`` if need be
        (None: the mirror has no page of ``name`` now, which only a view of the past can show).

        Raises :class:`~pypimirror.errors.MalformedUpstreamError` if the stored page does not
        parse, and :class:`~pypimirror.views.ViewError` if the view cannot show the project.
        """
        source = source if source is not None else _ABSENT
        entry = self.fresh(view, name, source)
        if entry is not None:
            return entry
        now, generation = self._clock(), self._generation()
        blocking = view.blocking or len(source.body) > BLOCKING_LIMIT
        viewed = await off_loop_if(blocking, _view_page, view, name, source, now, self._advisories)
        entry = ViewedEntry(view.label, source, viewed, viewed.changes_at, generation)
        self._store((view.label, name), entry)
        return entry

    def rendered(self, entry: ViewedEntry, variant: str, source: CachedPage | None = None) -> CachedPage | None:
        """A variant already rendered for ``entry`` (from ``source``, for a JSON-API document)."""
        found = entry.pages.get(variant)
        if found is None or (source is not None and found[1] is not source):
            return None
        return found[0]

    async def render(self, view: View, entry: ViewedEntry, variant: str) -> CachedPage:
        """Variant ``variant`` (a simple page file name) of ``entry``'s project, rendered once."""
        page = self.rendered(entry, variant)
        if page is not None:
            return page
        assert entry.viewed is not None, "a root is rendered by root()"
        viewed, url_for = entry.viewed, self._url_for(view, f"{self.prefix}/packages")
        big = len(entry.source.body) > BLOCKING_LIMIT
        body = await off_loop_if(big, _render_simple, viewed.page, variant, url_for)
        page = _page_of(f"{view.label}:{viewed.page.name}:{variant}", body, _modified(entry.source, viewed),
                        viewed.page.last_serial)
        return self._keep(entry, variant, page, entry.source)

    async def render_json_document(self, view: View, entry: ViewedEntry, document: CachedPage) -> CachedPage:
        """The stored JSON-API ``document`` of ``entry``'s project as the view shows it."""
        page = self.rendered(entry, JSON_API, document)
        if page is not None:
            return page
        assert entry.viewed is not None, "a root has no JSON-API document"
        viewed, url_for = entry.viewed, self._url_for(view, self.packages_url)
        big = len(document.body) > BLOCKING_LIMIT
        body = await off_loop_if(big, view_json_document, document.body, viewed.page, url_for)
        modified = max(document.mtime, _modified(entry.source, viewed))
        page = _page_of(f"{view.label}:{viewed.page.name}:{JSON_API}", body, modified, document.last_serial)
        return self._keep(entry, JSON_API, page, document)

    # --- root pages ---------------------------------------------------------------------

    async def root(self, view: View, source: CachedPage) -> ViewedEntry:
        """The root pages of ``view`` (every variant), made from the plain root JSON ``source``."""
        entry = self.fresh(view, ROOT, source)
        if entry is not None:
            return entry
        blocking = view.blocking or len(source.body) > BLOCKING_LIMIT
        rendered = await off_loop_if(blocking, _render_root, view, source.body, self.view_prefix(view))
        entry = ViewedEntry(view.label, source, None, math.inf)
        for variant, body in rendered.items():
            entry.pages[variant] = (_page_of(f"{view.label}::{variant}", body, source.mtime, source.last_serial), source)
        self._store((view.label, ROOT), entry)
        return entry

    # --- the map --------------------------------------------------------------------------

    def _generation(self) -> int:
        return self._advisories.generation if self._advisories is not None else 0

    def _url_for(self, view: View, packages_url: str) -> Callable[[str], str]:
        return functools.partial(rewrite_file_url, packages_url=packages_url, prefix=self.view_prefix(view))

    def _keep(self, entry: ViewedEntry, variant: str, page: CachedPage, source: CachedPage) -> CachedPage:
        key = (entry.label, entry.viewed.page.name if entry.viewed is not None else ROOT)
        held = self._entries.get(key) is entry
        if held:
            self._bytes -= entry.weight
        entry.pages[variant] = (page, source)
        if held:
            self._bytes += entry.weight
            self._evict(keep=key)
        return page

    def _store(self, key: tuple[str, NormalizedName], entry: ViewedEntry) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old.weight
        self._entries[key] = entry
        self._bytes += entry.weight
        self._evict(keep=key)

    def _evict(self, *, keep: tuple[str, NormalizedName]) -> None:
        """Drop the least recently used entries until within bounds; the one just used stays."""
        while self._bytes > self.max_bytes and len(self._entries) > 1:
            key, entry = next(iter(self._entries.items()))
            if key == keep:
                self._entries.move_to_end(key)
                continue
            del self._entries[key]
            self._bytes -= entry.weight


def _view_page(
    view: View, name: NormalizedName, source: CachedPage, now: float, advisories: AdvisoryPages | None
) -> ViewedProject:
    """The view of the plain page ``source``, then the advisory policy's yanks on what it keeps."""
    if source is _ABSENT:
        viewed = view.apply_absent(name, now)
    else:
        viewed = view.apply(parse_simple_project_json(source.body), now)
    if advisories is None:
        return viewed
    return replace(viewed, page=advisories.flag(viewed.page))


def _render_simple(page: ProjectPage, variant: str, url_for: Callable[[str], str]) -> bytes:
    if variant == "index.v1_json":
        return render_project_json(page, url_for=url_for)
    return render_project_html(page, url_for=url_for, repository_meta=True)


def _render_root(view: View, body: bytes, prefix: str) -> dict[str, bytes]:
    """The variants of the view's root page, from the plain root JSON page. The JSON variant
    names no URL, so it is rendered only when the view lists other projects than the plain
    root: otherwise the plain root JSON is the view's too."""
    listed, serial = _root_entries(body)
    entries = view.root(listed)
    html = render_root_html(entries, prefix=prefix)
    rendered = {"index.html": html, "index.v1_html": html}
    if entries is not listed:
        rendered["index.v1_json"] = render_root_json(entries, last_serial=serial)
    return rendered


def _root_entries(body: bytes) -> tuple[Sequence[RootEntry], int]:
    """The projects of our own root JSON page (display name, normalized name, serial), and its serial."""
    try:
        doc = json.loads(body)
        entries = [(p["name"], canonicalize_name(p["name"]), int(p["_last-serial"])) for p in doc["projects"]]
        return entries, int(doc["meta"]["_last-serial"])
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedUpstreamError(f"the stored root page does not parse: {exc!r}") from None


def view_json_document(body: bytes, page: ProjectPage, url_for: Callable[[str], str]) -> bytes:
    """A stored JSON-API document showing only the files of the viewed ``page``.

    Each kept file's URL goes through ``url_for`` and its yank state is the page's; a release
    left without files is dropped. ``info.version`` and ``urls`` follow the newest release kept
    when the document's own is gone; the rest of ``info`` still describes the newest release,
    as the document holds nothing else.
    """
    try:
        doc = json.loads(body)
        releases = doc["releases"]
        if not isinstance(releases, dict) or not isinstance(doc.get("info"), dict):
            raise TypeError("releases and info must be objects")
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedUpstreamError(f"the stored JSON-API document of {page.name} does not parse: {exc}") from None
    kept = {dist.filename: dist for dist in page.files}
    shown: dict[str, list[dict[str, object]]] = {}
    for version, files in releases.items():
        entries = [_json_api_file(item, kept[item["filename"]], url_for) for item in files
                   if isinstance(item, dict) and item.get("filename") in kept] if isinstance(files, list) else []
        if entries:
            shown[version] = entries
    doc["releases"] = shown
    info = doc["info"]
    if info.get("version") not in shown:
        newest = [version for version in page.versions if version in shown]
        info["version"] = newest[-1] if newest else None
    doc["urls"] = shown.get(info["version"], []) if info["version"] is not None else []
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("ascii") + b"\n"


def _json_api_file(item: dict[str, object], dist: DistFile, url_for: Callable[[str], str]) -> dict[str, object]:
    url = item.get("url")
    return {
        **item,
        "url": url_for(url) if isinstance(url, str) else url,
        "yanked": dist.yanked is not False,
        "yanked_reason": dist.yanked if isinstance(dist.yanked, str) else None,
    }


def _modified(source: CachedPage, viewed: ViewedProject) -> float:
    """When the viewed page last changed: its source's mtime, or later, a file coming of age."""
    return max(source.mtime, viewed.changed_at)


def _page_of(path: str, body: bytes, mtime: float, serial: int | None) -> CachedPage:
    digest = hashlib.blake2b(body, digest_size=12).hexdigest()
    return CachedPage(
        path=path,
        body=body,
        etag=f'"v{digest}"',
        mtime=mtime,
        last_modified=email.utils.formatdate(int(mtime), usegmt=True),
        last_serial=serial,
        key=_NO_KEY,
    )

