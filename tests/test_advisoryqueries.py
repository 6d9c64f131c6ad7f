"""The advisory tables' queries, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from osvexport import record
from pypimirror import advisoryqueries as aq
from pypimirror.db import Database
from pypimirror.osv import parse_record

RECORDS = [
    record("PYSEC-2026-1", "Alpha", ranges=[{"introduced": "0"}, {"fixed": "1.1"}], aliases=["CVE-2026-0001"]),
    record("GHSA-beta", "beta", versions=["2.0"], modified="2026-02-01T00:00:00Z"),
    record("PYSEC-2026-3", "beta", versions=["1.0"], withdrawn="2026-01-05T00:00:00Z"),
    record("MAL-2026-4", "evil", versions=["0.1"]),
]


def test_records_are_stored_replaced_and_read_back(database: Database) -> None:
    with database.begin() as conn:
        assert aq.advisories_version(conn) == (0, None)
        aq.store_advisories(conn, [parse_record(item) for item in RECORDS], now=10.0)
    with database.connect() as conn:
        assert aq.load_modified(conn)["GHSA-beta"] == "2026-02-01T00:00:00.000000Z"
        assert [(item.id, item.aliases, item.package.name) for item in aq.applicable_advisories(conn)] == [
            ("PYSEC-2026-1", ("CVE-2026-0001",), "alpha"), ("GHSA-beta", (), "beta"), ("MAL-2026-4", (), "evil"),
        ]
        assert [item.id for item in aq.applicable_advisories(conn, "beta")] == ["GHSA-beta"]
        assert aq.count_advisories(conn) == aq.AdvisoryCounts(total=4, withdrawn=1, malicious=1)
        assert aq.advisory_record(conn, "PYSEC-2026-3") == RECORDS[2]
        assert aq.advisory_record(conn, "NOPE") is None
        assert [item["id"] for item in aq.advisory_records(conn, ["MAL-2026-4", "GHSA-beta"])] == ["GHSA-beta", "MAL-2026-4"]
        assert aq.advisories_version(conn) == (4, 10.0)
    # A newer version replaces the record and its packages whole.
    newer = record("GHSA-beta", "gamma", versions=["3.0"], modified="2026-03-01T00:00:00Z")
    with database.begin() as conn:
        aq.store_advisories(conn, [parse_record(newer)], now=20.0)
    with database.connect() as conn:
        assert [item.id for item in aq.applicable_advisories(conn, "beta")] == []
        assert [item.id for item in aq.applicable_advisories(conn, "gamma")] == ["GHSA-beta"]
        assert aq.advisories_version(conn) == (4, 20.0)
