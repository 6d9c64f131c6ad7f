"""A fake upstream package index: a real Tornado server on 127.0.0.1 that answers like PyPI.

Why it exists: the mirror's sync, proxy and cache code, and real pip and uv, must run against
answers shaped like the public index's (PEP 503/691 simple pages, PEP 658 ``.metadata``, the
JSON API, XML-RPC, ``X-PyPI-Last-Serial``, the ``ab/cd/<hash>/<file>`` layout), failures included.

What it promises:

* It serves from its own thread with its own asyncio loop, so a test that blocks on a subprocess
  (``pip download``, ``pypimirror sync --once``) or runs its own IOLoop still gets answers.
* All state sits behind one lock; tests change it while it serves. Every change gives the
  project a new value of one global serial, as PyPI's journal does.
* Files are real wheels and sdists, built lazily and deterministically (see ``fakedists``).
* A fault (``fail_next``, ``delay``, ``truncate_next``, ``send_unframed_next``, ...) hits the next matching request(s)
  only, then clears itself (``times=None``: every matching request, until ``clear_faults()``).
* Every request is logged (``requests``, ``count_requests``), so tests can count fetches.

Routes (all also answer HEAD, except XML-RPC):

* ``/simple/`` and ``/simple/<name>/``: PEP 691 JSON when ``Accept`` prefers
  ``application/vnd.pypi.simple.v1+json``, else PEP 503 HTML; ``X-PyPI-Last-Serial``;
  a non-normalized name or a missing slash is a 301.
* ``/pypi/<name>/json`` and ``/pypi/<name>/<version>/json``: the JSON API document; 404 for
  unknown, removed, release-less or quarantined projects.
* ``POST /pypi`` (also ``/pypi/``, ``/RPC2``): XML-RPC ``list_packages_with_serial`` and
  ``changelog_last_serial``; anything else is a fault.
* ``/packages/ab/cd/<60 hex>/<filename>`` and ``….metadata``: bytes with ETag, Last-Modified,
  304, and single ``Range`` requests (206 / 416).

Usage (a test's fixture is ``yield from running_fake_index()``)::

    with FakeIndex() as fake:
        fake.add_project("pkg-a", ["1.0"], dependencies=["pkg-b"])
        fake.add_project("pkg-b")
        fake.fail_next("/pypi/pkg-a/json", status=503)
        ...  # point the code under test at fake.pypi_url, fake.packages_url, fake.simple_url
        assert fake.count_requests("/pypi/pkg-a/json") == 2
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import re
import threading
import xmlrpc.client
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit
from xml.parsers.expat import ExpatError

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    NormalizedName,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version
from tornado.httpserver import HTTPServer
from tornado.httputil import HTTPHeaders
from tornado.netutil import bind_sockets
from tornado.platform.asyncio import AsyncIOLoop
from tornado.web import Application, RequestHandler

from fakedists import BuiltDist, DistSpec, build_release

__all__ = [
    "API_VERSION",
    "HTML_V1",
    "JSON_V1",
    "FakeIndex",
    "FakeProject",
    "FakeRelease",
    "RequestRecord",
    "choose_page_type",
    "running_fake_index",
    "select_range",
]

logger = logging.getLogger(__name__)

API_VERSION = "1.4"
JSON_V1 = "application/vnd.pypi.simple.v1+json"
HTML_V1 = "application/vnd.pypi.simple.v1+html"
# PyPI's offer order: on equal quality the earlier one wins, so HTML unless JSON is preferred.
_PAGE_TYPES = ("text/html", HTML_V1, JSON_V1)
_VALID_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])\Z", re.IGNORECASE)
# Upload times derive from the serial, so the same calls give the same pages in every run.
_FIRST_UPLOAD = datetime(2024, 1, 1)

PathMatch = str | re.Pattern[str]
FaultKind = Literal[
    "fail", "delay", "hold", "truncate", "unframed", "corrupt", "stale", "xmlrpc-fault", "listing-garbage", "listing-empty"
]


# --------------------------------------------------------------------------------------------
# Content model


@dataclass(slots=True)
class FakeRelease:
    """One version of a project. Change it only through ``FakeIndex`` (which holds the lock)."""

    version: str
    spec: DistSpec
    has_sdist: bool
    has_wheel: bool
    upload_time: datetime
    yanked: bool = False
    yanked_reason: str | None = None
    _files: tuple[BuiltDist, ...] | None = field(default=None, repr=False)

    @property
    def parsed_version(self) -> Version:
        return Version(self.version)

    @property
    def files(self) -> tuple[BuiltDist, ...]:
        """The release's files sorted by filename, built on first use (add_many stays cheap)."""
        if self._files is None:
            self._files = build_release(self.spec, sdist=self.has_sdist, wheel=self.has_wheel)
        return self._files


