"""Package files and their ``.metadata``: ``{prefix}/packages/ab/cd/<hash>/<filename>``.

The path is checked by :func:`~pypimirror.pkgpath.parse_package_path` before anything touches
the disk (a bad one is a 404), looked up in the tiers, hottest first, without following a symlink
(a miss is remembered for a second, :mod:`pypimirror.tierlookup`), and opened with
``O_NOFOLLOW``; so no file outside the tiers is ever opened. A file we hold is
sent like a static file: ``ETag`` from mtime and size (cheap, and it changes when the file is
replaced), ``Last-Modified``, 304, one ``Range`` (206, or 416), ``If-Range``, HEAD. Its bytes go
out in 1 MiB chunks, each flushed before the next is read, through one reused buffer per
download (no 1 MiB allocation per chunk); a download that starts while the process's buffer
budget is spent (:mod:`pypimirror.buffers`) goes out in 64 KiB chunks. A chunk in the page
cache is read on the IOLoop (``RWF_NOWAIT``: ~0.1 ms, less than a thread round trip); only a chunk that needs the disk is
read in a worker thread, so a cold disk tier never stalls the loop. A file we do not hold is a 302 to the
upstream's ``redirect_url``, or, for clients whose network ``ip_modes`` maps to ``proxy``, the
upstream's answer from ``packages_url`` streamed through us (:mod:`.proxy`).

A file we hold is sent only if its size (from the ``fstat`` done anyway) is the one its stored
page lists: a truncated or grown copy would fail every installer's hash check, so it is answered
as a miss instead, and logged once (the cache job replaces it). A file no page lists is sent as
it is. The page's files are held in memory (:class:`~pypimirror.listedfiles.ListedFiles`), so
the check is a dict lookup for a hot project; a cold one's page is read in a worker thread.
The listed size also lets proxy mode tell a body the upstream did not frame was cut short.

With the advisory policy on (:mod:`pypimirror.advisorypages`), a GET or HEAD of a distribution
it blocks is a 403 naming the advisories in the body and in ``X-PyPI-Mirror-Advisories``, and
is no vote.

Votes: a GET of a distribution file offers one vote (never blocking), whether the file is local,
redirected or proxied. HEAD does not vote: it is what size probes, link checkers and our own cache job
send, none of which installs anything. Nor does ``.metadata``: resolvers fetch it for many
candidate versions they never download, so counting it would make unused files look popular.
The same downloads, once answered, count in the live hit rate (:mod:`pypimirror.hitrate`).
"""

from __future__ import annotations

__all__ = [
    "ADVISORIES_HEADER",
    "PackageFileHandler",
    "UnsatisfiableRange",
    "VoteSink",
    "content_type_for",
    "select_range",
]

import asyncio
import errno
import logging
import os
import re
import stat
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from tornado.web import HTTPError

from pypimirror.advisorypages import AdvisoryPages
from pypimirror.buffers import BufferBudget
from pypimirror.clientip import IPModeMatcher
from pypimirror.errors import UnsafePathError
from pypimirror.httpdate import parse_http_date
from pypimirror.listedfiles import NOT_LOADED, ListedFiles
from pypimirror.metrics import Metrics
from pypimirror.pkgpath import PackagePath, parse_package_path
from pypimirror.tierlookup import TierLookup
from pypimirror.upstream import UpstreamClient

from .base import CHUNK_SIZE, ClientGone, RequestContext
from .proxy import ProxyingHandler

logger = logging.getLogger(__name__)

#: The header of a 403 for a file the advisory policy blocks: the advisories' IDs, comma-separated.
ADVISORIES_HEADER = "X-PyPI-Mirror-Advisories"

