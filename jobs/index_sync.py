"""Index sync: make the local copy of the index equal to the upstream's.

Plan, then execute. :func:`plan_index_sync` compares the upstream listing with the serials in
the database by normalized name and returns what to fetch and what to remove; the run then
fetches each project's PEP 691 page and JSON-API document, writes the rendered pages
atomically, and stores the serial only after every file of the project is on disk. A run cut
off at any point therefore leaves pages that are whole and a database that, at worst, makes
the next run fetch a project again.

Nothing is ever removed on the strength of a broken listing: an empty, failed or malformed
listing is an error before any plan is made, and a plan with more removals than
``sync.max_deletions`` has its removal step refused.

Before a project's pages are replaced, what changed since the stored page is recorded in the
index history (:mod:`pypimirror.jobs.sync_history`), and a removal is recorded before the pages
go; a change that cannot be recorded is its project's error, so its pages wait for the next run.

A page that cannot be written is its project's error, like an upstream failure: counted, logged,
its serial not stored, so the next run tries again. A write failure that is not about one
project (a full or read-only filesystem, or every write failing in a row) stops the fetching
at once with one message, since every further download would be wasted. A run in which more
than ``sync.max_error_share`` of its projects failed, or whose root pages could not be written,
is a failed run.
"""

from __future__ import annotations

__all__ = [
    "IndexSyncReport",
    "SyncPlan",
    "plan_index_sync",
    "run_index_sync",
]

import asyncio
import errno
import gzip
import logging
import os
import time
from collections.abc import Awaitable, Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from urllib.parse import urljoin

from packaging.utils import NormalizedName

from pypimirror import queries as dbq
from pypimirror.config import Config, SyncConfig, UpstreamConfig
from pypimirror.db import Database
from pypimirror.errors import (
    MalformedUpstreamError,
    PyPIMirrorError,
    StaleSerialError,
    StorageError,
    UpstreamStatusError,
)
from pypimirror.jobs.sync_history import STORED_VARIANT, SyncHistory
from pypimirror.listing import Listing, ListedProject, fetch_listing
from pypimirror.pages import (
    ProjectPage,
    RootEntry,
    parse_json_api,
    parse_simple_project_json,
    render_project_html,
    render_project_json,
    render_root_html,
    render_root_json,
    rewrite_file_url,
)
from pypimirror.storage import (
    RepoLayout,
    atomic_write,
    is_normalized_project_name,
    remove_path,
    sweep_temp_files,
)
from pypimirror.upstream import UpstreamClient, UpstreamResponse, read_last_serial

logger = logging.getLogger(__name__)

SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"

#: A plan at most this share of the listing's size is copied out of it (see _make_plan).
DETACH_SHARE = 0.1
#: Serials are stored in batches: a crash loses at most one batch, which is refetched.
SERIAL_BATCH = 200
SERIAL_FLUSH_SECONDS = 2.0
PROGRESS_SECONDS = 5.0
#: Write errors that no other project can escape: the run stops at the first of them.
FILESYSTEM_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
#: This many projects in a row whose pages could not be written stop the run the same way.
WRITE_FAILURES_IN_A_ROW = 20
#: Fetched projects whose pages wait for the history's commit or their writes, at most; the
#: fetches go on meanwhile, so a commit's wait costs them nothing and commits come in batches.
STORES_IN_FLIGHT = 64

#: Writes ``data`` to a path atomically; :func:`~pypimirror.storage.atomic_write` in production.
Writer = Callable[[Path, bytes], None]


@dataclass(frozen=True, slots=True)
class SyncPlan:
    """What one run will do: projects to fetch (sorted by name) and names to remove."""

    fetch: tuple[tuple[NormalizedName, ListedProject], ...]
    remove: tuple[NormalizedName, ...]


def plan_index_sync(
    local: Mapping[NormalizedName, tuple[str, int]],
    remote: Listing,
    on_disk: Iterable[str] = (),
) -> SyncPlan:
    """Compare the local serials (and project directories) with the upstream listing.

    A project is fetched when it is new, its serial went up, or its display name changed
    (a case-only rename is an update of the same normalized name, never a removal). Names
    gone from the listing are removed, including directories on disk that the database does
    not know (left by a run that crashed between writing pages and storing the serial).
    """
    fetch = sorted(
        (
            (name, listed)
            for name, listed in remote.items()
            if (stored := local.get(name)) is None
            or stored[1] < listed.serial
            or stored[0] != listed.display_name
        ),
        key=itemgetter(0),
    )
    # Only the few gone names are collected: sets of all ~800k names would cost ~100 MB.
    gone: set[str] = {name for name in local if name not in remote}
    gone.update(name for name in on_disk if name not in remote)
    remove = sorted(NormalizedName(name) for name in gone)
    return SyncPlan(fetch=tuple(fetch), remove=tuple(remove))


@dataclass(slots=True)
class IndexSyncReport:
    """The outcome of one run, stored as the job run's counts and shown to operators."""

    listed: int = 0
    planned: int = 0
    fetched: int = 0
    removed: int = 0
    errors: int = 0
    write_errors: int = 0
    interrupted: bool = False
    removal_refused: str | None = None
    #: Why the run as a whole failed (storage, or too many projects failed); None if it did not.
    failed: str | None = None
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        """True if any page was written or removed (the cache job then has new input)."""
        return self.fetched > 0 or self.removed > 0

    @property
    def ok(self) -> bool:
        return not self.interrupted and self.removal_refused is None and self.failed is None

    @property
    def failure_reason(self) -> str | None:
        """What kept the run from being ok (beside an interruption), for the run's record."""
        return self.failed or self.removal_refused

    def counts(self) -> dict[str, int]:
        return {
            "listed": self.listed,
            "planned": self.planned,
            "fetched": self.fetched,
            "removed": self.removed,
            "errors": self.errors,
            "write_errors": self.write_errors,
        }

    def summary(self) -> str:
        text = (
            f"listed={self.listed} planned={self.planned} fetched={self.fetched} "
            f"removed={self.removed} errors={self.errors}"
        )
        if self.interrupted:
            text += " (interrupted)"
        if self.removal_refused:
            text += f" (removal refused: {self.removal_refused})"
        if self.failed:
            text += f" (failed: {self.failed})"
        return text


@dataclass(frozen=True, slots=True)
class RenderedProject:
    """The four files of one project, ready to be written, and the page they render."""

    name: NormalizedName
    pages: dict[str, bytes]
    json_document: bytes | None
    page: ProjectPage


async def run_index_sync(
    config: Config,
    db: Database,
    client: UpstreamClient,
    *,
    stop: asyncio.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    write: Writer = atomic_write,
    wall_clock: Callable[[], float] = time.time,
) -> IndexSyncReport:
    """Run one index sync; ``stop`` being set ends it at the next safe point.

    ``clock`` times the run; ``wall_clock`` dates what the index history records.

    Raises an :class:`~pypimirror.errors.UpstreamError` when the listing cannot be read and a
    :class:`~pypimirror.errors.StorageError` when the page directories cannot be read (nothing
    is changed then). Per-project failures are counted in the report and retried by the next
    run; failures of the run as a whole are its report's ``failed``.
    """
    run = _IndexSyncRun(
        sync=config.sync, upstream=config.upstream, repo_path=config.repo_path, prefix=config.prefix,
        db=db, client=client, stop=stop or asyncio.Event(), clock=clock, sleep=sleep, write=write,
        history=await SyncHistory.open(
            db, RepoLayout(config.repo_path), enabled=config.sync.record_history, now=wall_clock
        ),
    )
    return await run.execute()


class _IndexSyncRun:
    """The state of one run: its plan, its progress and the serials waiting to be stored.

    It is given only the settings a sync reads (``sync``, ``upstream``, the repository at
    ``repo_path`` and the ``prefix`` its pages link under), not the whole configuration.
    """

    def __init__(
        self,
        *,
        sync: SyncConfig,
        upstream: UpstreamConfig,
        repo_path: Path,
        prefix: str,
        db: Database,
        client: UpstreamClient,
        stop: asyncio.Event,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        write: Writer,
        history: SyncHistory,
    ) -> None:
        self.sync = sync
        self.upstream = upstream
        self.prefix = prefix
        self.db = db
        self.client = client
        self.stop = stop
        self.clock = clock
        self.sleep = sleep
        self.write = write
        self.history = history
        self.layout = RepoLayout(repo_path)
        self.report = IndexSyncReport()
        self.pending_serials: list[tuple[NormalizedName, str, int]] = []
        self.last_flush = clock()
        self.write_failures_in_a_row = 0
        self.stores: set[asyncio.Future[None]] = set()
        self.store_slots = asyncio.Semaphore(STORES_IN_FLIGHT)

    @property
    def halted(self) -> bool:
        """Stopped by a signal, or by a storage failure no further project would escape."""
        return self.stop.is_set() or self.report.failed is not None

    async def execute(self) -> IndexSyncReport:
        plan = await self._plan()
        await self._fetch_all(plan.fetch)
        if not self.halted:
            await self._remove(plan.remove)
        await self._write_root_pages()
        self.report.interrupted = self.stop.is_set()
        self._judge_errors()
        await self.history.finish(complete=not self.report.interrupted and self.report.failed is None)
        logger.info("index sync: done: %s", self.report.summary())
        return self.report

    def _judge_errors(self) -> None:
        """Fail a run in which more than ``sync.max_error_share`` of the projects it tried failed.

        A few failures per run are normal (a CDN's stale copy, a project removed since the
        listing) and are retried next run; most projects failing means the upstream, the
        network or the disk is broken, which an operator must see as a failed run.
        """
        report, share = self.report, self.sync.max_error_share
        tried = report.fetched + report.removed + report.errors
        if report.failed is not None or not report.errors or report.errors <= share * tried:
            return
        example = next(iter(report.failures.items()), None)
        report.failed = (
            f"{report.errors} of {tried} projects failed, more than sync.max_error_share ({share:.0%})"
            + (f"; e.g. {example[0]}: {example[1]}" if example else "")
        )
        logger.error("index sync: %s", report.failed)

    async def _plan(self) -> SyncPlan:
        """Read the listing, the stored serials and the directories, and compare them.

        For all of PyPI the listing and the serials take ~300 MB; they live only in this
        frame, so neither the fetches nor the root pages that follow hold them.
        """
        upstream = self.upstream
        listing = await fetch_listing(self.client, upstream.pypi_url, upstream.listing)
        listing = _drop_invalid_names(listing)
        self.report.listed = len(listing)
        try:
            await asyncio.to_thread(sweep_temp_files, self.layout.simple_dir)
            await asyncio.to_thread(sweep_temp_files, self.layout.json_dir)
            unlisted_dirs = await asyncio.to_thread(_project_dirs, self.layout, listing)
        except OSError as exc:
            raise StorageError(f"cannot read the page directories: {_describe_os_error(exc)}") from exc
        local = await self.db.run(lambda conn: dbq.load_serials(conn, listed=listing))
        plan = await asyncio.to_thread(_make_plan, local, listing, unlisted_dirs)
        self.report.planned = len(plan.fetch)
        logger.info(
            "index sync: upstream lists %d projects, %d local; %d to fetch, %d to remove",
            len(listing), len(local), len(plan.fetch), len(plan.remove),
        )
        return plan

    # -- fetching ---------------------------------------------------------------------

    async def _fetch_all(self, todo: tuple[tuple[NormalizedName, ListedProject], ...]) -> None:
        queue = iter(todo)
        started = self.clock()
        progress = asyncio.ensure_future(self._log_progress(len(todo), started))
        workers = [
            asyncio.ensure_future(self._worker(queue))
            for _ in range(min(self.sync.concurrent_downloads, max(len(todo), 1)))
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            for worker in workers:
                worker.cancel()
            try:
                await asyncio.gather(*self.stores)  # every fetched project is written, or failed
            finally:
                progress.cancel()
                await self._flush_serials()

    async def _worker(self, queue: Iterable[tuple[NormalizedName, ListedProject]]) -> None:
        for name, listed in queue:
            if self.halted:
                return
            try:
                rendered, serial = await self._fetch_project(name, listed)
            except PyPIMirrorError as exc:
                self._project_failed(name, str(exc))
                continue
            if self.halted:
                return  # fetched, not written: its serial stays, so the next run fetches it
            await self.store_slots.acquire()
            store = asyncio.ensure_future(self._store(name, listed.display_name, rendered, serial))
            self.stores.add(store)
            store.add_done_callback(self._stored)

    def _stored(self, store: asyncio.Future[None]) -> None:
        self.stores.discard(store)
        self.store_slots.release()

    async def _store(self, name: NormalizedName, display_name: str, rendered: RenderedProject, serial: int) -> None:
        """Record what changed in the history, write the pages, then queue the serial."""
        try:
            await self.history.before_write(rendered.page, rendered.pages[STORED_VARIANT])
            if self.halted:
                return  # recorded, not written: the next run fetches it and records it again
            await asyncio.to_thread(_write_project, self.layout, rendered, self.write)
        except PyPIMirrorError as exc:
            self._project_failed(name, str(exc))
            return
        except OSError as exc:
            self._write_failed(name, exc)
            return
        self.write_failures_in_a_row = 0
        self.report.fetched += 1
        self.pending_serials.append((name, display_name, serial))
        if len(self.pending_serials) >= SERIAL_BATCH or (
            self.clock() - self.last_flush >= SERIAL_FLUSH_SECONDS
        ):
            await self._flush_serials()

    def _project_failed(self, name: NormalizedName, reason: str) -> None:
        self.report.errors += 1
        self.report.failures[name] = reason
        logger.warning("index sync: %s: %s", name, reason)

    def _write_failed(self, name: NormalizedName, exc: OSError) -> None:
        """One project's pages could not be written; stop the run if no project would be."""
        if self.halted:  # already reported once; the rest are the same failure
            self.report.errors += 1
            self.report.write_errors += 1
            return
        self.report.write_errors += 1
        self.write_failures_in_a_row += 1
        reason = f"cannot write its pages: {_describe_os_error(exc)}"
        if exc.errno in FILESYSTEM_ERRNOS or self.write_failures_in_a_row >= WRITE_FAILURES_IN_A_ROW:
            self.report.errors += 1
            self.report.failures[name] = reason
            self.report.failed = (
                f"cannot write pages under {self.layout.root}: {_describe_os_error(exc)}; "
                "stopped fetching, the projects not written are fetched again next run"
            )
            logger.error("index sync: %s", self.report.failed)
            return
        self._project_failed(name, reason)

    async def _fetch_project(
        self, name: NormalizedName, listed: ListedProject
    ) -> tuple[RenderedProject, int]:
        """Fetch, check and render one project; returns the files and the serial to store."""
        attempts = self.sync.retry
        for attempt in range(1, attempts + 1):
            simple, document = await asyncio.gather(
                self._get(f"{self.upstream.pypi_url}/simple/{name}/", SIMPLE_JSON),
                self._get(f"{self.upstream.pypi_url}/pypi/{name}/json", "application/json"),
            )
            page, page_url = _choose_page(name, listed, simple, document)
            got = _served_serial(page, document)
            if got is not None and got >= listed.serial:
                return self._render(name, page, page_url, document), listed.serial
            if attempt < attempts:
                delay = min(2.0 ** (attempt - 1), 30.0)
                logger.info(
                    "index sync: %s: upstream serial %s older than listed %d, retrying in %.0fs",
                    name, got, listed.serial, delay,
                )
                await self.sleep(delay)
        raise StaleSerialError(name, listed.serial, got, attempts)

    async def _get(self, url: str, accept: str) -> UpstreamResponse:
        return await self.client.get(url, headers={"Accept": accept}, ok_statuses=(200, 404))

    def _render(
        self, name: NormalizedName, page: ProjectPage, page_url: str, document: UpstreamResponse
    ) -> RenderedProject:
        def url_for(url: str) -> str:
            # A relative link (another mirror's page, say) is relative to the page it is on.
            absolute = urljoin(page_url, url)
            return rewrite_file_url(absolute, packages_url=upstream.packages_url, prefix=prefix)

        upstream, prefix = self.upstream, self.prefix
        html = render_project_html(page, url_for=url_for, repository_meta=True)
        pages = {
            "index.html": html,
            "index.v1_html": html,
            "index.v1_json": render_project_json(page, url_for=url_for),
        }
        json_document = document.body if document.status == 200 else None
        return RenderedProject(name, pages, json_document, page)

    async def _flush_serials(self) -> None:
        rows, self.pending_serials = self.pending_serials, []
        self.last_flush = self.clock()
        if rows:
            await self.db.run(lambda conn: dbq.store_serials(conn, rows))

    async def _log_progress(self, total: int, started: float) -> None:
        while True:
            await asyncio.sleep(PROGRESS_SECONDS)
            done = self.report.fetched + self.report.errors
            elapsed = max(self.clock() - started, 1e-9)
            rate = done / elapsed
            eta = (total - done) / rate if rate > 0 else float("inf")
            logger.info(
                "index sync: %d/%d projects, %.1f/s, ETA %s, %d errors",
                done, total, rate, _format_eta(eta), self.report.errors,
            )

    # -- removals and the root ----------------------------------------------------------

    async def _remove(self, names: tuple[NormalizedName, ...]) -> None:
        limit = self.sync.max_deletions
        if len(names) > limit:
            reason = (
                f"{len(names)} projects are gone from the upstream listing, more than "
                f"sync.max_deletions ({limit}); nothing was removed"
            )
            logger.error("index sync: %s", reason)
            self.report.removal_refused = reason
            return
        try:
            await self.history.before_remove(names)
        except PyPIMirrorError as exc:  # the serials stay, so the next run removes them again
            for name in names:
                self._project_failed(name, f"cannot record its removal: {exc}")
            return
        removed: list[NormalizedName] = []
        for name in names:
            try:
                await asyncio.to_thread(_remove_project, self.layout, name)
            except OSError as exc:  # its serial stays, so the next run removes it again
                self._project_failed(name, f"cannot remove its pages: {_describe_os_error(exc)}")
                continue
            removed.append(name)
        if removed:
            await self.db.run(lambda conn: dbq.delete_serials(conn, removed))
            logger.info("index sync: removed %d projects", len(removed))
        self.report.removed = len(removed)

    async def _write_root_pages(self) -> None:
        # Two steps, so the dict of all serials is gone before the pages are rendered.
        projects = await asyncio.to_thread(_root_entries, await self.db.run(dbq.load_serials))
        try:
            await asyncio.to_thread(_write_root, self.layout, projects, self.prefix, self.write)
        except OSError as exc:
            reason = f"cannot write the root pages: {_describe_os_error(exc)}"
            if self.report.failed is not None:  # the same storage failure, already reported
                logger.warning("index sync: %s", reason)
                return
            logger.error("index sync: %s", reason)
            self.report.failed = reason


# -- pure helpers and the blocking steps, which run in worker threads ----------------------


def _served_serial(page: ProjectPage, document: UpstreamResponse) -> int | None:
    """The oldest serial among the answers used; None (stale) when the upstream gave none.

    A CDN may hold an old copy of one document and a fresh copy of the other, so the
    project is current only when both are.
    """
    serials = [page.last_serial]
    if document.status == 200:
        serials.append(read_last_serial(document.headers) or 0)
    return min(serials) or None


def _choose_page(
    name: NormalizedName,
    listed: ListedProject,
    simple: UpstreamResponse,
    document: UpstreamResponse,
) -> tuple[ProjectPage, str]:
    """The PEP 691 page when the upstream has one, else the page built from the JSON API.

    Returns the page and the URL it came from (file links may be relative to it).
    """
    content_type = simple.headers.get("Content-Type", "").split(";")[0].strip()
    if simple.status == 200 and content_type == SIMPLE_JSON:
        page = parse_simple_project_json(
            simple.body, display_name=listed.display_name, serial=read_last_serial(simple.headers)
        )
        return page, simple.url
    if document.status == 200:
        return parse_json_api(document.body), document.url
    if simple.status == 200:
        raise MalformedUpstreamError(
            f"{name!r}: upstream has no PEP 691 JSON page (Content-Type {content_type!r}) "
            "and no JSON-API document"
        )
    raise UpstreamStatusError(f"{name!r}: upstream has no page for this project", status=404)


def _drop_invalid_names(listing: Listing) -> Listing:
    """Names that are not valid project names never reach the disk (they could be paths)."""
    bad = [name for name in listing if not is_normalized_project_name(name)]
    for name in bad:
        logger.warning("index sync: ignoring invalid project name %r from the listing", name)
    return {name: listed for name, listed in listing.items() if name not in bad} if bad else listing


def _make_plan(
    local: Mapping[NormalizedName, tuple[str, int]], listing: Listing, on_disk: Iterable[str]
) -> SyncPlan:
    """:func:`plan_index_sync`, with a small plan copied into objects of its own.

    CPython gives memory back to the OS only by whole 1 MiB arenas. A plan of a few thousand
    projects that points into the listing of all of PyPI holds an object in nearly every
    arena of it, and so keeps ~120 MB for the whole run after the listing is gone. A large
    plan (a first sync) is the listing's memory anyway, and copying it would only add to it.
    """
    plan = plan_index_sync(local, listing, on_disk)
    if len(plan.fetch) + len(plan.remove) > len(listing) * DETACH_SHARE:
        return plan
    fetch = tuple(
        (_copy_name(name), ListedProject(_copy_text(listed.display_name), _copy_int(listed.serial)))
        for name, listed in plan.fetch
    )
    return SyncPlan(fetch=fetch, remove=tuple(_copy_name(name) for name in plan.remove))


def _copy_name(name: NormalizedName) -> NormalizedName:
    return NormalizedName(_copy_text(name))


def _copy_text(text: str) -> str:
    """A new str equal to ``text`` (``str(text)`` and slicing return the object itself)."""
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "surrogatepass")


def _copy_int(value: int) -> int:
    """A new int equal to ``value`` (``int(value)`` returns the object itself)."""
    return value + 0


def _project_dirs(layout: RepoLayout, listed: Container[str] = ()) -> list[str]:
    """The project directories on disk, except those of ``listed`` projects.

    The plan only looks for directories the listing lacks; leaving the listed ones out spares
    a list of every project's name (~60 MB for all of PyPI). A directory whose name no project
    can have (``lost+found``, say) is not ours to remove and is left alone.
    """
    try:
        with os.scandir(layout.simple_dir) as entries:
            return [
                entry.name
                for entry in entries
                if entry.name not in listed
                and is_normalized_project_name(entry.name)
                and entry.is_dir(follow_symlinks=False)
            ]
    except FileNotFoundError:
        return []


def _write_if_changed(path: Path, data: bytes, write: Writer) -> None:
    """Skip identical content: the file keeps its mtime, so clients' ETags stay valid."""
    try:
        with open(path, "rb") as handle:
            if handle.read() == data:
                return
    except FileNotFoundError:
        pass
    write(path, data)


def _write_project(layout: RepoLayout, project: RenderedProject, write: Writer) -> None:
    for variant, data in project.pages.items():
        _write_if_changed(layout.project_page(project.name, variant), data, write)
    if project.json_document is None:
        remove_path(layout.json_document(project.name))
    else:
        _write_if_changed(layout.json_document(project.name), project.json_document, write)


def _remove_project(layout: RepoLayout, name: NormalizedName) -> None:
    remove_path(layout.json_document(name))
    remove_path(layout.project_dir(name))


def _root_entries(serials: dict[NormalizedName, tuple[str, int]]) -> list[RootEntry]:
    """The stored projects as root-page entries, ordered by normalized name.

    Empties ``serials`` as it goes: each stored pair is freed as its entry is made, so the
    two forms of all of PyPI's projects are never in memory at once.
    """
    entries: list[RootEntry] = []
    while serials:
        name, (display, serial) = serials.popitem()
        entries.append((display, name, serial))
    entries.sort(key=itemgetter(1))
    return entries


def _write_root(layout: RepoLayout, projects: Sequence[RootEntry], prefix: str, write: Writer) -> None:
    """Rebuild the root pages from what is stored, so they list exactly the served projects.

    ``projects`` comes from :func:`_root_entries`. One page at a time is rendered, written and
    compressed (each is tens of MB for all of PyPI), and the HTML, served under two names,
    is compressed once.
    """
    last_serial = max((serial for _, _, serial in projects), default=0)
    html = render_root_html(projects, prefix=prefix)
    _write_root_page(layout, ("index.html", "index.v1_html"), html, write)
    del html
    json_page = render_root_json(projects, last_serial=last_serial)
    _write_root_page(layout, ("index.v1_json",), json_page, write)


def _write_root_page(layout: RepoLayout, variants: tuple[str, ...], data: bytes, write: Writer) -> None:
    """Write ``data`` and its gzip sibling under each of ``variants``, in that order."""
    compressed = gzip.compress(data, compresslevel=6, mtime=0)
    for variant in variants:
        write(layout.root_page(variant), data)
        write(layout.root_page(variant + ".gz"), compressed)


def _describe_os_error(exc: OSError) -> str:
    """``No space left on device (/srv/pypi/simple/x/index.html)``: the cause and where, one line."""
    text = exc.strerror or str(exc)
    return f"{text} ({exc.filename})" if exc.filename else text


def _format_eta(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
