"""``/metrics`` and ``/healthz`` over HTTP, against a real SQLite database."""

from __future__ import annotations

import os
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from prometheus_client.parser import text_string_to_metric_families

from pypimirror.app import Services
from pypimirror.queries import finish_job_run, start_job_run
from pypimirror.handlers.base import NotFoundHandler, route_label
from pypimirror.handlers.files import PackageFileHandler
from pypimirror.handlers.jsonapi import JsonApiHandler
from pypimirror.handlers.ops import MetricsHandler
from pypimirror.handlers.simple import SimpleProjectHandler

MISSING_FILE = f"/pypi/packages/ab/cd/{'ef' * 30}/missing-1.0-py3-none-any.whl"
CACHED_RELPATH = f"12/34/{'56' * 30}/cached-1.0-py3-none-any.whl"


@pytest.fixture(name="services")
def _services(services_with_status: Services) -> Services:
    return services_with_status


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.mark.gen_test
async def test_metrics_parse_and_move_with_traffic(fetch, write_project, make_page, mirror_config):
    write_project(make_page("demo"))
    cached = mirror_config.cache.tiers[0].path / CACHED_RELPATH
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"w" * 5000)
    first = await fetch("/metrics")
    assert first.code == 200
    assert first.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    before = samples(first.body.decode())
    assert ("pypimirror_http_requests_total", (("route", "simple_project"), ("status", "200"))) not in before
    for _ in range(2):
        assert (await fetch("/pypi/simple/demo/")).code == 200
    assert (await fetch(MISSING_FILE)).code == 302
    assert (await fetch(f"/pypi/packages/{CACHED_RELPATH}")).code == 200
    after = samples((await fetch("/metrics")).body.decode())
    assert after[("pypimirror_http_requests_total", (("route", "simple_project"), ("status", "200")))] == 2
    assert after[("pypimirror_http_requests_total", (("route", "package_file"), ("status", "302")))] == 1
    assert after[("pypimirror_http_requests_total", (("route", "metrics"), ("status", "200")))] == 1
    assert after[("pypimirror_package_responses_total", (("kind", "redirected"),))] == 1
    assert after[("pypimirror_package_responses_total", (("kind", "local"),))] == 1
    assert after[("pypimirror_package_bytes_total", (("kind", "local"),))] == 5000
    assert after[("pypimirror_http_response_bytes_total", (("route", "simple_project"),))] > 0


@pytest.mark.gen_test
async def test_metrics_carry_the_job_history_and_tier_fill(fetch, database, mirror_config):
    with database.begin() as conn:
        run_id = start_job_run(conn, "index_sync", mirror_config.node_id, 1000.0)
        finish_job_run(conn, run_id, 1100.0, "ok", {}, None)
    found = samples((await fetch("/metrics")).body.decode())
    assert found[("pypimirror_job_last_success_timestamp_seconds", (("job", "index_sync"),))] == 1100.0
    assert found[("pypimirror_job_last_duration_seconds", (("job", "index_sync"),))] == 100.0
    assert found[("pypimirror_cache_tier_limit_bytes", (("tier", "1"),))] == 2**30


@pytest.mark.parametrize("database", ["unreachable"], indirect=True)
@pytest.mark.gen_test
async def test_metrics_without_a_database_still_answer_without_its_figures(fetch, caplog, database):
    response = await fetch("/metrics")
    assert response.code == 200
    text = response.body.decode()
    assert "pypimirror_http_requests" in text and "pypimirror_job_" not in text
    assert "/metrics without job and tier figures: database error on sqlite:///" in caplog.text


@pytest.mark.gen_test
async def test_healthz_is_ok_when_database_and_repo_work(fetch):
    response = await fetch("/healthz")
    assert (response.code, response.body) == (200, b"ok\n")
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-store"
    head = await fetch("/healthz", method="HEAD")
    assert (head.code, head.body) == (200, b"")


