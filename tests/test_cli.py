"""The command line as an operator meets it: a real process, its output and its exit status."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select, text, update

from pypimirror.cli import format_status
from pypimirror.db import Database
from pypimirror.historydb import start_history
from pypimirror.hitrate import summarize_hits
from pypimirror.jobs.registry import JOBS
from pypimirror.queries import HitCount, JobRun
from pypimirror.schema import schema_version
from pypimirror.status import JobStatus, MirrorStatus

EXAMPLE = Path(__file__).parent.parent / "conf" / "config.example.yaml"


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-P", "-m", "pypimirror", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=60,
    )


def test_check_config_prints_the_effective_configuration_of_the_example() -> None:
    result = run_cli("check-config", "-c", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    shown = yaml.safe_load(result.stdout)
    assert shown["prefix"] == "/pypi"
    assert shown["upstream"]["listing"] == "simple-json"
    assert shown["cache"]["tiers"][0]["size_limit"] == shown["cache"]["size_limit"]


def test_check_config_masks_secrets(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "repo_path: repo\n"
        "upstream:\n  pypi_url: https://example.org\n  packages_url: https://files.example.org/packages\n"
        "  proxy: socks5h://user:hunter2@127.0.0.1:1080\n"
        "database:\n  url: postgresql+psycopg://mirror:s3cret@127.0.0.1/mirror\n"
        "cache:\n  size_limit: 10g\n"
    )
    result = run_cli("check-config", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout and "s3cret" not in result.stdout
    assert "***" in result.stdout


def test_config_path_comes_from_the_environment_when_not_given(tmp_path: Path) -> None:
    result = run_cli("check-config", env={"PYPIMIRROR_CONFIG": str(EXAMPLE)}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read the configuration file"),
        ("repo_path: r\ncache:\n  size_limt: 1g\n", "cache.size_limt: unknown key (did you mean 'size_limit'?)"),
        ("repo_path: [unclosed\n", "config.yaml"),
    ],
)
def test_bad_configuration_is_one_line_and_exit_2(tmp_path: Path, content: str | None, expected: str) -> None:
    config = tmp_path / "config.yaml"
    if content is not None:
        config.write_text(content)
    result = run_cli("check-config", "-c", str(config))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pypimirror: error: ")
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


def test_status_shows_each_job_of_the_table_that_never_ran_and_the_history_of_those_that_did() -> None:
    ran = JobRun(1, "index_sync", "node-a", 1000.0, 1060.0, "ok", {"fetched": 3}, None)
    status = MirrorStatus(jobs=(JobStatus("index_sync", ran, ran, ran, 0),), tiers=(), job_titles=JOBS.titles())
    text = format_status(status, None, [], node_id="node-a", now=1100.0)
    assert text.startswith("jobs:\n  advisories: never ran\n  cache: never ran\n  index_sync:\n    last run:      ok")
    assert "counts:        fetched=3" in text
    nothing = format_status(MirrorStatus(jobs=(), tiers=()), None, [], node_id="node-a", now=1100.0)
    assert nothing.startswith("jobs:\n  none has run yet\n")


def test_status_shows_the_hit_rate_of_24_hours_and_7_days() -> None:
    now = 1_796_292_000.0
    counts = [HitCount(int(now), "local", 3, 3 * 2**30), HitCount(int(now) - 2 * 86400, "redirect", 1, 2**30)]
    text = format_status(MirrorStatus((), (), summarize_hits(counts, now)), None, [], node_id="n1", now=now)
    assert "hit rate (node n1; downloads served from the cache, of all it answered):\n" in text
    assert "  last 24 h: requests 100.0 % of 3, bytes 100.0 % of 3.0 GiB\n" in text
    assert "  last 7 d : requests 75.0 % of 4, bytes 75.0 % of 4.0 GiB\n" in text
    empty = format_status(MirrorStatus((), (), summarize_hits([], now)), None, [], node_id="n1", now=now)
    assert "  last 24 h: no downloads\n" in empty


def test_status_of_a_database_from_before_the_hit_counters_says_so_and_leaves_it_alone(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    config = tmp_path / "config.yaml"
    config.write_text("repo_path: repo\nupstream:\n  pypi_url: https://example.org\n"
                      "  packages_url: https://files.example.org/packages\ncache:\n  size_limit: 1g\n")
    url = f"sqlite:///{tmp_path / 'repo' / 'pypi-mirror.db'}"
    with Database.open(url) as db, db.begin() as conn:  # as the previous release left it
        conn.execute(text("DROP TABLE hit_counters"))
        conn.execute(update(schema_version).values(version=2))
    result = run_cli("status", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert "hit rate: not recorded in this database yet (the next serve or sync upgrades its schema)\n" in result.stdout
    with Database(url) as db, db.connect() as conn:
        assert conn.execute(select(schema_version.c.version)).scalar_one() == 2


def test_status_says_since_when_the_index_history_is_complete(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    config = tmp_path / "config.yaml"
    config.write_text("repo_path: repo\nupstream:\n  pypi_url: https://example.org\n"
                      "  packages_url: https://files.example.org/packages\ncache:\n  size_limit: 1g\n")
    url = f"sqlite:///{tmp_path / 'repo' / 'pypi-mirror.db'}"
    Database.open(url).dispose()
    before = run_cli("status", "-c", str(config))
    assert "index history: not complete yet (it starts when an index sync with sync.record_history completes)\n" in (
        before.stdout)
    with Database(url) as db, db.begin() as conn:
        start_history(conn, 1_700_000_000.0)
    after = run_cli("status", "-c", str(config))
    assert after.returncode == 0, after.stderr
    stamp = datetime.fromtimestamp(1_700_000_000.0).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    assert f"index history: complete since {stamp} (" in after.stdout