@dataclass(slots=True)
class FakeProject:
    """A live view of one project; read it freely, change it through ``FakeIndex``."""

    name: NormalizedName
    display_name: str
    last_serial: int
    status: str | None = None
    releases: dict[str, FakeRelease] = field(default_factory=dict)

    def sorted_releases(self) -> list[FakeRelease]:
        return sorted(self.releases.values(), key=lambda release: release.parsed_version)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request the fake received; ``headers`` look up names case-insensitively."""

    method: str
    path: str
    headers: HTTPHeaders


@dataclass(slots=True)
class _Fault:
    kind: FaultKind
    matches: Callable[[str], bool]
    remaining: int | None
    status: int = 503
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    at_bytes: int = 0


# --------------------------------------------------------------------------------------------
# Pure helpers: negotiation, ranges, page rendering


def choose_page_type(accept: str | None) -> str:
    """The Content-Type PyPI's simple API answers an ``Accept`` header with (PEP 691's negotiation).

    The highest quality wins, ties go to the server's order (text/html first), and a header that
    accepts none of the types still gets text/html: PyPI never answers 406.
    """
    ranges = _parse_accept(accept or "*/*")
    best, best_quality = "text/html", 0.0
    for offer in _PAGE_TYPES:
        quality = _quality_of(offer, ranges)
        if quality > best_quality:
            best, best_quality = offer, quality
    return best


def _parse_accept(accept: str) -> list[tuple[str, float]]:
    ranges = []
    for part in accept.split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media:
            ranges.append((media.lower(), quality))
    return ranges


def _quality_of(offer: str, ranges: list[tuple[str, float]]) -> float:
    """The quality of the most specific range that matches ``offer`` (exact, ``type/*``, ``*/*``)."""
    family = offer.split("/")[0] + "/*"
    for pattern in (offer, family, "*/*"):
        qualities = [quality for media, quality in ranges if media == pattern]
        if qualities:
            return max(qualities)
    return 0.0


def select_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end_exclusive)`` of a single ``bytes=`` range, or None to send the whole body.

    A missing, multi-part or malformed header is ignored (RFC 9110 §14.2) and gives None. A
    well-formed range that lies outside the body raises ``ValueError`` (answer 416).
    """
    if header is None or not header.startswith("bytes=") or "," in header:
        return None
    first, dash, last = header[len("bytes=") :].strip().partition("-")
    if not dash or not (first.isdigit() or last.isdigit()) or not all(p.isdigit() for p in (first, last) if p):
        return None
    if not first:
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise ValueError(f"unsatisfiable range {header!r} for {size} bytes")
        return max(size - suffix, 0), size
    start = int(first)
    end = size if not last else int(last) + 1
    if last and end <= start:
        return None
    if start >= size:
        raise ValueError(f"unsatisfiable range {header!r} for {size} bytes")
    return start, min(end, size)


def _format_upload_time(moment: datetime) -> str:
    """PyPI's ``upload-time``: ISO 8601 in UTC with ``Z``; microseconds only when non-zero."""
    return moment.isoformat() + "Z"


def _dump_json(document: object) -> bytes:
    # warehouse's "json-with-newline" renderer: sorted keys, compact, raw UTF-8, trailing newline.
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _offered_files(project: FakeProject) -> list[tuple[FakeRelease, BuiltDist]]:
    """Files a simple page lists, by (version, filename); none for a quarantined project."""
    if project.status == "quarantined":
        return []
    return [(release, dist) for release in project.sorted_releases() for dist in release.files]


def _yanked_value(release: FakeRelease) -> bool | str:
    return release.yanked_reason if release.yanked and release.yanked_reason else release.yanked


def _metadata_value(dist: BuiltDist) -> dict[str, str] | Literal[False]:
    digest = dist.metadata_sha256
    return {"sha256": digest} if digest is not None else False


def render_root_json(listing: list[tuple[str, int]], serial: int) -> bytes:
    projects = [{"name": display, "_last-serial": last_serial} for display, last_serial in listing]
    return _dump_json({"meta": {"api-version": API_VERSION, "_last-serial": serial}, "projects": projects})


def render_root_html(listing: list[tuple[str, int]]) -> bytes:
    anchors = "".join(
        f'    <a href="/simple/{canonicalize_name(display)}/">{html.escape(display)}</a>\n' for display, _ in listing
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n  <head>\n'
        f'    <meta name="pypi:repository-version" content="{API_VERSION}">\n'
        "    <title>Simple index</title>\n  </head>\n  <body>\n"
        f"{anchors}  </body>\n</html>\n"
    ).encode()


def render_project_json(project: FakeProject, files_base: str, serial: int) -> bytes:
    """The PEP 691 project page as PyPI sends it."""
    offered = _offered_files(project)
    files = [
        {
            "core-metadata": _metadata_value(dist),
            "data-dist-info-metadata": _metadata_value(dist),
            "filename": dist.filename,
            "hashes": {"sha256": dist.sha256},
            "provenance": None,
            "requires-python": release.spec.requires_python,
            "size": dist.size,
            "upload-time": _format_upload_time(release.upload_time),
            "url": files_base + dist.path,
            "yanked": _yanked_value(release),
        }
        for release, dist in offered
    ]
    versions = list(dict.fromkeys(release.version for release, _ in offered))
    document: dict[str, object] = {
        "meta": {"api-version": API_VERSION, "_last-serial": serial},
        "name": project.name,
        "files": files,
        "versions": versions,
    }
    if project.status is not None:
        document["project-status"] = {"status": project.status}
    return _dump_json(document)


