"""The advisory policy where pages and files are served: flagged project pages, blocked files.

The stored pages stay exactly as the index sync wrote them; the policy is applied when they are
served, so a change of advisories (or a waiver running out) needs no sync to show, and turning
the policy off restores the plain pages at once. For a project some advisory names, the page
served is rendered from its stored ``index.v1_json`` with :func:`flag_page` applied: every file
of an affected version yanked (PEP 592) with the advisories as the reason, which resolvers then
skip unless the version is pinned with ``==``, and pip prints. Its JSON-API document gets the
same yanks (:func:`flag_document`). Every other project is served as stored: the only cost on
the hot path is one set lookup.

:class:`AdvisoryPages` holds the policy of one serving process. :meth:`AdvisoryPages.refresh`
reloads it when a sync stored new records or the day changed (waivers end at a day's end); each
reload starts a new generation, and rendered pages of an older one are never served again.
Rendered pages are kept (bounded, least recently used dropped first) by project and variant,
valid while the stored page and the generation are the ones they were rendered from.
"""

from __future__ import annotations

__all__ = ["JSON_API", "AdvisoryPages", "PageKind", "flag_document", "flag_page", "release_of"]

import asyncio
import dataclasses
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any, Final, Literal

from packaging.utils import NormalizedName

from pypimirror import advisoryqueries as aq
from pypimirror.advisorypolicy import AdvisoryPolicy, Verdict
from pypimirror.config import AdvisoriesConfig
from pypimirror.distfilename import parse_dist_filename
from pypimirror.db import Database
from pypimirror.negotiation import PageVariant
from pypimirror.pagecache import CachedPage
from pypimirror.pagemodel import ProjectPage, parse_simple_project_json
from pypimirror.pages import render_project_html, render_project_json

logger = logging.getLogger(__name__)

#: Rendered pages kept per process; each is one project's page in one variant.
MAX_RENDERED_PAGES = 2000

#: The JSON-API document of a project, beside the simple page's variants.
JSON_API: Final = "json-api"
#: What is rendered flagged: a simple page's variant (from the stored JSON page) or the JSON-API
#: document (from the stored document).
PageKind = PageVariant | Literal["json-api"]


def flag_page(page: ProjectPage, verdicts: Mapping[str, Verdict]) -> ProjectPage:
    """``page`` with every file of a version in ``verdicts`` yanked, the reason naming the advisories.

    A file the upstream yanked already keeps its own reason in front of ours.
    """
    if not verdicts:
        return page
    files = []
    for dist in page.files:
        verdict = None if dist.version is None else verdicts.get(dist.version)
        if verdict is not None:
            own = dist.yanked if isinstance(dist.yanked, str) and dist.yanked else None
            dist = dataclasses.replace(dist, yanked=f"{own}; {verdict.reason}" if own else verdict.reason)
        files.append(dist)
    return dataclasses.replace(page, files=tuple(files))


def release_of(filename: str) -> tuple[NormalizedName, str] | None:
    """The project and version a distribution's file name names; None when it names none."""
    parsed = parse_dist_filename(filename)
    return None if parsed is None else (parsed.project, str(parsed.version))


