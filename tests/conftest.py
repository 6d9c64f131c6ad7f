"""Shared fixtures: a clean environment, a real event loop per test, and the fake upstream."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tornado.httpclient import AsyncHTTPClient
from tornado.platform.asyncio import AsyncIOLoop

# Test helpers (the fake upstream index) live beside the tests; with --import-mode=importlib
# the tests folder is not on sys.path by itself.
sys.path.insert(0, str(Path(__file__).parent))
# Builders shared with the benchmarks (a synthetic stored-pages repository) live in bench/;
# appended, so nothing there can shadow a test helper or an installed module.
sys.path.append(str(Path(__file__).parent.parent / "bench"))

from cleanenv import scrub_environ  # noqa: E402
from dbhelpers import postgres_database  # noqa: E402
from fakeindex import FakeIndex, running_fake_index  # noqa: E402

from pypimirror.db import Database  # noqa: E402
from pypimirror.upstream import configure_curl_client  # noqa: E402


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy or PYPIMIRROR_* variable of the developer's shell leaks into a test."""
    scrub_environ(monkeypatch)


@pytest.fixture
def io_loop() -> Iterator[AsyncIOLoop]:
    """pytest-tornado's loop without its deprecated make_current/clear_current calls."""
    aio = asyncio.new_event_loop()
    asyncio.set_event_loop(aio)
    loop = AsyncIOLoop(asyncio_loop=aio)
    yield loop
    loop.close(all_fds=True)
    asyncio.set_event_loop(None)


@pytest.fixture
def fake_index() -> Iterator[FakeIndex]:
    """A running fake upstream index on 127.0.0.1, empty until the test adds projects."""
    yield from running_fake_index()


@pytest.fixture
def curl_client(io_loop: AsyncIOLoop) -> Iterator[AsyncHTTPClient]:
    """The loop's libcurl client, configured before anything creates a client on this loop.

    The class-wide configuration is restored afterwards, so other tests see theirs.
    """
    saved = AsyncHTTPClient._save_configuration()
    configure_curl_client(max_clients=20)
    client = AsyncHTTPClient()
    yield client
    client.close()
    AsyncHTTPClient._restore_configuration(saved)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database: a file in tmp_path, or a throwaway PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'pypi-mirror.db'}"
    else:
        with postgres_database() as url:
            yield url


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    """An opened empty database of each kind; modules that need another kind define their own."""
    db = Database.open(database_url)
    yield db
    db.dispose()
