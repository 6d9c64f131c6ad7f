"""What the stored project pages list: each package path's size and sha256, as the sync wrote them.

The index sync stores every project's PEP 691 page (``simple/<name>/index.v1_json``); its files,
with their sizes and digests, are all the mirror knows of what a package path should hold. Votes
count only for a path a page lists, serving refuses a local file whose size differs from the
page's, proxying checks a body the upstream did not frame, and the cache job downloads only
what a page lists: all of them ask here. A path names its project in its file name (wheel,
sdist, or a legacy ``.egg``/``.tar.bz2``/... name); a name that says no project is listed nowhere.

:func:`lookup_listed_files` reads the pages afresh (the cache job, once per run).
:class:`ListedFiles` keeps each project's files in memory for the server: a hit is a dict
lookup, the page is looked at again (one ``stat``) at most once a second, as the page cache does,
and re-read only when the sync replaced it (another inode or mtime); reading and parsing a page
runs in a worker thread, never on the IOLoop. It is bounded by the number of files it holds.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_MAX_FILES",
    "DEFAULT_REVALIDATE_AFTER_S",
    "NOT_LOADED",
    "ListedFile",
    "ListedFiles",
    "NotLoaded",
    "files_on_this_mirror",
    "iter_listed_files",
    "lookup_listed_files",
    "package_path_of",
    "project_of",
    "read_listed_files",
]

import asyncio
import enum
import functools
import logging
import os
import re
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from packaging.utils import NormalizedName, canonicalize_name

from pypimirror.distfilename import parse_dist_filename
from pypimirror.errors import MalformedUpstreamError, UnsafePathError
from pypimirror.pagemodel import DistFile, ProjectPage, parse_simple_project_json
from pypimirror.pkgpath import parse_package_path
from pypimirror.storage import RepoLayout, is_normalized_project_name

logger = logging.getLogger(__name__)

#: The most listed files :class:`ListedFiles` keeps (all projects together; ~300 bytes each).
DEFAULT_MAX_FILES = 100_000
#: How long a project's files are used before its page file is looked at again, in seconds.
DEFAULT_REVALIDATE_AFTER_S = 1.0
# Old formats packaging does not parse: ``name-version[-pyX.Y[-platform]]`` plus one of these.
_LEGACY_SUFFIXES = (".egg", ".tar.bz2", ".tbz", ".tar.xz", ".txz", ".tar.Z", ".tar", ".tgz", ".zip", ".tar.gz")
# In a legacy name the version starts at the first '-' followed by a digit.
_LEGACY_NAME = re.compile(r"(.+?)-\d")
# project_of's answers are cached for paths this long at most; pkgpath allows 1024 bytes.
_CACHEABLE_PATH = 512
_PROJECTS_CACHED = 8192
# Sizes seen wrong and already logged, kept so a file that stays wrong is logged once.
_MISMATCHES_REMEMBERED = 4096


@dataclass(frozen=True, slots=True)
class ListedFile:
    """A file as a stored page lists it; a digest is None when the page gives none."""

    path: str
    size: int
    sha256: str | None
    metadata_sha256: str | None


class NotLoaded(enum.Enum):
    """:meth:`ListedFiles.get_fresh`'s "ask :meth:`ListedFiles.lookup`": not known without I/O."""

    TOKEN = enum.auto()


NOT_LOADED: Final = NotLoaded.TOKEN


def project_of(path: str) -> NormalizedName | None:
    """The project a distribution path belongs to, from its file name; None when it names none."""
    if len(path) > _CACHEABLE_PATH:
        return _project_of(path)
    return _cached_project_of(path)


def _project_of(path: str) -> NormalizedName | None:
    filename = path.rpartition("/")[2]
    parsed = parse_dist_filename(filename)
    name = parsed.project if parsed is not None else _legacy_project_of(filename)
    return name if name is not None and is_normalized_project_name(name) else None


_cached_project_of = functools.lru_cache(maxsize=_PROJECTS_CACHED)(_project_of)


def _legacy_project_of(filename: str) -> NormalizedName | None:
    """The project of an ``.egg``, ``.tar.bz2``, ... (or a non-standard ``.tar.gz``) name."""
    for suffix in _LEGACY_SUFFIXES:
        if filename.endswith(suffix):
            match = _LEGACY_NAME.match(filename[: -len(suffix)])
            return canonicalize_name(match[1]) if match else None
    return None