def render_project_html(project: FakeProject, files_base: str, serial: int) -> bytes:
    """The PEP 503 project page in PyPI's template, every attribute value HTML-escaped."""
    anchors = "".join(_render_anchor(release, dist, files_base) for release, dist in _offered_files(project))
    status = ""
    if project.status is not None:
        status = f'    <meta name="pypi:project-status" content="{html.escape(project.status)}">\n'
    return (
        '<!DOCTYPE html>\n<html lang="en">\n  <head>\n'
        f'    <meta name="pypi:repository-version" content="{API_VERSION}">\n{status}'
        f"    <title>Links for {project.name}</title>\n  </head>\n  <body>\n"
        f"    <h1>Links for {project.name}</h1>\n{anchors}  </body>\n</html>\n<!--SERIAL {serial}-->\n"
    ).encode()


def _render_anchor(release: FakeRelease, dist: BuiltDist, files_base: str) -> str:
    href = html.escape(f"{files_base}{dist.path}#sha256={dist.sha256}")
    attributes = ""
    if release.spec.requires_python is not None:
        attributes += f' data-requires-python="{html.escape(release.spec.requires_python)}"'
    if release.yanked:
        attributes += f' data-yanked="{html.escape(release.yanked_reason or "")}"'
    if dist.metadata_sha256 is not None:
        attributes += f' data-dist-info-metadata="sha256={dist.metadata_sha256}"'
        attributes += f' data-core-metadata="sha256={dist.metadata_sha256}"'
    return f'    <a href="{href}"{attributes}>{html.escape(dist.filename)}</a><br />\n'


def _choose_info_release(project: FakeProject) -> FakeRelease:
    """PyPI's ``info`` release: the newest final non-yanked one, else non-yanked, else the newest."""
    releases = project.sorted_releases()
    final = [r for r in releases if not r.yanked and not r.parsed_version.is_prerelease]
    live = [r for r in releases if not r.yanked]
    return (final or live or releases)[-1]


def _render_api_file(release: FakeRelease, dist: BuiltDist, files_base: str) -> dict[str, object]:
    return {
        "comment_text": "",
        "core-metadata": _metadata_value(dist),
        "digests": {"blake2b_256": dist.blake2b_256, "md5": dist.md5, "sha256": dist.sha256},
        "downloads": -1,
        "filename": dist.filename,
        "has_sig": False,
        "md5_digest": dist.md5,
        "packagetype": dist.packagetype,
        "python_version": dist.python_version,
        "requires_python": release.spec.requires_python,
        "size": dist.size,
        "upload_time": release.upload_time.strftime("%Y-%m-%dT%H:%M:%S"),
        "upload_time_iso_8601": release.upload_time.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "url": files_base + dist.path,
        "yanked": release.yanked,
        "yanked_reason": release.yanked_reason,
    }


def _render_api_info(project: FakeProject, release: FakeRelease, base: str) -> dict[str, object]:
    spec = release.spec
    return {
        "author": "",
        "author_email": "",
        "bugtrack_url": None,
        "classifiers": [],
        "description": "",
        "description_content_type": None,
        "docs_url": None,
        "download_url": "",
        "downloads": {"last_day": -1, "last_month": -1, "last_week": -1},
        "dynamic": None,
        "home_page": "",
        "keywords": "",
        "license": None,
        "license_expression": None,
        "license_files": None,
        "maintainer": "",
        "maintainer_email": "",
        "name": project.display_name,
        "package_url": f"{base}/project/{project.name}/",
        "platform": None,
        "project_url": f"{base}/project/{project.name}/",
        "project_urls": None,
        "provides_extra": None,
        "release_url": f"{base}/project/{project.name}/{release.version}/",
        "requires_dist": list(spec.dependencies) or None,
        "requires_python": spec.requires_python,
        "summary": f"Fake project {spec.name} served by the test index",
        "version": release.version,
        "yanked": release.yanked,
        "yanked_reason": release.yanked_reason,
    }


def render_json_api(project: FakeProject, base: str, serial: int, version: str | None = None) -> bytes:
    """``/pypi/<name>/json`` (all releases) or, with ``version``, ``/pypi/<name>/<version>/json``."""
    release = project.releases[version] if version is not None else _choose_info_release(project)
    document: dict[str, object] = {
        "info": _render_api_info(project, release, base),
        "last_serial": serial,
        "urls": [_render_api_file(release, dist, base) for dist in release.files],
        "vulnerabilities": [],
    }
    if version is None:
        document["releases"] = {
            r.version: [_render_api_file(r, dist, base) for dist in r.files] for r in project.sorted_releases()
        }
    return _dump_json(document)


def render_list_packages(listing: list[tuple[str, int]]) -> bytes:
    return xmlrpc.client.dumps((dict(listing),), methodresponse=True).encode()


