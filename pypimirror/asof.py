"""The ``+asof/{moment}`` view: the index as it was at a moment, from the stored pages and the history.

:class:`AsOfView` is a view like the others (:mod:`pypimirror.views`): it turns a project's
current page into the page as it was (:func:`pypimirror.history.page_as_of`: files uploaded by
then and not yet removed then, their yank state then, the project's status then) and the root
list into the projects that existed then. On top of that the rule of every view holds: a file
without an upload time is left out. Reading the history blocks, so the serving side runs it in
a worker thread (the view says so with ``blocking``).

A moment is refused, as a 404 with the reason, when it lies in the future (the index then is not
known yet), before the history began (the mirror cannot tell what was yanked or removed then),
or when no history has been recorded at all.
"""

from __future__ import annotations

__all__ = ["AsOfView", "AsOfViews", "HistoryAccess", "format_as_of"]

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine

from packaging.utils import NormalizedName

from pypimirror.errors import UnsafePathError
from pypimirror.history import history_start, page_as_of, project_as_of, projects_as_of
from pypimirror.pagemodel import ProjectPage
from pypimirror.pages import RootEntry
from pypimirror.pkgpath import find_in_tiers, parse_package_path
from pypimirror.views import (
    ViewedProject,
    ViewError,
    format_moment,
    keep_files,
    one_line,
    parse_moment,
    parse_upload_time,
)

_NO_UPLOAD_TIME = "it has no upload time, so when it appeared cannot be told"


class HistoryAccess:
    """What an as-of view reads: the history in the database and, for files removed upstream
    since, whether a tier still holds them. Every method blocks (database, ``lstat``).

    The views call it from worker threads of their own, outside the database's reader pool;
    one read at a time keeps them to one connection beyond the pool's, whatever the load.
    """

    def __init__(self, engine: Engine, tier_roots: Sequence[Path], prefix: str) -> None:
        self._engine = engine
        self._tier_roots = tuple(tier_roots)
        self.prefix = prefix
        self._one_at_a_time = threading.Lock()

    def start(self) -> float | None:
        with self._one_at_a_time:
            return history_start(self._engine)

    def project(self, name: NormalizedName, page: ProjectPage | None, moment: float) -> ProjectPage | None:
        """The page of ``name`` as it was at ``moment``, from its current ``page`` (None: the
        project has none now, e.g. removed upstream since); None if it did not exist then."""
        with self._one_at_a_time:
            as_of = project_as_of(self._engine, name, moment)
        if as_of is None:
            return None
        return page_as_of(page, as_of, prefix=self.prefix, held_locally=self.held_locally)

    def root(self, moment: float) -> list[RootEntry]:
        with self._one_at_a_time:
            return projects_as_of(self._engine, moment)

    def held_locally(self, relpath: str) -> bool:
        try:
            return find_in_tiers(self._tier_roots, parse_package_path(relpath)) is not None
        except UnsafePathError:
            return False


@dataclass(frozen=True, slots=True)
class AsOfView:
    """The index as it was at ``moment`` (POSIX seconds), at ``{prefix}/{label}/``."""

    label: str
    moment: float
    history: HistoryAccess

    @property
    def blocking(self) -> bool:
        return True

    def apply(self, page: ProjectPage, now: float) -> ViewedProject:
        return self._view(page.name, page)

    def apply_absent(self, name: NormalizedName, now: float) -> ViewedProject:
        """A project removed upstream since: its files a tier still holds, as they were then."""
        return self._view(name, None)

    def _view(self, name: NormalizedName, page: ProjectPage | None) -> ViewedProject:
        self._check_moment()
        then = self.history.project(name, page, self.moment)
        if then is None:
            raise ViewError(f"{name} did not exist at {format_as_of(self.moment)}")
        kept = keep_files(then, (dist for dist in then.files if dist.upload_time is not None))
        listed = {dist.filename for dist in kept.files}
        current = page.files if page is not None else ()
        refused = {dist.filename: self._why_not_listed(dist.upload_time)
                   for dist in (*current, *then.files) if dist.filename not in listed}
        return ViewedProject(kept, refused, math.inf, -math.inf)

    def root(self, entries: Sequence[RootEntry]) -> Sequence[RootEntry]:
        self._check_moment()
        return self.history.root(self.moment)

    def _check_moment(self) -> None:
        """Refuse a moment the history cannot answer for (blocking: reads its start)."""
        start = self.history.start()
        if start is None:
            raise ViewError("this mirror has not recorded an index history yet")
        if self.moment < start:
            raise ViewError(f"{format_as_of(self.moment)} is before the index history began ({format_as_of(start)})")

    def _why_not_listed(self, upload_time: str | None) -> str:
        if upload_time is None:
            return _NO_UPLOAD_TIME
        uploaded = parse_upload_time(upload_time)
        if uploaded.timestamp() > self.moment:
            return f"uploaded {format_moment(uploaded)}, after {format_as_of(self.moment)}"
        return f"not offered at {format_as_of(self.moment)} (removed or quarantined then)"


def format_as_of(moment: float) -> str:
    """A moment as an as-of view names it: RFC 3339 in UTC, microseconds only when there are any."""
    when = datetime.fromtimestamp(moment, UTC)
    fraction = f".{when.microsecond:06d}" if when.microsecond else ""
    return when.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"


class AsOfViews:
    """Makes the view ``+asof/{timestamp}`` names (for :class:`~pypimirror.views.ViewResolver`)."""

    def __init__(self, history: HistoryAccess, *, clock: Callable[[], float] = time.time) -> None:
        self.history = history
        self._clock = clock

    def __call__(self, argument: str) -> AsOfView:
        """The view, or :class:`ViewError` for a malformed or future moment. Its label is the
        moment's canonical text, so every spelling of one moment shares its pages and links."""
        try:
            moment = parse_moment(argument).timestamp()
        except ValueError as exc:
            raise ViewError(f"+asof/{one_line(argument)}: {one_line(str(exc))}") from None
        if moment > self._clock():
            raise ViewError(f"{format_as_of(moment)} is in the future: the index then is not known yet")
        return AsOfView(label=f"+asof/{format_as_of(moment)}", moment=moment, history=self.history)