def read_listed_files(layout: RepoLayout, name: NormalizedName, prefix: str) -> dict[str, ListedFile]:
    """Every file the stored page of ``name`` lists under ``{prefix}/packages/``; blocking.

    A missing page lists nothing; so does an unreadable or malformed one (logged). Files whose
    URL does not point at this mirror are not ours to serve, count or cache.
    """
    return _read_page(layout.project_page(name, "index.v1_json"), name, prefix)[1]


def lookup_listed_files(repo_path: Path, prefix: str, paths: Iterable[str]) -> dict[str, ListedFile]:
    """The stored page's entry of each of ``paths`` that one lists; blocking, each page read once."""
    found: dict[str, ListedFile] = {}
    for listed in iter_listed_files(repo_path, prefix, paths):
        found.update(listed)
    return found


def iter_listed_files(repo_path: Path, prefix: str, paths: Iterable[str]) -> Iterator[dict[str, ListedFile]]:
    """:func:`lookup_listed_files` one project at a time, so only one page's entries are held at
    once (the cache job's check of a whole cache); blocking."""
    by_project: dict[NormalizedName, list[str]] = defaultdict(list)
    for path in paths:
        name = project_of(path)
        if name is not None:
            by_project[name].append(path)
    layout = RepoLayout(repo_path)
    for name, wanted in sorted(by_project.items()):
        listed = read_listed_files(layout, name, prefix)
        yield {path: listed[path] for path in wanted if path in listed}


_PageKey = tuple[int, int, int] | None  # (inode, mtime_ns, size) of the page read; None: no page


def _read_page(page_path: Path, name: NormalizedName, prefix: str) -> tuple[_PageKey, dict[str, ListedFile]]:
    """The page's key and files; the key comes from the open file, so the two always agree."""
    try:
        with open(page_path, "rb") as handle:
            st = os.fstat(handle.fileno())
            data = handle.read()
    except (FileNotFoundError, NotADirectoryError):
        return None, {}
    except OSError as exc:
        logger.warning("cannot read the stored page of %s: %s", name, exc)
        return None, {}
    key = (st.st_ino, st.st_mtime_ns, st.st_size)
    try:
        page = parse_simple_project_json(data)
    except MalformedUpstreamError as exc:
        logger.warning("cannot read the stored page of %s: %s", name, exc)
        return key, {}
    files: dict[str, ListedFile] = {}
    for path, dist in files_on_this_mirror(page, prefix):
        metadata = dist.core_metadata if isinstance(dist.core_metadata, str) else None
        files[path] = ListedFile(path, dist.size, dist.sha256, metadata)
    return key, files


def files_on_this_mirror(page: ProjectPage, prefix: str) -> Iterator[tuple[str, DistFile]]:
    """Each file of a stored page whose URL points at ``{prefix}/packages/``, with its package
    path; files linked elsewhere (or by a path that is not a package path) are not ours."""
    for dist in page.files:
        path = package_path_of(dist.url, prefix)
        if path is not None:
            yield path, dist


def package_path_of(url: str, prefix: str) -> str | None:
    """The package path a stored page's file URL names under ``{prefix}/packages/``; None for a
    URL elsewhere or a path that is not a package path."""
    base = prefix.rstrip("/") + "/packages/"
    if not url.startswith(base):
        return None
    try:
        return parse_package_path(url[len(base) :]).relpath
    except UnsafePathError:
        return None


@dataclass(frozen=True, slots=True)
class _Unread:
    """A project whose listing must be checked against its page file (or read) for an answer."""

    name: NormalizedName


@dataclass(slots=True)
class _Listing:
    """One project's files as read from its page, and until when they are used unchecked."""

    key: _PageKey
    files: dict[str, ListedFile]
    valid_until: float

    @property
    def weight(self) -> int:
        return max(1, len(self.files))


class ListedFiles:
    """Each project's listed files, in memory while its page file is unchanged (module docstring).

    The IOLoop uses :meth:`get_fresh` and :meth:`lookup` of an instance of its own, lock-free on
    the request path. Worker threads (the vote writer, the hit counters' flusher) share another
    through :meth:`lookup_blocking`, which takes a lock, so a page both need is read once.
    ``max_files`` bounds
    the files held (a project with no page counts as one); the least recently used projects
    go first, but the one just read is always kept, however large.
    """

    def __init__(
        self,
        repo_path: Path,
        prefix: str,
        *,
        max_files: int = DEFAULT_MAX_FILES,
        revalidate_after: float = DEFAULT_REVALIDATE_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._layout = RepoLayout(repo_path)
        self._prefix = prefix
        self._max_files = max_files
        self._revalidate_after = revalidate_after
        self._clock = clock
        self._projects: OrderedDict[NormalizedName, _Listing] = OrderedDict()
        self._held = 0
        self._loading: dict[NormalizedName, asyncio.Future[_Listing]] = {}
        self._mismatches: set[tuple[str, int]] = set()
        self._blocking = threading.Lock()  # lookup_blocking's callers are threads of their own

    def get_fresh(self, path: str) -> ListedFile | None | Literal[NotLoaded.TOKEN]:
        """The page's entry for ``path`` (None: no page lists it) when memory holds its project
        and it was found current within ``revalidate_after``; else :data:`NOT_LOADED`.
        No system call, nothing awaited."""
        name = project_of(path)
        if name is None:
            return None
        listing = self._projects.get(name)
        if listing is None or self._clock() >= listing.valid_until:
            return NOT_LOADED
        self._projects.move_to_end(name)
        return listing.files.get(path)

    async def lookup(self, path: str) -> ListedFile | None:
        """The page's entry for ``path``, None if no stored page lists it; reads in a thread."""
        found = self._held_or_project(path)
        if not isinstance(found, _Unread):
            return found
        name, listing = found.name, self._current(found.name)
        if listing is None:
            loading = self._loading.get(name)
            if loading is None:  # one read per project, however many requests wait for it
                loading = self._loading[name] = asyncio.ensure_future(asyncio.to_thread(self._read, name))
                loading.add_done_callback(functools.partial(self._loaded, name))
            listing = await asyncio.shield(loading)
        return listing.files.get(path)

    def lookup_blocking(self, path: str) -> ListedFile | None:
        """:meth:`lookup` for worker threads: the page is read right here when needed."""
        with self._blocking:
            found = self._held_or_project(path)
            if not isinstance(found, _Unread):
                return found
            listing = self._current(found.name)
            if listing is None:
                listing = self._read(found.name)
                self._store(found.name, listing)
            return listing.files.get(path)

    def _held_or_project(self, path: str) -> ListedFile | None | _Unread:
        """:meth:`get_fresh`'s answer, or the project whose page must be looked at for ``path``."""
        found = self.get_fresh(path)
        if found is not NOT_LOADED:
            return found
        name = project_of(path)
        assert name is not None, "get_fresh answers for a path that names no project"
        return _Unread(name)

    def is_new_mismatch(self, path: str, size: int) -> bool:
        """True the first time a held file of ``path`` is seen with a ``size`` its page does not
        list, so that it is logged once rather than on every request."""
        key = (path, size)
        if key in self._mismatches:
            return False
        if len(self._mismatches) >= _MISMATCHES_REMEMBERED:
            self._mismatches.clear()
        self._mismatches.add(key)
        return True

    def _current(self, name: NormalizedName) -> _Listing | None:
        """The held listing of ``name`` if its page file is unchanged (one ``stat``), else None."""
        listing = self._projects.get(name)
        if listing is None:
            return None
        try:
            st = os.stat(self._layout.project_page(name, "index.v1_json"))
        except OSError:
            key: _PageKey = None
        else:
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key != listing.key:
            return None
        listing.valid_until = self._clock() + self._revalidate_after
        self._projects.move_to_end(name)
        return listing

    def _read(self, name: NormalizedName) -> _Listing:
        """Read the page (blocking; a worker thread's job)."""
        key, files = _read_page(self._layout.project_page(name, "index.v1_json"), name, self._prefix)
        return _Listing(key, files, self._clock() + self._revalidate_after)

    def _loaded(self, name: NormalizedName, loading: asyncio.Future[_Listing]) -> None:
        del self._loading[name]
        if not loading.cancelled() and loading.exception() is None:
            self._store(name, loading.result())

    def _store(self, name: NormalizedName, listing: _Listing) -> None:
        old = self._projects.pop(name, None)
        if old is not None:
            self._held -= old.weight
        self._projects[name] = listing
        self._held += listing.weight
        while self._held > self._max_files and len(self._projects) > 1:
            _, evicted = self._projects.popitem(last=False)
            self._held -= evicted.weight