@pytest.mark.gen_test
async def test_healthz_is_503_with_the_reason_when_the_repo_is_gone(fetch, mirror_config, caplog):
    shutil.rmtree(mirror_config.repo_path)  # the database file went with it
    response = await fetch("/healthz")
    assert (response.code, response.body) == (
        503, b"database: the file was deleted while in use\nrepo_path: not writable (No such file or directory)\n"
    )
    assert "health check failed: database: the file was deleted while in use; repo_path: not writable" in caplog.text


@pytest.mark.parametrize("database", ["unreachable"], indirect=True)
@pytest.mark.gen_test
async def test_healthz_is_503_when_the_database_cannot_be_reached(fetch, mirror_config, database):
    mirror_config.repo_path.mkdir(parents=True)
    response = await fetch("/healthz")
    assert (response.code, response.body) == (503, b"database: cannot be reached\n")


@pytest.mark.parametrize(
    ("handler", "label"),
    [(PackageFileHandler, "package_file"), (SimpleProjectHandler, "simple_project"), (MetricsHandler, "metrics"),
     (JsonApiHandler, "json_api"), (NotFoundHandler, "not_found")],
)
def test_route_labels_are_the_handler_names_in_snake_case(handler, label):
    assert route_label(handler) == label


def damage_database(path: Path, damage: str) -> None:
    """Damage the SQLite file at ``path`` as a disk fault or an operator could, with every page
    first moved from the WAL into the file (so the file alone holds the database)."""
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    if damage == "deleted":
        path.unlink()
    elif damage == "truncated":
        os.truncate(path, 0)
    elif damage == "garbage":
        path.write_bytes(b"\x5a" * path.stat().st_size)  # in place: the same inode
    elif damage == "replaced":
        path.with_name("other.db").write_bytes(path.read_bytes())
        path.with_name("other.db").replace(path)
    else:  # "behind-header": the header survives, the rest of the first page does not
        with path.open("r+b") as handle:
            handle.seek(16)
            handle.write(b"\xff" * 4000)


DAMAGE = ["deleted", "truncated", "garbage", "replaced", "behind-header"]


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("pooled", [True, False], ids=["pooled", "new-connections"])
@pytest.mark.gen_test
async def test_a_damaged_database_file_degrades_metrics_and_the_info_page_and_fails_healthz(
    fetch, database, mirror_config, caplog, damage, pooled
):
    with database.begin() as conn:
        run_id = start_job_run(conn, "index_sync", mirror_config.node_id, 1000.0)
        finish_job_run(conn, run_id, 1100.0, "ok", {}, None)
    assert (await fetch("/healthz")).code == 200
    damage_database(Path(make_url(mirror_config.database.url).database), damage)
    if not pooled:
        database.engine.dispose()  # what a process opening its connections after the damage sees
    metrics = await fetch("/metrics")
    assert metrics.code == 200
    assert "pypimirror_http_requests" in metrics.body.decode() and "pypimirror_job_" not in metrics.body.decode()
    info = await fetch("/pypi/")
    assert info.code == 200 and "the database cannot be read" in info.body.decode()
    health = await fetch("/healthz")
    assert health.code == 503
    assert health.body.startswith(b"database: ") and health.body.count(b"\n") == 1
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize(
    ("damage", "reason"),
    [("deleted", b"database: the file was deleted while in use\n"),
     ("replaced", b"database: the file was replaced by another file while in use\n"),
     ("truncated", b"database: the file was overwritten or truncated while in use (no SQLite header)\n")],
)
@pytest.mark.gen_test
async def test_healthz_names_what_happened_to_the_database_file(fetch, mirror_config, database, damage, reason):
    assert (await fetch("/healthz")).code == 200
    damage_database(Path(make_url(mirror_config.database.url).database), damage)
    response = await fetch("/healthz")
    assert (response.code, response.body) == (503, reason)
