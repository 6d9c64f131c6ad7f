"""The OSV API subset over HTTP, answered from advisories stored in a real SQLite database."""

from __future__ import annotations

import json
from typing import Any

import pytest

from osvexport import record
from pypimirror import advisoryqueries as aq
from pypimirror.app import Services
from pypimirror.db import Database
from pypimirror.osv import parse_record
from pypimirror.osvapi import MAX_BATCH, AdvisoryLookup

RECORDS = [
    record("PYSEC-2026-1", "Alpha", ranges=[{"introduced": "0"}, {"fixed": "1.1"}], aliases=["CVE-2026-0001"]),
    record("GHSA-beta-list", "beta", versions=["2.0", "2.1"], modified="2026-02-03T04:05:06.5Z"),
    record("PYSEC-2026-3", "beta", versions=["2.0"], withdrawn="2026-01-05T00:00:00Z"),
    record("MAL-2026-4", "evil-pkg", versions=["0.1"]),
]


@pytest.fixture(name="services")
def _services(services: Services, database: Database) -> Services:
    with database.begin() as conn:
        aq.store_advisories(conn, [parse_record(item) for item in RECORDS])
    return Services(pages=services.pages, votes=services.votes, access_log=services.access_log,
                    advisories=AdvisoryLookup(database))


async def post(fetch: Any, path: str, body: object) -> tuple[int, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await fetch(f"/pypi/osv/v1/{path}", method="POST", body=raw)
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    return response.code, json.loads(response.body)


def pypi(name: str, version: str | None = None) -> dict[str, Any]:
    query: dict[str, Any] = {"package": {"name": name, "ecosystem": "PyPI"}}
    if version is not None:
        query["version"] = version
    return query


@pytest.mark.gen_test
async def test_query_answers_the_full_records_that_apply_to_a_version(fetch) -> None:
    assert await post(fetch, "query", pypi("ALPHA", "1.0")) == (200, {"vulns": [RECORDS[0]]})
    assert await post(fetch, "query", pypi("alpha", "1.1")) == (200, {})
    # The withdrawn record of beta 2.0 never matches.
    assert await post(fetch, "query", pypi("beta", "2.0")) == (200, {"vulns": [RECORDS[1]]})
    assert await post(fetch, "query", pypi("unknown", "1.0")) == (200, {})
    assert await post(fetch, "query", pypi("beta")) == (200, {"vulns": [RECORDS[1]]})


@pytest.mark.gen_test
async def test_query_by_purl_and_other_ecosystems(fetch) -> None:
    assert await post(fetch, "query", {"package": {"purl": "pkg:pypi/evil_pkg@0.1"}}) == (200, {"vulns": [RECORDS[3]]})
    assert await post(fetch, "query", {"package": {"purl": "pkg:pypi/alpha"}, "version": "0.5"}) == (200, {"vulns": [RECORDS[0]]})
    assert await post(fetch, "query", {"package": {"purl": "pkg:npm/alpha@1.0"}}) == (200, {})
    assert await post(fetch, "query", {"package": {"name": "alpha", "ecosystem": "npm"}, "version": "1.0"}) == (200, {})


@pytest.mark.gen_test
async def test_querybatch_answers_ids_and_modified_per_query_in_order(fetch) -> None:
    code, body = await post(fetch, "querybatch", {"queries": [pypi("beta", "2.1"), pypi("gamma", "1"), pypi("alpha", "1.0.0")]})
    assert code == 200
    assert body == {"results": [
        {"vulns": [{"id": "GHSA-beta-list", "modified": "2026-02-03T04:05:06.500000Z"}]},
        {},
        {"vulns": [{"id": "PYSEC-2026-1", "modified": "2026-01-02T03:04:05Z"}]},
    ]}


@pytest.mark.gen_test
async def test_vulns_by_id_shows_any_stored_record_and_404s_the_rest(fetch) -> None:
    found = await fetch("/pypi/osv/v1/vulns/PYSEC-2026-3")
    assert found.code == 200 and json.loads(found.body) == RECORDS[2]
    missing = await fetch("/pypi/osv/v1/vulns/PYSEC-0000-0")
    assert missing.code == 404 and json.loads(missing.body) == {"code": 5, "message": "Bug not found."}


@pytest.mark.gen_test
@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("query", b"{not json", "the request body is not JSON"),
        ("query", [], "a query is a JSON object"),
        ("query", {"commit": "abc"}, "commit queries are not supported"),
        ("query", {"version": "1.0"}, "a query needs a package"),
        ("query", {"package": {"name": "alpha"}}, "package.ecosystem must be given"),
        ("query", {"package": {"purl": "pkg:pypi/alpha@1.0"}, "version": "1.0"}, "the version is given twice"),
        ("query", {"package": {"purl": "alpha"}}, "'alpha' is not a package URL"),
        ("query", {**pypi("alpha"), "version": 1}, "version must be a non-empty string"),
        ("querybatch", {"queries": "x"}, 'a batch is {"queries": [...]}'),
        ("querybatch", {"queries": [pypi("alpha", "1")] * (MAX_BATCH + 1)}, "too many queries"),
        ("querybatch", {"queries": [pypi("alpha", "1"), {"commit": "x"}]}, "commit queries are not supported"),
    ],
)
async def test_bad_requests_are_400_with_the_reason(fetch, path: str, body: object, message: str) -> None:
    code, answer = await post(fetch, path, body)
    assert code == 400
    assert answer["code"] == 3 and answer["message"].startswith(message)
