"""Reading OSV exports and matching PyPI versions as the OSV schema defines it."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from osvexport import record, write_tree, write_zip
from pypimirror.osv import Advisory, BadRecord, NotPyPI, ReadStats, parse_record, read_export


def _advisory(**kwargs: object) -> Advisory:
    return parse_record(record("PYSEC-1", "Demo_Pkg", **kwargs))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("version", "affected"),
    [("0.9", False), ("1.0", True), ("1.0.0", True), ("1.4.2", True), ("1.5", False), ("2.0rc1", False), ("2.0", True), ("2.1", True), ("2.2", False)],
)
def test_a_range_covers_introduced_to_fixed_and_up_to_last_affected(version: str, affected: bool) -> None:
    advisory = parse_record(
        {
            **record("PYSEC-1", "demo"),
            "affected": [
                {
                    "package": {"ecosystem": "PyPI", "name": "demo"},
                    "ranges": [
                        # Events in no particular order, as OSV allows: they are sorted by version.
                        {"type": "ECOSYSTEM", "events": [{"fixed": "1.5"}, {"introduced": "1.0"}, {"last_affected": "2.1"}, {"introduced": "2.0"}]},
                        {"type": "GIT", "repo": "https://example.org/demo.git", "events": [{"introduced": "abc"}, {"limit": "def"}]},
                    ],
                }
            ],
        }
    )
    assert advisory.affects("demo", version) is affected


def test_introduced_zero_covers_every_version_including_pre_releases() -> None:
    advisory = _advisory(ranges=[{"introduced": "0"}, {"fixed": "3.0"}])
    assert advisory.affects("demo-pkg", "0.0.1.dev0")
    assert advisory.affects("demo-pkg", "2.9")
    assert not advisory.affects("demo-pkg", "3.0")


def test_explicit_versions_match_normalized_and_names_are_normalized() -> None:
    advisory = _advisory(versions=["1.0", "2.0.post1", "not-pep440"])
    assert advisory.affects("DEMO.pkg", "1.0.0")
    assert advisory.affects("demo-pkg", "2.0-post1")
    assert advisory.affects("demo-pkg", "not-pep440")
    assert not advisory.affects("demo-pkg", "1.1")
    assert not advisory.affects("other", "1.0")


def test_a_withdrawn_record_applies_to_nothing() -> None:
    advisory = _advisory(versions=["1.0"], withdrawn="2026-01-03T00:00:00Z")
    assert advisory.withdrawn == "2026-01-03T00:00:00.000000Z"
    assert not advisory.affects("demo-pkg", "1.0")


def test_the_record_keeps_what_is_stored() -> None:
    advisory = _advisory(
        versions=["1.0"], aliases=["CVE-2026-1", "GHSA-xxxx"], severity=[{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N"}]
    )
    assert advisory.id == "PYSEC-1"
    assert advisory.aliases == ("CVE-2026-1", "GHSA-xxxx")
    assert advisory.summary == "PYSEC-1 in Demo_Pkg"
    assert advisory.severity == ({"type": "CVSS_V3", "score": "CVSS:3.1/AV:N"},)
    assert advisory.modified == "2026-01-02T03:04:05.000000Z"
    assert [package.name for package in advisory.affected] == ["demo-pkg"]
    assert not advisory.is_malicious
    assert parse_record(record("MAL-2026-1", "evil", versions=["1.0"])).is_malicious


def test_stored_form_of_a_package_round_trips() -> None:
    package = _advisory(ranges=[{"introduced": "0"}, {"fixed": "1.5"}], versions=["2.0"]).affected[0]
    again = type(package).from_json(package.name, json.loads(json.dumps(package.to_json())))
    assert again == package


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "a record is a JSON object"),
        ({"modified": "2026-01-01T00:00:00Z"}, "no id"),
        (record("X-1", "demo", ranges=[{"introduced": "0"}, {"fixed": "not a version!"}]), "not a PEP 440 version"),
        (record("X-1", "demo", modified="yesterday"), "not an RFC 3339 time"),
        ({**record("X-1", "demo"), "affected": [{"versions": ["1.0"]}]}, "no package"),
    ],
)
def test_records_that_break_the_schema_are_refused_with_the_reason(data: object, message: str) -> None:
    with pytest.raises(BadRecord, match=message):
        parse_record(data)


def test_a_record_of_another_ecosystem_is_told_apart() -> None:
    with pytest.raises(NotPyPI):
        parse_record(record("GO-1", "example.org/mod", ecosystem="Go", versions=["1.0"]))


def test_a_zip_export_skips_and_counts_what_it_cannot_use(tmp_path: Path) -> None:
    good = record("PYSEC-1", "demo", versions=["1.0"])
    archive = write_zip(
        tmp_path / "all.zip",
        [good, record("GO-1", "mod", ecosystem="Go", versions=["1"]), record("X-2", "demo", ranges=[{"introduced": "x y"}])],
        extra={"broken.json": b"{not json", "README.txt": b"ignored", "list.json": b"[1, 2]"},
    )
    stats = ReadStats()
    advisories = list(read_export(archive, stats))
    assert [advisory.id for advisory in advisories] == ["PYSEC-1"]
    assert advisories[0].record == good
    assert (stats.records, stats.other_ecosystem, stats.bad_records, stats.unreadable) == (1, 1, 2, 1)
    assert stats.skipped == 4


def test_a_corrupt_archive_is_counted_not_fatal(tmp_path: Path) -> None:
    tree = tmp_path / "export"
    write_tree(tree, [record("PYSEC-1", "demo", versions=["1.0"])])
    (tree / "truncated.zip").write_bytes(write_zip(tmp_path / "x.zip", [record("PYSEC-2", "demo")]).read_bytes()[:40])
    stats = ReadStats()
    assert [advisory.id for advisory in read_export(tree, stats)] == ["PYSEC-1"]
    assert stats.corrupt_archives == 1
    stats = ReadStats()
    assert list(read_export(tree / "truncated.zip", stats)) == []
    assert stats.corrupt_archives == 1


def test_a_damaged_member_of_a_zip_is_skipped(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "all.zip", [record("PYSEC-1", "demo", versions=["1.0"]), record("PYSEC-2", "demo", versions=["2.0"])])
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as opened:
        member = opened.getinfo("PYSEC-2.json")
    data[member.header_offset + 30 + len(member.filename) + 5] ^= 0xFF  # flips a byte of the body: CRC mismatch
    archive.write_bytes(bytes(data))
    stats = ReadStats()
    assert [advisory.id for advisory in read_export(archive, stats)] == ["PYSEC-1"]
    assert stats.unreadable == 1


def test_a_directory_like_the_pypa_database_reads_yaml_with_bare_times(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "db", [record("PYSEC-1", "demo", ranges=[{"introduced": "0"}, {"fixed": "1.5"}])])
    (tree / "vulns" / "demo" / "PYSEC-2.yaml").write_text(
        "id: PYSEC-2\nmodified: 2026-02-03T04:05:06Z\naffected:\n- package: {ecosystem: PyPI, name: demo}\n  versions: ['2.0']\n"
    )
    (tree / ".git").mkdir()
    (tree / ".git" / "junk.json").write_text("{}")
    stats = ReadStats()
    advisories = {advisory.id: advisory for advisory in read_export(tree, stats)}
    assert sorted(advisories) == ["PYSEC-1", "PYSEC-2"]
    assert advisories["PYSEC-2"].modified == "2026-02-03T04:05:06.000000Z"
    assert advisories["PYSEC-2"].record["modified"] == "2026-02-03T04:05:06Z"
    json.dumps(advisories["PYSEC-2"].record)  # the API can answer with it
    assert advisories["PYSEC-1"].affects("demo", "1.4")
    assert stats.skipped == 0


def test_a_missing_source_is_an_error_of_its_own(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        list(read_export(tmp_path / "absent.zip", ReadStats()))