def _corrupt(body: bytes) -> bytes:
    """The same length with one byte flipped in the middle: any digest check must now fail."""
    if not body:
        return body
    middle = len(body) // 2
    return body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1 :]


# --------------------------------------------------------------------------------------------
# Handlers: thin; the FakeIndex renders under its lock and applies the faults.


class _FakeHandler(RequestHandler):
    """Logs the request and applies ``delay`` and ``fail_next`` before any route runs."""

    def initialize(self, index: FakeIndex) -> None:
        self.index = index

    async def prepare(self) -> None:
        path = self.request.path
        self.index._record(RequestRecord(self.request.method or "", path, self.request.headers.copy()))
        delay = self.index._take_fault("delay", path)
        if delay is not None:
            await self.index._sleep(delay.seconds)
        if self.index._take_fault("hold", path) is not None:
            await self.index._wait_for_release()
        failure = self.index._take_fault("fail", path)
        if failure is not None:
            self.set_status(failure.status)
            for name, value in failure.headers.items():
                self.set_header(name, value)
            self.finish(failure.body)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code} {self._reason}\n")

    async def send(self, body: bytes) -> None:
        """Finish with ``body``, unless ``corrupt_next``, ``truncate_next`` or ``send_unframed_next``
        says otherwise."""
        if self.request.method == "HEAD":
            self.finish(body)
            return
        path = self.request.path
        if self.index._take_fault("corrupt", path) is not None:
            body = _corrupt(body)
        unframed = self.index._take_fault("unframed", path)
        if unframed is not None:
            await self._send_unframed(body if unframed.at_bytes < 0 else body[: unframed.at_bytes], unframed.body)
            return
        truncate = self.index._take_fault("truncate", path)
        if truncate is None:
            self.finish(body)
            return
        # Promise every byte, send some, then hang up: the client sees a short read.
        self.set_header("Content-Length", str(len(body)))
        self.write(body[: truncate.at_bytes])
        await self.flush()
        assert self.request.connection is not None
        self.request.connection.close()  # type: ignore[attr-defined]
        self.finish()

    async def _send_unframed(self, body: bytes, extra: bytes) -> None:
        """A 200 whose body ends where the connection does (no Content-Length, not chunked), as an
        HTTP/1.0-style server sends it: the client cannot tell a cut-off body from a whole one."""
        head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                b"Connection: close\r\n\r\n")
        stream = self.detach()
        await stream.write(head + body + extra)
        stream.close()

    def send_serial(self, serial: int) -> None:
        self.set_header("X-PyPI-Last-Serial", str(serial))


class _NotFoundHandler(_FakeHandler):
    def get(self, *args: str) -> None:
        self.send_error(404)

    head = post = get


class _SimpleRootHandler(_FakeHandler):
    async def get(self, slash: str) -> None:
        if not slash:
            self.redirect("/simple/", permanent=True)
            return
        content_type = choose_page_type(self.request.headers.get("Accept"))
        body, serial = self.index._render_root(content_type)
        self.set_header("Content-Type", content_type)
        self.set_header("Vary", "Accept")
        self.send_serial(serial)
        await self.send(body)

    head = get


class _SimpleProjectHandler(_FakeHandler):
    async def get(self, name: str, slash: str) -> None:
        normalized = canonicalize_name(name)
        if name != normalized or not slash:
            self.redirect(f"/simple/{normalized}/", permanent=True)
            return
        content_type = choose_page_type(self.request.headers.get("Accept"))
        page = self.index._render_simple_page(normalized, content_type)
        if page is None:
            self.send_error(404)
            return
        self.set_header("Content-Type", content_type)
        self.set_header("Vary", "Accept")
        self.send_serial(page[1])
        await self.send(page[0])

    head = get


class _JsonApiHandler(_FakeHandler):
    async def get(self, name: str, version: str | None) -> None:
        normalized = canonicalize_name(name)
        if name != normalized:
            suffix = f"{version}/json" if version else "json"
            self.redirect(f"/pypi/{normalized}/{suffix}", permanent=True)
            return
        document = self.index._render_json_api(normalized, version)
        if document is None:
            self.send_error(404)
            return
        self.set_header("Content-Type", "application/json")
        self.send_serial(document[1])
        await self.send(document[0])

    head = get


class _XmlRpcHandler(_FakeHandler):
    async def post(self) -> None:
        self.set_header("Content-Type", "text/xml")
        await self.send(self.index._answer_xmlrpc(self.request.body))


class _PackageFileHandler(_FakeHandler):
    """Files and their ``.metadata`` with ETag, Last-Modified, 304, HEAD and single Ranges."""

    async def get(self) -> None:
        found = self.index._find_file(self.request.path)
        if found is None:
            self.send_error(404)
            return
        data, etag, modified = found
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Accept-Ranges", "bytes")
        self.set_header("ETag", etag)
        self.set_header("Last-Modified", modified)
        if self.check_etag_header():
            self.set_status(304)
            self.finish()
            return
        try:
            selected = select_range(self.request.headers.get("Range"), len(data))
        except ValueError:
            self.set_status(416)  # send_error() would drop the Content-Range header
            self.set_header("Content-Range", f"bytes */{len(data)}")
            self.finish()
            return
        if selected is not None:
            start, end = selected
            self.set_status(206)
            self.set_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
            data = data[start:end]
        self.set_header("Content-Length", str(len(data)))
        await self.send(data)

    head = get


