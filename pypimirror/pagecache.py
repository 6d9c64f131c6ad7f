"""Pre-rendered pages served from memory: no read, no hash and (mostly) no system call on a hit.

Index pages are small, hot and change only when a sync replaces them (atomically, so a new
inode). :class:`PageCache` keeps their bytes in a least-recently-used map bounded by total bytes;
an entry is used only while the file's (inode, mtime_ns, size) is what it was when read. That is
checked by one ``os.stat`` at most once a second per page (``revalidate_after``), as nginx's
``open_file_cache_valid`` does: on this kind of machine a system call under load costs a few per
cent of a whole page request (``bench/serve.py``), and a replaced page is served at most a
second late, a delay no client of an index synced every few minutes can tell. Each entry carries what the handlers send
with it, computed once per load: an ETag built from mtime and size (never from the content), the
modification time, the page's serial, and its gzip encoding, compressed lazily on first demand.
Reads and compression of large bodies run in a worker thread, never on the IOLoop.
"""

from __future__ import annotations

__all__ = [
    "BLOCKING_LIMIT",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_REVALIDATE_AFTER_S",
    "CachedPage",
    "PageCache",
    "PageCacheStats",
    "SerialReader",
    "off_loop_if",
    "read_json_api_serial",
    "read_simple_html_serial",
    "read_simple_json_serial",
]

import asyncio
import email.utils
import errno
import gzip
import logging
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias, TypeVar

from pypimirror.errors import StorageError

logger = logging.getLogger(__name__)

#: The default bound of the cache: the bodies (plain and gzip) of every entry together.
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
#: How long a page is served from memory before its file is looked at again, in seconds.
DEFAULT_REVALIDATE_AFTER_S = 1.0
#: Bodies larger than this are read and compressed in a worker thread rather than on the IOLoop.
BLOCKING_LIMIT = 256 * 1024
# Fast to compress and within a few percent of level 9 on index pages.
_GZIP_LEVEL = 6

#: Finds a page's serial in its bytes; None when the page does not say.
SerialReader = Callable[[bytes], int | None]
#: A page file's path; plain strings are cheapest on the hot path.
PagePath: TypeAlias = str | os.PathLike[str]

_T = TypeVar("_T")

# A JSON key is the only place a quoted name can be followed by ':' (quotes inside strings are
# escaped), so these find keys, never text. The meta object holds no nested object.
_SIMPLE_JSON_SERIAL = re.compile(rb'"meta"\s*:\s*\{[^{}]*?"_last-serial"\s*:\s*(\d+)')
_JSON_API_SERIAL = re.compile(rb'"last_serial"\s*:\s*(\d+)')
_HTML_SERIAL = re.compile(rb"<!--SERIAL (\d+)-->\s*\Z")
# The HTML serial comment closes the page; only its tail is searched.
_HTML_TAIL = 64
# Errors that mean "no page by that name": missing, a file where a directory should be, a name
# too long for the filesystem, a symlink loop.
_NO_SUCH_PAGE = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG, errno.ELOOP})


def read_simple_json_serial(body: bytes) -> int | None:
    """``meta._last-serial`` of a PEP 691 page (project or root)."""
    match = _SIMPLE_JSON_SERIAL.search(body)
    return int(match[1]) if match else None


def read_simple_html_serial(body: bytes) -> int | None:
    """The ``<!--SERIAL n-->`` comment that ends a PyPI-style project page (and ours)."""
    match = _HTML_SERIAL.search(body, max(0, len(body) - _HTML_TAIL))
    return int(match[1]) if match else None


def read_json_api_serial(body: bytes) -> int | None:
    """``last_serial`` of a JSON-API document (``/pypi/<name>/json``)."""
    match = _JSON_API_SERIAL.search(body)
    return int(match[1]) if match else None


@dataclass(eq=False, slots=True)
class CachedPage:
    """One page file as read from disk, with what a response needs; only its gzip encoding and
    the time of its next check change once built.

    ``etag`` is a strong validator of these exact bytes (mtime and size in hex); the gzip
    encoding, a different representation, gets ``gzip_etag``. ``mtime`` is in seconds and
    ``last_modified`` is the same time as an HTTP date.
    """

    path: str
    body: bytes
    etag: str
    mtime: float
    last_modified: str
    last_serial: int | None
    key: tuple[int, int, int]  # (inode, mtime_ns, size): the file this was read from
    gzipped: bytes | None = None
    valid_until: float = 0.0  # the cache's clock: until then served without looking at the file

    @property
    def gzip_etag(self) -> str:
        """The ETag of the gzip encoding of this page (or of a pre-compressed file served as it)."""
        return self.etag[:-1] + '-gz"'


@dataclass(frozen=True, slots=True)
class PageCacheStats:
    """Counters since start, for /metrics and tests; ``bytes`` is what the entries hold now."""

    hits: int
    misses: int
    evictions: int
    entries: int
    bytes: int