# RFC 3986 pchar plus '/': a decoded package path re-encoded for a Location header.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
_IS_URL_SAFE = re.compile(r"[A-Za-z0-9/:@!$&'()*+,;=._~-]*").fullmatch
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_CONTENT_TYPES = (
    (".whl", "application/zip"),
    (".zip", "application/zip"),
    (".egg", "application/zip"),
    (".tar.gz", "application/gzip"),
    (".tgz", "application/gzip"),
    (".tar.bz2", "application/x-bzip2"),
    (".metadata", "text/plain; charset=utf-8"),
)
_DEFAULT_CONTENT_TYPE = "application/octet-stream"
# preadv's "fail with EAGAIN rather than wait for the disk" (Linux 4.14+); 0 where it is missing.
_RWF_NOWAIT: int = getattr(os, "RWF_NOWAIT", 0)
# A file system that cannot say whether a read would block answers one of these: use a thread.
_NOWAIT_UNSUPPORTED = frozenset({errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS})
# The chunk size of a download that finds the buffer budget spent: it never waits for memory.
_SMALL_CHUNK_SIZE = 64 * 1024
# Chunk buffers kept for the next downloads, per size (the IOLoop thread's alone); a burst beyond
# this many concurrent downloads allocates, and the extra buffers are freed when done.
_SPARE_BUFFERS: dict[int, list[bytearray]] = {CHUNK_SIZE: [], _SMALL_CHUNK_SIZE: []}
_MAX_SPARE_BUFFERS = 16


class VoteSink(Protocol):
    """Takes votes without blocking (:class:`pypimirror.votes.VoteRecorder`)."""

    def offer(self, file_path: str, network_prefix: str | None, user_agent: str | None) -> bool: ...


class UnsatisfiableRange(Exception):
    """A well-formed ``Range`` that lies wholly outside the file (answer 416)."""