def _log_request(handler: RequestHandler) -> None:
    # Tornado logs 4xx/5xx as warnings/errors; here they are usually what a test asked for.
    request = handler.request
    logger.debug("%s %s %s %.1fms", handler.get_status(), request.method, request.uri, 1000 * request.request_time())


# --------------------------------------------------------------------------------------------
# The fake index


class FakeIndex:
    """A PyPI-like index on ``127.0.0.1``: content, routes, faults and a request log.

    Start it with ``start()`` or ``with FakeIndex() as fake:``. A restarted index binds the port
    it had before, so a stopped-then-started fake looks like an upstream that was briefly down.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._projects: dict[NormalizedName, FakeProject] = {}
        self._serial = 0
        self._faults: list[_Fault] = []
        self._requests: list[RequestRecord] = []
        self._port = 0
        self._thread: threading.Thread | None = None
        self._aio: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._released: asyncio.Event | None = None
        self._startup_error: BaseException | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Serve in a new thread; returns once the port is bound (so ``url`` is usable)."""
        if self._thread is not None:
            raise RuntimeError("fake index is already running")
        ready = threading.Event()
        self._startup_error = None
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="fakeindex", daemon=True)
        self._thread.start()
        if not ready.wait(timeout=30):
            raise RuntimeError("fake index did not start within 30 s")
        if self._startup_error is not None:
            self._thread.join()
            self._thread = None
            raise RuntimeError("fake index could not start") from self._startup_error
        logger.debug("fake index serving at %s", self.url)

    def stop(self) -> None:
        """Close the listening socket and every connection, then end the thread."""
        if self._thread is None:
            return
        assert self._aio is not None
        self._aio.call_soon_threadsafe(self._aio.stop)
        self._thread.join()
        self._thread = None

    def __enter__(self) -> FakeIndex:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def _serve(self, ready: threading.Event) -> None:
        aio = asyncio.new_event_loop()
        io_loop = AsyncIOLoop(asyncio_loop=aio)
        try:
            server = aio.run_until_complete(self._listen())
        except BaseException as exc:  # reported to start(), in the caller's thread
            self._startup_error = exc
            io_loop.close(all_fds=True)
            ready.set()
            return
        self._aio = aio
        ready.set()
        aio.run_forever()
        aio.run_until_complete(self._shut_down(server))
        io_loop.close(all_fds=True)

    async def _listen(self) -> HTTPServer:
        self._stopping = asyncio.Event()
        self._released = asyncio.Event()
        sockets = bind_sockets(self._port, "127.0.0.1")
        self._port = sockets[0].getsockname()[1]
        server = HTTPServer(self._make_app())
        server.add_sockets(sockets)
        return server

    async def _shut_down(self, server: HTTPServer) -> None:
        assert self._stopping is not None
        self._stopping.set()  # wakes handlers held by delay()
        server.stop()
        await server.close_all_connections()
        pending = asyncio.all_tasks() - {asyncio.current_task()}
        if pending:
            await asyncio.wait(pending, timeout=5)

    async def _wait_for_release(self) -> None:
        """Wait for let_go() (or the index stopping), for a request that hold() caught."""
        assert self._stopping is not None and self._released is not None
        stopping = asyncio.ensure_future(self._stopping.wait())
        released = asyncio.ensure_future(self._released.wait())
        _, pending = await asyncio.wait((stopping, released), return_when=asyncio.FIRST_COMPLETED)
        for waiter in pending:
            waiter.cancel()

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but end early when the index stops, so stop() never waits for a delay."""
        assert self._stopping is not None
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass

    def _make_app(self) -> Application:
        kwargs = {"index": self}
        return Application(
            [
                (r"/simple(/?)", _SimpleRootHandler, kwargs),
                (r"/simple/([^/]+)(/?)", _SimpleProjectHandler, kwargs),
                (r"/pypi/([^/]+)/(?:([^/]+)/)?json/?", _JsonApiHandler, kwargs),
                (r"/(?:pypi/?|RPC2)", _XmlRpcHandler, kwargs),
                (r"/packages/[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{60}/[^/]+", _PackageFileHandler, kwargs),
            ],
            default_handler_class=_NotFoundHandler,
            default_handler_args=kwargs,
            log_function=_log_request,
        )

    # -- addresses ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        if self._thread is None:
            raise RuntimeError("fake index is not running; call start() first")
        return f"http://127.0.0.1:{self._port}"

    @property
    def pypi_url(self) -> str:
        """The index base: XML-RPC at ``/pypi``, JSON API at ``/pypi/<name>/json``."""
        return self.url

    @property
    def packages_url(self) -> str:
        """The base a file's ``ab/cd/<hash>/<filename>`` path is appended to."""
        return self.url + "/packages"

    @property
    def simple_url(self) -> str:
        """What pip's and uv's ``--index-url`` take."""
        return self.url + "/simple/"

    def file_url(self, dist: BuiltDist) -> str:
        return self.url + dist.path

    # -- content ------------------------------------------------------------------------------

    @property
    def serial(self) -> int:
        """The global serial: the newest change's number (0 before any change)."""
        with self._lock:
            return self._serial

    def add_project(
        self,
        name: str,
        versions: Sequence[str] = ("1.0",),
        *,
        requires_python: str | None = None,
        dependencies: Sequence[str] = (),
        sdist: bool = True,
        wheel: bool = True,
        status: str | None = None,
        payload_size: int = 0,
        upload_time: datetime | None = None,
    ) -> FakeProject:
        """Create ``name`` with ``versions`` (all with the same options) under one new serial.

        ``versions=()`` gives a project with no releases: listed, but 404 on the JSON API as on
        PyPI. ``payload_size`` pads every file by about that many seeded random bytes.
        """
        if not _VALID_NAME.match(name):
            raise ValueError(f"invalid project name: {name!r}")
        normalized = canonicalize_name(name)
        with self._lock:
            if normalized in self._projects:
                raise ValueError(f"project {name!r} already exists as {self._projects[normalized].display_name!r}")
            project = FakeProject(normalized, name, 0, status)
            for version in versions:
                self._put_release(
                    project, version, requires_python, dependencies, sdist, wheel, payload_size, upload_time
                )
            # Only a change that went through takes a serial: a bad version leaves no trace.
            project.last_serial = self._next_serial()
            self._projects[normalized] = project
            return project

    def add_release(
        self,
        name: str,
        version: str,
        *,
        requires_python: str | None = None,
        dependencies: Sequence[str] = (),
        sdist: bool = True,
        wheel: bool = True,
        payload_size: int = 0,
        upload_time: datetime | None = None,
    ) -> FakeRelease:
        """Upload a new version of an existing project."""
        with self._lock:
            project = self.project(name)
            release = self._put_release(
                project, version, requires_python, dependencies, sdist, wheel, payload_size, upload_time
            )
            project.last_serial = self._next_serial()
            return release

    def add_many(self, n: int, prefix: str = "proj") -> list[FakeProject]:
        """``n`` one-release projects ``{prefix}-0000``, ``{prefix}-0001``, ...; files build lazily."""
        width = max(4, len(str(n - 1)))
        return [self.add_project(f"{prefix}-{i:0{width}d}") for i in range(n)]

    def remove_project(self, name: str) -> None:
        """Delete the project: gone from the listing, 404 everywhere, the global serial moves on."""
        with self._lock:
            project = self.project(name)
            del self._projects[project.name]
            self._next_serial()

    def remove_release(self, name: str, version: str) -> None:
        """Delete one release and its files, as an owner may on PyPI; the project stays."""
        with self._lock:
            release = self.release(name, version)
            del self.project(name).releases[release.version]
            self._touch(name)

    def yank(self, name: str, version: str, reason: str | None = None) -> None:
        with self._lock:
            release = self.release(name, version)
            release.yanked, release.yanked_reason = True, reason
            self._touch(name)

    def unyank(self, name: str, version: str) -> None:
        with self._lock:
            release = self.release(name, version)
            release.yanked, release.yanked_reason = False, None
            self._touch(name)

    def rename_display(self, name: str, new_display_name: str) -> None:
        """Change only the display name (e.g. its case); the normalized name must stay the same."""
        with self._lock:
            project = self.project(name)
            if canonicalize_name(new_display_name) != project.name:
                raise ValueError(f"{new_display_name!r} does not normalize to {project.name!r}")
            project.display_name = new_display_name
            self._touch(name)

    def set_status(self, name: str, status: str | None) -> None:
        """Set the PEP 792 marker (``None`` removes it); ``quarantined`` hides the files."""
        with self._lock:
            self.project(name).status = status
            self._touch(name)

    def bump(self, name: str) -> None:
        """A new serial with unchanged content (PyPI journals more than content changes)."""
        with self._lock:
            self._touch(name)

    def project(self, name: str) -> FakeProject:
        with self._lock:
            try:
                return self._projects[canonicalize_name(name)]
            except KeyError:
                raise LookupError(f"fake index has no project {name!r}") from None

    def release(self, name: str, version: str) -> FakeRelease:
        with self._lock:
            project = self.project(name)
            try:
                return project.releases[str(Version(version))]
            except KeyError:
                raise LookupError(f"fake project {name!r} has no version {version!r}") from None

    def files(self, name: str, version: str | None = None) -> tuple[BuiltDist, ...]:
        """The files of one release, or of every release by (version, filename)."""
        with self._lock:
            if version is not None:
                return self.release(name, version).files
            return tuple(dist for release in self.project(name).sorted_releases() for dist in release.files)

    def _next_serial(self) -> int:
        self._serial += 1
        return self._serial

    def _touch(self, name: str) -> None:
        self.project(name).last_serial = self._next_serial()

    def _put_release(
        self,
        project: FakeProject,
        version: str,
        requires_python: str | None,
        dependencies: Sequence[str],
        sdist: bool,
        wheel: bool,
        payload_size: int,
        upload_time: datetime | None,
    ) -> FakeRelease:
        canonical = str(Version(version))  # file names need the normalized form
        if canonical in project.releases:
            raise ValueError(f"{project.display_name!r} already has version {canonical!r}")
        spec = DistSpec(project.display_name, canonical, requires_python, tuple(dependencies), payload_size)
        if upload_time is None:
            coming = self._serial + 1  # the serial this change is about to take
            upload_time = _FIRST_UPLOAD + timedelta(minutes=coming, microseconds=(coming * 7919) % 10**6)
        release = FakeRelease(canonical, spec, sdist, wheel, upload_time)
        project.releases[canonical] = release
        return release

    # -- faults -------------------------------------------------------------------------------

    def fail_next(
        self,
        path: PathMatch,
        status: int = 503,
        times: int | None = 1,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer matching requests with ``status``/``body``/``headers`` instead of the content.

        ``path`` is a prefix of the request path (a full URL of this fake also works) or a
        compiled regex searched in the path: ``re.compile(r"^/simple/$")`` hits only the root.
        """
        self._add_fault(_Fault("fail", self._path_matcher(path), times, status, body, dict(headers or {})))

    def delay(self, path: PathMatch, seconds: float, times: int | None = 1) -> None:
        """Hold matching requests ``seconds`` before answering (stop() cuts the wait short)."""
        self._add_fault(_Fault("delay", self._path_matcher(path), times, seconds=seconds))

    def hold(self, path: PathMatch) -> None:
        """Hold every matching request until :meth:`let_go` (stop() lets them go too).

        For tests that need a client of the mirror to be in the middle of its work, however
        long the machine takes to get the test's next step going.
        """
        with self._lock:
            if self._released is not None and self._released.is_set():
                raise RuntimeError("hold() after let_go(): this fake holds only once")
        self._add_fault(_Fault("hold", self._path_matcher(path), None))

    def let_go(self) -> None:
        """Answer the requests hold() is holding, and every later one at once."""
        with self._lock:
            self._faults = [fault for fault in self._faults if fault.kind != "hold"]
        assert self._aio is not None and self._released is not None, "the fake index is not running"
        self._aio.call_soon_threadsafe(self._released.set)

    def truncate_next(self, path: PathMatch, at_bytes: int, times: int | None = 1) -> None:
        """Declare the full Content-Length, send ``at_bytes`` of the body, close the connection."""
        self._add_fault(_Fault("truncate", self._path_matcher(path), times, at_bytes=at_bytes))

    def send_unframed_next(
        self, path: PathMatch, at_bytes: int = -1, extra: bytes = b"", times: int | None = 1
    ) -> None:
        """Answer 200 with no Content-Length and end the body by closing the connection: after
        ``at_bytes`` of it (-1: all of it), followed by ``extra`` bytes that are not the file's."""
        self._add_fault(_Fault("unframed", self._path_matcher(path), times, body=extra, at_bytes=at_bytes))

    def corrupt_next(self, path: PathMatch, times: int | None = 1) -> None:
        """Send the body with one byte flipped: same length, different digest."""
        self._add_fault(_Fault("corrupt", self._path_matcher(path), times))

    def serve_stale(self, name: str, times: int | None = 1) -> None:
        """Answer the project's simple page and JSON API with a serial one below the listing's.

        Like a stale CDN copy; each such answer (either route) uses one of ``times``.
        """
        normalized = canonicalize_name(name)
        self._add_fault(_Fault("stale", lambda subject: subject == normalized, times))

    def xmlrpc_fault_next(self, times: int | None = 1) -> None:
        """The next XML-RPC call answers HTTP 200 with a ``<fault>`` (PyPI's rate-limit shape)."""
        self._add_fault(_Fault("xmlrpc-fault", lambda subject: True, times))

    def listing_garbage_next(self, times: int | None = 1) -> None:
        """The next listing (root page or ``list_packages_with_serial``) is 200 with garbage."""
        self._add_fault(_Fault("listing-garbage", lambda subject: True, times))

    def listing_empty_next(self, times: int | None = 1) -> None:
        """The next listing is a valid but empty project list."""
        self._add_fault(_Fault("listing-empty", lambda subject: True, times))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _path_matcher(self, path: PathMatch) -> Callable[[str], bool]:
        if isinstance(path, re.Pattern):
            return lambda subject: path.search(subject) is not None
        prefix = urlsplit(path).path if path.startswith(("http://", "https://")) else path
        return lambda subject: subject.startswith(prefix)

    def _add_fault(self, fault: _Fault) -> None:
        if fault.remaining is not None and fault.remaining < 1:
            raise ValueError(f"times must be at least 1 or None, not {fault.remaining!r}")
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, kind: FaultKind, subject: str) -> _Fault | None:
        """The oldest armed fault of ``kind`` matching ``subject``, used up once."""
        with self._lock:
            for fault in self._faults:
                if fault.kind == kind and fault.matches(subject):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining == 0:
                            self._faults.remove(fault)
                    return fault
            return None

    # -- request log --------------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the log, oldest first."""
        with self._lock:
            return list(self._requests)

    def count_requests(self, path: PathMatch, method: str | None = None) -> int:
        """How many logged requests match ``path`` (as in ``fail_next``) and ``method``."""
        matches = self._path_matcher(path)
        return sum(1 for r in self.requests if matches(r.path) and method in (None, r.method))

    def reset_log(self) -> None:
        with self._lock:
            self._requests.clear()

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._requests.append(record)

    # -- rendering for the handlers (under the lock, so a page is one consistent snapshot) ----

    def _listing(self) -> list[tuple[str, int]]:
        return [(self._projects[n].display_name, self._projects[n].last_serial) for n in sorted(self._projects)]

    def _listing_fault(self) -> Literal["listing-garbage", "listing-empty"] | None:
        for kind in ("listing-garbage", "listing-empty"):
            if self._take_fault(kind, "") is not None:
                return kind
        return None

    def _render_root(self, content_type: str) -> tuple[bytes, int]:
        with self._lock:
            fault = self._listing_fault()
            if fault == "listing-garbage":
                return b'{"meta": <<garbage>>\x00', self._serial
            listing = [] if fault == "listing-empty" else self._listing()
            if content_type == JSON_V1:
                return render_root_json(listing, self._serial), self._serial
            return render_root_html(listing), self._serial

    def _served_serial(self, project: FakeProject) -> int:
        stale = self._take_fault("stale", project.name) is not None
        return project.last_serial - 1 if stale else project.last_serial

    def _render_simple_page(self, name: NormalizedName, content_type: str) -> tuple[bytes, int] | None:
        with self._lock:
            project = self._projects.get(name)
            if project is None:
                return None
            serial = self._served_serial(project)
            if content_type == JSON_V1:
                return render_project_json(project, self.url, serial), serial
            return render_project_html(project, self.url, serial), serial

    def _render_json_api(self, name: NormalizedName, version: str | None) -> tuple[bytes, int] | None:
        with self._lock:
            project = self._projects.get(name)
            if project is None or not project.releases or project.status == "quarantined":
                return None
            if version is not None and version not in project.releases:
                return None
            serial = self._served_serial(project)
            return render_json_api(project, self.url, serial, version), serial

    def _answer_xmlrpc(self, body: bytes) -> bytes:
        try:
            _, method = xmlrpc.client.loads(body)
        except (ExpatError, xmlrpc.client.ResponseError, ValueError) as exc:
            return _xmlrpc_fault(1, f"cannot parse request: {exc}")
        with self._lock:
            if self._take_fault("xmlrpc-fault", method or "") is not None:
                return _xmlrpc_fault(-32500, "HTTPTooManyRequests: The action could not be performed")
            if method == "changelog_last_serial":
                return xmlrpc.client.dumps((self._serial,), methodresponse=True).encode()
            if method != "list_packages_with_serial":
                return _xmlrpc_fault(-32601, f"server error; requested method not found: {method!r}")
            fault = self._listing_fault()
            if fault == "listing-garbage":
                return b"<?xml version='1.0'?>\n<methodResponse><params><param><value><struct><member>"
            return render_list_packages([] if fault == "listing-empty" else self._listing())

    def _find_file(self, path: str) -> tuple[bytes, str, datetime] | None:
        """``(bytes, etag, last_modified)`` of a file or its ``.metadata``; None if not offered.

        The project and version come from the filename, so files never listed on a page
        (nothing built yet) are found too, and files of removed releases are not.
        """
        file_path = path.removesuffix(".metadata")
        filename = file_path.rsplit("/", 1)[-1]
        try:
            if filename.endswith(".whl"):
                name, version, _, _ = parse_wheel_filename(filename)
            else:
                name, version = parse_sdist_filename(filename)
        except (InvalidWheelFilename, InvalidSdistFilename):
            return None
        with self._lock:
            project = self._projects.get(name)
            release = project.releases.get(str(version)) if project is not None else None
            dist = next((d for d in release.files if d.path == file_path), None) if release is not None else None
            if release is None or dist is None:
                return None
        if file_path == path:
            return dist.content, f'"{dist.sha256}"', release.upload_time
        if dist.metadata is None:
            return None
        return dist.metadata, f'"{dist.metadata_sha256}"', release.upload_time


def _xmlrpc_fault(code: int, message: str) -> bytes:
    return xmlrpc.client.dumps(xmlrpc.client.Fault(code, message), methodresponse=True).encode()


def running_fake_index() -> Iterator[FakeIndex]:
    """Generator for a pytest fixture: a started fake index, stopped afterwards."""
    with FakeIndex() as fake:
        yield fake