class AdvisoryPages:
    """The advisory policy of one serving process; meant for the IOLoop thread."""

    def __init__(
        self,
        db: Database,
        settings: AdvisoriesConfig,
        *,
        max_pages: int = MAX_RENDERED_PAGES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._settings = settings
        self._max_pages = max_pages
        self._clock = clock
        self._policy = AdvisoryPolicy(settings, (), self._today())
        self._projects: frozenset[NormalizedName] = frozenset()
        self._loaded: tuple[tuple[int, float | None], date] | None = None
        self._rendered: OrderedDict[tuple[NormalizedName, PageKind], tuple[str, int, CachedPage]] = OrderedDict()
        #: Bumped whenever the policy is reloaded; a rendered page of another generation is stale.
        self.generation = 0
        # Names the loaded policy in ETags: the same records and day give the same tag in every
        # process, so a client's validator from one worker means the same bytes at another.
        self._tag = "0"

    def _today(self) -> date:
        return datetime.fromtimestamp(self._clock(), UTC).date()

    async def refresh(self) -> bool:
        """Reload the policy if records were stored or the day changed since; True if it was."""
        version = await self._db.run_read(aq.advisories_version)
        today = self._today()
        if self._loaded == (version, today):
            return False
        advisories = await self._db.run_read(aq.applicable_advisories)
        self._policy = AdvisoryPolicy(self._settings, advisories, today)
        self._projects = frozenset(self._policy.projects)
        self._loaded = (version, today)
        self._tag = hashlib.sha256(repr(self._loaded).encode()).hexdigest()[:12]
        self._rendered.clear()
        self.generation += 1
        logger.info("advisories: policy %s loaded, %d projects named", self._settings.mode, len(self._projects))
        return True

    def affects(self, name: NormalizedName) -> bool:
        """Whether the pages of ``name`` are served flagged (the hot path: one set lookup)."""
        return name in self._projects

    def flag(self, page: ProjectPage) -> ProjectPage:
        """``page`` as the loaded policy serves it (:func:`flag_page`), for pages made elsewhere
        than from a stored page (a view's). It reads no state that a reload changes in place,
        so a worker thread may call it; :attr:`generation`, read before, says which policy it used."""
        if not self.affects(page.name):
            return page
        return flag_page(page, self._policy.verdicts(page))

    def blocked(self, filename: str) -> Verdict | None:
        """The verdict that blocks downloads of ``filename``, or None when it may be served."""
        if not self._projects:
            return None
        release = release_of(filename)
        if release is None or release[0] not in self._projects:
            return None
        verdict = self._policy.verdict(*release)
        return verdict if verdict is not None and verdict.blocked else None

    def flagged_page_now(self, source: CachedPage, name: NormalizedName, kind: PageKind) -> CachedPage | None:
        """The flagged page kept from an earlier render of this very ``source`` and policy; None
        when it must be rendered (:meth:`flagged_page`). Nothing awaited: the hot path."""
        key = (name, kind)
        kept = self._rendered.get(key)
        if kept is None or kept[0] != source.etag or kept[1] != self.generation:
            return None
        self._rendered.move_to_end(key)
        return kept[2]

    async def flagged_page(self, source: CachedPage, name: NormalizedName, kind: PageKind) -> CachedPage:
        """``kind`` of ``name``'s pages, flagged, rendered from ``source``: the stored JSON page for
        a simple page's variant, the stored document for the JSON API.

        Rendering runs in a worker thread (a project may list thousands of files); the result
        is kept until the stored page or the policy changes.
        """
        kept = self.flagged_page_now(source, name, kind)
        if kept is not None:
            return kept
        generation, policy = self.generation, self._policy
        page = await asyncio.to_thread(_render, source, name, policy, kind, self._tag)
        if generation == self.generation:
            key = (name, kind)
            self._rendered[key] = (source.etag, generation, page)
            self._rendered.move_to_end(key)
            while len(self._rendered) > self._max_pages:
                self._rendered.popitem(last=False)
        return page


def flag_document(document: dict[str, Any], verdicts: Mapping[str, Verdict]) -> dict[str, Any]:
    """A JSON-API document with the files of each version in ``verdicts`` yanked (in ``releases``
    and ``urls``, and ``info`` when it describes such a version), in place; a reason the upstream
    gave comes first."""
    releases = document.get("releases")
    for version, files in releases.items() if isinstance(releases, dict) else ():
        verdict = verdicts.get(version)
        if verdict is not None and isinstance(files, list):
            for entry in files:
                _yank(entry, verdict)
    info = document.get("info")
    info_version = info.get("version") if isinstance(info, dict) else None
    verdict = verdicts.get(info_version) if isinstance(info_version, str) else None
    if verdict is not None:
        _yank(info, verdict)
        urls = document.get("urls")
        for entry in urls if isinstance(urls, list) else ():
            _yank(entry, verdict)
    return document


def _yank(entry: object, verdict: Verdict) -> None:
    if not isinstance(entry, dict):
        return
    own = entry.get("yanked_reason") if entry.get("yanked") else None
    entry["yanked"] = True
    entry["yanked_reason"] = f"{own}; {verdict.reason}" if own else verdict.reason


def _render(source: CachedPage, name: NormalizedName, policy: AdvisoryPolicy, kind: PageKind, tag: str) -> CachedPage:
    """The flagged page as a page of the cache: its own ETag, the stored page's time and serial."""
    if kind == JSON_API:
        document = json.loads(source.body)
        versions = [*document.get("releases", {}), document.get("info", {}).get("version")]
        verdicts = {
            version: verdict
            for version in versions
            if isinstance(version, str) and (verdict := policy.verdict(name, version)) is not None
        }
        body = json.dumps(flag_document(document, verdicts), separators=(",", ":")).encode()
        suffix = "json-api"
    else:
        page = parse_simple_project_json(source.body)
        flagged = flag_page(page, policy.verdicts(page))

        def keep_url(url: str) -> str:  # the stored page's URLs already point where they should
            return url

        if kind is PageVariant.V1_JSON:
            body = render_project_json(flagged, url_for=keep_url)
        else:
            body = render_project_html(flagged, url_for=keep_url, repository_meta=True)
        suffix = kind.name.lower()
    return CachedPage(
        path=f"{source.path}#advisories-{suffix}",
        body=body,
        etag=f'{source.etag[:-1]}-adv{tag}-{suffix}"',
        mtime=source.mtime,
        last_modified=source.last_modified,
        last_serial=source.last_serial,
        key=source.key,
    )
