"""Database test helpers: throwaway PostgreSQL databases, and a vote writer run as its own process.

``postgres_database()`` yields the URL of a fresh database on the server at 127.0.0.1:5432 and
drops it afterwards; it skips the test, with the reason, when no server answers.
Run as a script, this module is one writer process of the concurrency test::

    python dbhelpers.py URL WRITER_ID SECONDS

It records one vote per transaction (like the request path) for SECONDS and prints a JSON
object ``{"inserted": n, "errors": [...]}`` on stdout.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from pypimirror.db import Database
from pypimirror.queries import Vote, record_votes

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test; dropped (even if still in use) after."""
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable on 127.0.0.1:5432: {' '.join(str(exc).split())}")
    name = f"pypimirror_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield PG_URL.format(name=name)
        finally:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def write_votes(url: str, writer_id: int, seconds: float) -> dict[str, object]:
    """One vote per transaction until time is up; every vote is unique, so each must land."""
    inserted = 0
    errors: list[str] = []
    db = Database(url, pool_size=1)
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        vote = Vote(f"w{writer_id}/file{n % 37}", f"10.{writer_id}.{n}.0/24", 1_000 + n)
        n += 1
        try:
            with db.begin() as conn:
                inserted += record_votes(conn, [vote], dedup_window_s=600)
        except Exception as exc:  # the test reports every failure, whatever its kind
            errors.append(f"{type(exc).__name__}: {exc}")
    db.dispose()
    return {"attempted": n, "inserted": inserted, "errors": errors[:5], "error_count": len(errors)}


if __name__ == "__main__":
    print(json.dumps(write_votes(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))))
