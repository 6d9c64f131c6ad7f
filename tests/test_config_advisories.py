"""The ``advisories`` section: source, mode, waivers, audit, the clear errors for bad values, and
whether a serving process applies the policy."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import yaml

from pypimirror.config import AdvisoriesConfig, AdvisoryWaiver
from pypimirror.configreader import parse_config
from pypimirror.db import Database
from pypimirror.lifecycle import _advisory_pages
from test_config import make_data, parse, problems_of


def test_advisories_are_off_and_without_source_by_default() -> None:
    assert parse(make_data()).advisories == AdvisoriesConfig(source=None, mode="off", waivers=(), audit=False)


def test_a_path_source_is_made_absolute_and_a_url_kept() -> None:
    config = parse(make_data(advisories={"source": "osv/all.zip", "mode": "flag"}))
    assert config.advisories.source == Path("/etc/pypimirror/osv/all.zip")
    assert not config.advisories.source_is_url
    config = parse(make_data(advisories={"source": "https://user:pw@example.org/osv/all.zip/", "mode": "block"}))
    assert config.advisories.source == "https://user:pw@example.org/osv/all.zip"
    assert config.advisories.source_is_url
    assert config.to_display_dict()["advisories"]["source"] == "https://user:***@example.org/osv/all.zip"


def test_waivers_audit_and_a_bare_yaml_off() -> None:
    text = """
advisories:
  source: /srv/osv
  mode: off
  audit: true
  waivers:
    - {id: PYSEC-2026-1, until: 2026-06-30, reason: not reachable here}
    - {id: GHSA-aaaa, until: "2026-07-01", reason: vendored fix}
"""
    data = make_data(**yaml.safe_load(text))
    config = parse(data)
    assert config.advisories.mode == "off"
    assert config.advisories.audit is True
    assert config.advisories.waivers == (
        AdvisoryWaiver(id="PYSEC-2026-1", until=date(2026, 6, 30), reason="not reachable here"),
        AdvisoryWaiver(id="GHSA-aaaa", until=date(2026, 7, 1), reason="vendored fix"),
    )
    assert config.to_display_dict()["advisories"]["waivers"][0]["until"] == "2026-06-30"
    waiver = config.advisories.waivers[0]
    assert waiver.applies_on(date(2026, 6, 30)) and not waiver.applies_on(date(2026, 7, 1))


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"mode": "deny"}, "advisories.mode: 'deny' is not one of off, flag, block"),
        ({"mode": "flag"}, "advisories.source: required when advisories.mode is flag"),
        ({"source": "ftp://example.org/x.zip"}, None),  # a path named like a URL: fine as a path
        ({"source": "https://"}, "advisories.source: 'https:' is not an http(s) URL with a host"),
        ({"audit": "yes"}, "advisories.audit: expected true or false, got 'yes'"),
        ({"waivers": [{"id": "X-1", "until": "soon", "reason": "r"}]}, "advisories.waivers[0].until: 'soon' is not a day such as 2026-03-31"),
        ({"waivers": [{"id": "X-1", "until": "2026-01-01"}]}, "advisories.waivers[0].reason: required key is missing"),
        ({"waivers": [{"id": "X-1", "until": "2026-01-01", "reason": "r", "by": "me"}]}, "advisories.waivers[0].by: unknown key"),
        ({"sources": "/srv/osv"}, "advisories.sources: unknown key (did you mean 'source'?)"),
    ],
)
def test_bad_values_are_reported_with_their_key(section: dict[str, object], problem: str | None) -> None:
    data = make_data(advisories=section)
    if problem is None:
        parse(data)
        return
    assert any(found.startswith(problem) for found in problems_of(data)), problems_of(data)


def test_the_example_file_shows_the_section(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parent.parent / "conf" / "config.example.yaml"
    data = yaml.safe_load(example.read_text())
    assert parse_config(data, base_dir=tmp_path).advisories == AdvisoriesConfig()


@pytest.mark.gen_test
@pytest.mark.parametrize(
    ("section", "applied"),
    [({"mode": "off"}, False), ({"mode": "block", "audit": True}, False), ({"mode": "flag"}, True)],
)
async def test_serving_applies_the_policy_only_when_it_changes_something(
    tmp_path: Path, section: dict[str, object], applied: bool
) -> None:
    config = parse(make_data(repo_path=str(tmp_path), advisories={"source": str(tmp_path / "osv.zip"), **section}))
    db = Database.open(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        pages = await _advisory_pages(config, db)
    finally:
        db.dispose()
    assert (pages is not None) is applied
    if pages is not None:
        assert pages.generation == 1  # loaded before the first request