class PageCache:
    """Page files by path, validated by one ``os.stat`` per lookup, bounded by ``max_bytes``.

    Meant for the IOLoop thread only (no locks). A page larger than ``max_bytes`` is served but
    not kept. Paths must already be safe: the cache reads whatever it is given. A path that
    names no page gives None, whatever the reason (missing, too long, not a directory); one that
    cannot be read raises :class:`~pypimirror.errors.StorageError`. A page found
    current is not checked again for ``revalidate_after`` seconds (0: checked on every lookup).
    """

    def __init__(
        self,
        max_bytes: int = DEFAULT_MAX_BYTES,
        *,
        revalidate_after: float = DEFAULT_REVALIDATE_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_bytes = max_bytes
        self._revalidate_after = revalidate_after
        self._clock = clock
        self._entries: OrderedDict[str, CachedPage] = OrderedDict()
        self._bytes = 0
        self._hits = self._misses = self._evictions = 0

    async def get(self, file: PagePath, read_serial: SerialReader | None = None) -> CachedPage | None:
        """The page at ``file``, from memory while the file is unchanged; None if there is none.

        ``read_serial`` extracts the page's serial when the file is (re)loaded.
        """
        fresh = self.get_fresh(file)
        if fresh is not None:
            return fresh
        path = os.fspath(file)
        now = self._clock()
        entry = self._entries.get(path)
        try:
            st = os.stat(path)
        except OSError as exc:
            self._forget(path)
            _raise_unless_absent(path, exc)
            return None
        if entry is not None and entry.key == _key_of(st):
            entry.valid_until = now + self._revalidate_after
            return self._hit(entry)
        self._misses += 1
        self._forget(path)
        try:
            page = await off_loop_if(st.st_size > BLOCKING_LIMIT, _load, path, read_serial)
        except OSError as exc:  # e.g. removed between the stat and the open
            _raise_unless_absent(path, exc)
            return None
        page.valid_until = now + self._revalidate_after
        self._store(path, page)
        return page

    def get_fresh(self, file: PagePath) -> CachedPage | None:
        """The page at ``file`` if memory holds it and it was found current less than
        ``revalidate_after`` ago; no system call, nothing awaited. None: ask :meth:`get`."""
        entry = self._entries.get(os.fspath(file))
        if entry is None or self._clock() >= entry.valid_until:
            return None
        return self._hit(entry)

    def _hit(self, entry: CachedPage) -> CachedPage:
        self._hits += 1
        self._entries.move_to_end(entry.path)
        return entry

    async def get_precompressed(self, path: PagePath, compressed_path: PagePath) -> CachedPage | None:
        """The pre-compressed sibling of ``path``, if it exists and is not older than ``path``.

        A sync writes the page first and its ``.gz`` right after; an older ``.gz`` (left by an
        interrupted sync) would be a stale page, so it is not used. The page itself is only
        stat-ed here, never read: a client taking gzip never makes the cache hold both.
        """
        try:
            page_mtime_ns = os.stat(path).st_mtime_ns
        except OSError as exc:
            _raise_unless_absent(os.fspath(path), exc)
            return None
        compressed = await self.get(compressed_path)
        if compressed is None or compressed.key[1] < page_mtime_ns:
            return None
        return compressed

    async def gzipped(self, page: CachedPage) -> bytes:
        """The gzip encoding of ``page``, compressed once and then kept with it."""
        if page.gzipped is not None:
            return page.gzipped
        compressed = await off_loop_if(len(page.body) > BLOCKING_LIMIT, _compress, page.body)
        if page.gzipped is None:  # not done meanwhile by a concurrent request
            page.gzipped = compressed
            if self._entries.get(page.path) is page:
                self._bytes += len(compressed)
                self._evict()
        return page.gzipped

    @property
    def stats(self) -> PageCacheStats:
        return PageCacheStats(self._hits, self._misses, self._evictions, len(self._entries), self._bytes)

    def _store(self, path: str, page: CachedPage) -> None:
        size = _size_of(page)
        if size > self.max_bytes:
            logger.debug("page %s (%d bytes) is larger than the page cache; not kept", path, size)
            return
        self._entries[path] = page
        self._bytes += size
        self._evict()

    def _forget(self, path: str) -> None:
        entry = self._entries.pop(path, None)
        if entry is not None:
            self._bytes -= _size_of(entry)

    def _evict(self) -> None:
        while self._bytes > self.max_bytes and self._entries:
            _, entry = self._entries.popitem(last=False)
            self._bytes -= _size_of(entry)
            self._evictions += 1


def _raise_unless_absent(path: str, exc: OSError) -> None:
    """Nothing when ``exc`` says there is no page at ``path``; otherwise the page cannot be read
    (no permission, an I/O error, out of descriptors, a directory in its place), which raises a
    :class:`~pypimirror.errors.StorageError` naming the path, for the caller to report."""
    if exc.errno not in _NO_SUCH_PAGE:
        raise StorageError(f"cannot read page {path}: {exc.strerror or exc}") from exc


def _key_of(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _size_of(page: CachedPage) -> int:
    return len(page.body) + (len(page.gzipped) if page.gzipped is not None else 0)


def _load(path: str, read_serial: SerialReader | None) -> CachedPage:
    """Read the file; the key comes from the open file, so bytes and validators always agree."""
    with open(path, "rb") as handle:
        st = os.fstat(handle.fileno())
        body = handle.read()
    return CachedPage(
        path=path,
        body=body,
        etag=f'"{st.st_mtime_ns:x}-{st.st_size:x}"',
        mtime=st.st_mtime,
        last_modified=email.utils.formatdate(int(st.st_mtime), usegmt=True),
        last_serial=read_serial(body) if read_serial is not None else None,
        key=_key_of(st),
    )


def _compress(body: bytes) -> bytes:
    # mtime=0: the same page always compresses to the same bytes.
    return gzip.compress(body, compresslevel=_GZIP_LEVEL, mtime=0)


async def off_loop_if(blocking: bool, fn: Callable[..., _T], *args: object) -> _T:
    """``fn(*args)``, in the default executor when it would block the loop for long."""
    if not blocking:
        return fn(*args)
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