def select_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end_exclusive)`` of a single ``bytes=`` range, or None to send the whole file.

    A missing, multi-range or malformed header is ignored (RFC 9110 §14.2), as is a range that
    covers the whole file. A well-formed range starting past the end, or a zero-length suffix,
    raises :class:`UnsatisfiableRange`.
    """
    if header is None or not header.startswith("bytes=") or "," in header:
        return None
    first, dash, last = header[len("bytes=") :].strip().partition("-")
    first, last = first.strip(), last.strip()
    if not dash or not (first or last) or not all(part.isdigit() and part.isascii() for part in (first, last) if part):
        return None
    if not first:
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise UnsatisfiableRange(header)
        selected = (max(size - suffix, 0), size)
    else:
        start = int(first)
        end = int(last) + 1 if last else size
        if last and end <= start:
            return None  # last before first: not a valid range, so ignored
        if start >= size:
            raise UnsatisfiableRange(header)
        selected = (start, min(end, size))
    return None if selected == (0, size) else selected


def content_type_for(filename: str) -> str:
    """The ``Content-Type`` of a package file, by its name; never with a ``Content-Encoding``."""
    lowered = filename.lower()
    for suffix, content_type in _CONTENT_TYPES:
        if lowered.endswith(suffix):
            return content_type
    return _DEFAULT_CONTENT_TYPE


class PackageFileHandler(ProxyingHandler):
    """Serves the files of the tiers; ``route_base`` is ``{prefix}/packages/``.

    A miss goes to ``redirect_url`` (302) or is proxied from ``packages_url`` through
    ``upstream``, as ``ip_modes`` says for the client.
    """

    def initialize(
        self,
        *,
        context: RequestContext,
        route_base: str,
        tiers: TierLookup,
        redirect_url: str,
        votes: VoteSink,
        ip_modes: IPModeMatcher,
        packages_url: str,
        upstream: UpstreamClient,
        listed: ListedFiles,
        metrics: Metrics,
        advisories: AdvisoryPages | None = None,
    ) -> None:
        self.init_base(context)
        self.advisories = advisories
        self.route_base = route_base
        self.tiers = tiers
        self.redirect_url = redirect_url
        self.votes = votes
        self.ip_modes = ip_modes
        self.packages_url = packages_url
        self.upstream = upstream
        self.listed = listed
        self.metrics = metrics

    def get(self) -> Awaitable[None] | None:
        path = self._package_path()
        if self._refused_by_advisories(path):
            return None
        if not path.is_metadata:
            self.download = path.relpath
            self.votes.offer(path.relpath, self.client.network, self.request.headers.get("User-Agent"))
        return self._serve(path, include_body=True)

    def head(self) -> Awaitable[None] | None:
        path = self._package_path()
        if self._refused_by_advisories(path):
            return None
        return self._serve(path, include_body=False)

    def _refused_by_advisories(self, path: PackagePath) -> bool:
        """Answer 403 for a distribution the advisory policy blocks (its ``.metadata`` stays readable)."""
        if self.advisories is None or path.is_metadata:
            return False
        verdict = self.advisories.blocked(path.filename)
        if verdict is None:
            return False
        self.set_status(403)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header(ADVISORIES_HEADER, ", ".join(verdict.ids))
        self.finish(f"403 Forbidden: {path.filename} is blocked by advisories: {verdict.reason}\n")
        return True

    def _package_path(self) -> PackagePath:
        try:
            # The raw path: Tornado would decode a captured group, turning %2F into structure.
            return parse_package_path(self.request.path[len(self.route_base) :])
        except UnsafePathError as exc:
            logger.debug("refused package path: %s", exc)
            raise HTTPError(404) from None

    def _serve(self, path: PackagePath, *, include_body: bool) -> Awaitable[None] | None:
        """A 302 is answered at once (no coroutine, the common miss); an awaitable means more to do."""
        found = self.tiers.find(path)
        fd = _open_regular_file(found[1]) if found is not None else None
        if fd is None:
            return self._answer_miss(path)
        return self._send_and_close(fd, path, include_body=include_body)

    def _answer_miss(self, path: PackagePath) -> Awaitable[None] | None:
        """The one place that answers for a file we do not hold: proxy or 302, per client network."""
        relpath = path.relpath if _IS_URL_SAFE(path.relpath) else quote(path.relpath, safe=_PATH_SAFE)
        if self.ip_modes.mode_for(self.client.ip) == "proxy":
            return self._proxy(path, f"{self.packages_url}/{relpath}")
        self.redirect(f"{self.redirect_url}/{relpath}", status=302)  # the query is dropped
        return None

    async def _proxy(self, path: PackagePath, url: str) -> None:
        """Relay ``url``; a body without a length is checked against the size the page lists."""
        listed = None
        if self.request.method == "GET" and not path.is_metadata:
            listed = await self.listed.lookup(path.relpath)
        await self.relay_from_upstream(self.upstream, url, expected_size=listed.size if listed is not None else None)

    async def _send_and_close(self, fd: int, path: PackagePath, *, include_body: bool) -> None:
        try:
            st = os.fstat(fd)  # of the open file: what we send is what the validators describe
            if not path.is_metadata:  # a page lists no .metadata sizes
                listed = self.listed.get_fresh(path.relpath)  # a hot project: a dict lookup
                if listed is NOT_LOADED:
                    listed = await self.listed.lookup(path.relpath)
                if listed is not None and listed.size != st.st_size:
                    os.close(fd)
                    fd = -1
                    await self._answer_unlike_page(path, st.st_size, listed.size)
                    return
            await self._send_file(fd, st, path.filename, include_body=include_body)
        finally:
            if fd >= 0:
                os.close(fd)

    async def _answer_unlike_page(self, path: PackagePath, size: int, listed_size: int) -> None:
        """A held file of another size than its page lists would fail the client's hash check:
        answer as for a file we do not hold (the cache job replaces it)."""
        if self.listed.is_new_mismatch(path.relpath, size):
            logger.warning("%s is %d bytes in the cache but its page lists %d; answering as for a file not held",
                           path.relpath, size, listed_size)
        answer = self._answer_miss(path)
        if answer is not None:
            await answer

    async def _send_file(self, fd: int, st: os.stat_result, filename: str, *, include_body: bool) -> None:
        size = st.st_size
        etag = f'"{st.st_mtime_ns:x}-{size:x}"'
        self.set_header("Content-Type", content_type_for(filename))
        self.set_header("Accept-Ranges", "bytes")
        self.set_header("ETag", etag)
        self.set_header("Last-Modified", datetime.fromtimestamp(int(st.st_mtime), UTC))
        if self.is_not_modified(st.st_mtime):
            self.set_status(304)
            self.finish()
            return
        range_header = self.request.headers.get("Range")
        if not self._if_range_holds(etag, st.st_mtime):
            range_header = None
        try:
            selected = select_range(range_header, size)
        except UnsatisfiableRange:
            self._answer_unsatisfiable(size)
            return
        start, end = selected if selected is not None else (0, size)
        if selected is not None:
            self.set_status(206)
            self.set_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.set_header("Content-Length", str(end - start))
        if include_body:
            await self._stream(fd, start, end)
        else:
            self.finish()

    def _if_range_holds(self, etag: str, mtime: float) -> bool:
        """``If-Range`` (RFC 9110 §13.1.5): the range applies only to the representation named."""
        validator = self.request.headers.get("If-Range")
        if validator is None:
            return True
        validator = validator.strip()
        if validator.startswith(('"', "W/")):
            return validator == etag  # strong comparison: a weak tag never matches
        return parse_http_date(validator) == int(mtime)

    def _answer_unsatisfiable(self, size: int) -> None:
        # Not send_error(): it would clear the Content-Range header the client needs.
        self.set_status(416)
        self.set_header("Content-Range", f"bytes */{size}")
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.clear_header("Content-Length")
        self.finish("416 Range Not Satisfiable\n")

    async def _stream(self, fd: int, start: int, end: int) -> None:
        offset = start
        try:
            await self.flush_or_abort()  # the headers; the chunks then go to the connection as they are
            with _chunk_buffer(self.buffers, end - start) as buffer:
                while offset < end:
                    chunk = buffer[: min(len(buffer), end - offset)]
                    size = await _read_into(fd, chunk, offset)
                    if not size:
                        logger.error("%s shrank while being sent; closing the connection", self.request.path)
                        self.close_connection()
                        return
                    await self.send_chunk(chunk[:size])
                    offset += size
        except ClientGone:
            return
        self.finish()


@contextmanager
def _chunk_buffer(budget: BufferBudget, length: int) -> Iterator[memoryview]:
    """A buffer to send ``length`` bytes: CHUNK_SIZE while ``budget`` has room (small when that is
    enough), else small; reused by the next download only if this one completed (a stalled
    connection's stream may still hold a view of it)."""
    size = budget.take(CHUNK_SIZE if length > _SMALL_CHUNK_SIZE else _SMALL_CHUNK_SIZE, _SMALL_CHUNK_SIZE)
    spares = _SPARE_BUFFERS[size]
    buffer = spares.pop() if spares else bytearray(size)
    try:
        with memoryview(buffer) as view:
            yield view
    finally:
        budget.give_back(size)
    if len(spares) < _MAX_SPARE_BUFFERS:
        spares.append(buffer)


async def _read_into(fd: int, chunk: memoryview, offset: int) -> int:
    """Fill ``chunk`` from ``offset`` (fewer bytes near the end, or when only part is cached).

    What the page cache holds is read at once; what needs the disk is read in a worker thread.
    """
    if _RWF_NOWAIT:
        try:
            return os.preadv(fd, [chunk], offset, _RWF_NOWAIT)
        except BlockingIOError:
            pass
        except OSError as exc:
            if exc.errno not in _NOWAIT_UNSUPPORTED:
                raise
    return await asyncio.get_running_loop().run_in_executor(None, os.preadv, fd, [chunk], offset)


def _open_regular_file(path: Path) -> int | None:
    """A read-only descriptor of ``path`` if it is (still) a regular file; never through a symlink."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        logger.debug("cannot open %s: %s", path, exc)
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd
