"""Fixtures for the handler tests: a repo on disk, the mirror's app on a real socket, recorders.

``app`` is what pytest-tornado's ``http_server`` serves; a module changes the configuration by
overriding ``config_data`` (the YAML tree, before ``parse_config``). Votes and access-log
entries land in plain recorders the test can read; pages are rendered by the real renderers.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from packaging.utils import NormalizedName
from tornado.httpclient import AsyncHTTPClient, HTTPResponse
from tornado.web import Application

from pypimirror.accesslog import AccessEntry
from pypimirror.app import Services, make_app
from pypimirror.config import Config
from pypimirror.configreader import parse_config
from pypimirror.db import Database
from pypimirror.jobs.registry import JOBS
from pypimirror.pagecache import DEFAULT_REVALIDATE_AFTER_S, PageCache
from pypimirror.pages import (
    DistFile,
    ProjectPage,
    RootEntry,
    render_project_html,
    render_project_json,
    render_root_html,
    render_root_json,
    rewrite_file_url,
)
from pypimirror.status import StatusReader
from pypimirror.storage import RepoLayout, atomic_write

PREFIX = "/pypi"
UPSTREAM = "http://127.0.0.1:9"  # never contacted: handler tests only see redirects to it
PACKAGES_URL = f"{UPSTREAM}/packages"
REDIRECT_URL = "http://files.example.org/packages"


@dataclass
class RecordingVotes:
    """A vote sink that keeps every offer: (file_path, network_prefix, user_agent)."""

    offers: list[tuple[str, str | None, str | None]] = field(default_factory=list)

    def offer(self, file_path: str, network_prefix: str | None, user_agent: str | None) -> bool:
        self.offers.append((file_path, network_prefix, user_agent))
        return True


@dataclass
class RecordingLog:
    """An access-log sink that keeps every entry."""

    entries: list[AccessEntry] = field(default_factory=list)

    def write(self, entry: AccessEntry) -> None:
        self.entries.append(entry)


@pytest.fixture
def config_data(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """The configuration tree; a test changes top-level keys with
    ``@pytest.mark.parametrize("config_data", [{...}], indirect=True)``."""
    overrides: dict[str, Any] = getattr(request, "param", {})
    return {
        "repo_path": str(tmp_path / "repo"),
        "prefix": PREFIX,
        "upstream": {"pypi_url": UPSTREAM, "packages_url": PACKAGES_URL, "redirect_url": REDIRECT_URL},
        "cache": {
            "tiers": [
                {"path": str(tmp_path / "hot"), "size_limit": "1g"},
                {"path": str(tmp_path / "cold"), "size_limit": "1g"},
            ]
        },
        **overrides,
    }


@pytest.fixture
def mirror_config(config_data: dict[str, Any], tmp_path: Path) -> Config:
    return parse_config(config_data, base_dir=tmp_path)


@pytest.fixture
def layout(mirror_config: Config) -> RepoLayout:
    return RepoLayout(mirror_config.repo_path)


@pytest.fixture
def votes() -> RecordingVotes:
    return RecordingVotes()


@pytest.fixture
def access_log() -> RecordingLog:
    return RecordingLog()


@pytest.fixture
def pages(request: pytest.FixtureRequest) -> PageCache:
    """The page cache, revalidating once a second as served; a test that rewrites a page and
    must see it at once asks for ``revalidate_after`` 0 with
    ``@pytest.mark.parametrize("pages", [0], indirect=True)``."""
    return PageCache(revalidate_after=getattr(request, "param", DEFAULT_REVALIDATE_AFTER_S))


@pytest.fixture
def services(pages: PageCache, votes: RecordingVotes, access_log: RecordingLog) -> Services:
    return Services(pages=pages, votes=votes, access_log=access_log)


@pytest.fixture
def database(request: pytest.FixtureRequest, mirror_config: Config, tmp_path: Path) -> Iterator[Database]:
    """The mirror's database; ``"unreachable"`` (indirect parameter) for one that cannot be opened."""
    if getattr(request, "param", "working") == "unreachable":
        db = Database(f"sqlite:///{tmp_path / 'no-such-dir' / 'db.sqlite'}")
    else:
        mirror_config.repo_path.mkdir(parents=True, exist_ok=True)
        db = Database.open(mirror_config.database.url)
    yield db
    db.dispose()


@pytest.fixture
def services_with_status(
    pages: PageCache, votes: RecordingVotes, access_log: RecordingLog, database: Database, mirror_config: Config
) -> Services:
    """Services with a StatusReader on a real database, for the info page, /healthz and /metrics."""
    limits = [tier.size_limit for tier in mirror_config.cache.tiers]
    status = StatusReader(database, node_id=mirror_config.node_id, tier_limits=limits,
                          repo_path=mirror_config.repo_path, job_titles=JOBS.titles(), max_age=0)
    return Services(pages=pages, votes=votes, access_log=access_log, status=status)


@pytest.fixture
def app(mirror_config: Config, services: Services) -> Application:
    return make_app(mirror_config, services)


@pytest.fixture
def base_url(http_port: int) -> str:
    """pytest-tornado's says ``localhost``; the server listens on 127.0.0.1 only."""
    return f"http://127.0.0.1:{http_port}"


Fetch = Callable[..., Awaitable[HTTPResponse]]


@pytest.fixture
def fetch(http_client: AsyncHTTPClient, base_url: str) -> Fetch:
    """``await fetch(path, **request_options)``: no redirects followed, errors returned, no
    implicit ``Accept-Encoding`` (a test that wants gzip asks for it)."""

    async def fetch_path(path: str, **options: Any) -> HTTPResponse:
        options.setdefault("follow_redirects", False)
        options.setdefault("decompress_response", False)
        response: HTTPResponse = await http_client.fetch(base_url + path, raise_error=False, **options)
        return response

    return fetch_path


RawRequest = Callable[[bytes], Awaitable[bytes]]


@pytest.fixture
def raw_request(http_server: object, http_port: int) -> RawRequest:
    """Send ``request_target`` byte for byte (no client would) and return the whole raw answer."""

    async def send(request_target: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
        writer.write(b"GET " + request_target + b" HTTP/1.1\r\nHost: mirror\r\nConnection: close\r\n\r\n")
        await writer.drain()
        answer = await reader.read()
        writer.close()
        await writer.wait_closed()
        return answer

    return send


def _dist_file(filename: str, version: str, digest: str) -> DistFile:
    return DistFile(
        filename=filename,
        url=f"{PACKAGES_URL}/{digest[:2]}/{digest[2:4]}/{digest[4:]}/{filename}",
        sha256=digest,
        requires_python=">=3.8",
        size=1234,
        upload_time="2024-01-01T00:00:00Z",
        yanked=False,
        core_metadata=True,
        provenance=None,
        version=version,
    )


MakePage = Callable[..., ProjectPage]


@pytest.fixture
def make_page() -> MakePage:
    """``make_page(name, serial=42)``: a one-wheel project page."""

    def page(name: str, serial: int = 42) -> ProjectPage:
        wheel = _dist_file(f"{name.replace('-', '_')}-1.0-py3-none-any.whl", "1.0", "ab" * 32)
        return ProjectPage(
            name=NormalizedName(name), display_name=name.title(), last_serial=serial, files=(wheel,), versions=("1.0",)
        )

    return page


WriteProject = Callable[[ProjectPage], None]


@pytest.fixture
def write_project(layout: RepoLayout) -> WriteProject:
    """Write the three page files of a project, as the index sync does."""
    url_for = partial(rewrite_file_url, packages_url=PACKAGES_URL, prefix=PREFIX)

    def write(page: ProjectPage) -> None:
        html = render_project_html(page, url_for=url_for, repository_meta=True)
        atomic_write(layout.project_page(page.name, "index.html"), html)
        atomic_write(layout.project_page(page.name, "index.v1_html"), html)
        atomic_write(layout.project_page(page.name, "index.v1_json"), render_project_json(page, url_for=url_for))

    return write


WriteRoot = Callable[..., None]


@pytest.fixture
def write_root(layout: RepoLayout) -> WriteRoot:
    """``write_root(projects, serial=, gzip_siblings=)``: the root pages, optionally with ``.gz`` twins."""

    def write(projects: list[RootEntry], *, serial: int, gzip_siblings: bool) -> None:
        html = render_root_html(projects, prefix=PREFIX)
        variants = {"index.html": html, "index.v1_html": html,
                    "index.v1_json": render_root_json(projects, last_serial=serial)}
        for variant, data in variants.items():
            atomic_write(layout.root_page(variant), data)
            if gzip_siblings:
                atomic_write(layout.root_page(variant + ".gz"), gzip.compress(data, mtime=0))

    return write


class OpenAudit:
    """Records the files this process opens inside ``with audit:`` (audit event ``open``)."""

    def __init__(self) -> None:
        self.active = False
        self.opened: list[str] = []

    def __enter__(self) -> OpenAudit:
        self.active = True
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.active = False

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if self.active and event == "open" and isinstance(args[0], str | bytes | os.PathLike):
            self.opened.append(os.fsdecode(args[0]))


_AUDIT = OpenAudit()
sys.addaudithook(_AUDIT.hook)  # audit hooks cannot be removed; this one records only when active


@pytest.fixture
def open_audit() -> Iterator[OpenAudit]:
    """``with open_audit: ...`` records every path opened meanwhile in ``open_audit.opened``."""
    _AUDIT.opened = []
    yield _AUDIT
    _AUDIT.active = False
