"""``pypimirror pin`` as an operator meets it: a real process against the fake upstream, its output
and exit status, and what ``status`` and ``sync --once`` then say."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fakeindex import FakeIndex
from lockfilesamples import add_sample_projects

from pypimirror.lockfiles import read_lockfile
from pypimirror.lockmodel import FileEntry

SAMPLES = Path(__file__).parent / "data" / "lockfiles"


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-P", "-m", "pypimirror", *map(str, args)],
        capture_output=True, text=True, env=dict(os.environ), timeout=120,
    )


class Cli:
    """The mirror's configuration file, and the command line run against it."""

    def __init__(self, tmp_path: Path, fake: FakeIndex) -> None:
        self.tmp_path, self.fake = tmp_path, fake
        self.config = tmp_path / "config.yaml"
        self.tier = tmp_path / "t0"
        self.write_config(10**7)

    def write_config(self, size_limit: int) -> None:
        self.config.write_text(yaml.safe_dump({
            "repo_path": str(self.tmp_path / "repo"),
            "prefix": "/pypi",
            "node_id": "node-a",
            "upstream": {"pypi_url": self.fake.pypi_url, "packages_url": self.fake.packages_url},
            "cache": {"tiers": [{"path": str(self.tier), "size_limit": size_limit}]},
            "sync": {"retry": 1},
        }))

    def __call__(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        command, *rest = args
        if command == "pin":
            return run_cli("pin", rest[0], "-c", self.config, *rest[1:])
        return run_cli(command, "-c", self.config, *rest)

    def cached(self) -> dict[str, str]:
        """Each cached distribution's file name and sha256."""
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                for p in self.tier.rglob("*") if p.is_file() and not p.name.endswith(".metadata")}


@pytest.fixture
def cli(tmp_path: Path, fake_index: FakeIndex) -> Cli:
    add_sample_projects(fake_index)
    cli = Cli(tmp_path, fake_index)
    synced = cli("sync", "--once")
    assert synced.returncode == 0, synced.stderr
    return cli


def sample_sha256s(name: str) -> set[str]:
    return {e.sha256 for e in read_lockfile(SAMPLES / name).entries if isinstance(e, FileEntry) and e.sha256}


def test_pin_add_list_show_remove(cli: Cli) -> None:
    added = cli("pin", "add", "ci", SAMPLES / "uv.lock")
    assert added.returncode == 0, added.stderr
    lines = added.stdout.splitlines()
    assert lines[-1].startswith("pinned set 'ci' stored: 10 files, ")
    assert any(line.startswith("skipped: ") and "sample-app" in line for line in lines)

    listed = cli("pin", "list")
    assert listed.returncode == 0 and listed.stdout.startswith("ci: 10 files, ") and "0 of 10 local" in listed.stdout
    shown = cli("pin", "show", "ci")
    assert shown.returncode == 0
    assert shown.stdout.splitlines()[0].startswith("pinned set ci: 10 files, ")
    assert f"from:      {SAMPLES / 'uv.lock'}" in shown.stdout
    assert shown.stdout.count("  missing ") == 10 and "pkg_a-1.0-py3-none-any.whl" in shown.stdout

    replaced = cli("pin", "add", "ci", SAMPLES / "pylock.toml")
    assert replaced.returncode == 0 and "pinned set 'ci' replaced: 10 files" in replaced.stdout

    removed = cli("pin", "remove", "ci")
    assert removed.returncode == 0 and "removed" in removed.stdout
    for command in (("pin", "show", "ci"), ("pin", "remove", "ci")):
        gone = cli(*command)
        assert (gone.returncode, gone.stderr) == (2, "pypimirror: error: no pinned set named 'ci'\n")
    assert cli("pin", "list").stdout == "none\n"


def test_pin_add_now_fetches_the_set_verified_and_status_shows_it_local(cli: Cli) -> None:
    added = cli("pin", "add", "ci", SAMPLES / "requirements.txt", "--now")
    assert added.returncode == 0, added.stderr
    assert added.stdout.splitlines()[-1] == "pinned set 'ci': all 10 files local"
    assert set(cli.cached().values()) == sample_sha256s("requirements.txt")
    status = cli("status")
    assert status.returncode == 0
    assert "pinned sets (node node-a):\n  ci: 10 files, " in status.stdout and "10 of 10 local" in status.stdout


def test_a_budget_shrunk_below_the_pins_fails_the_cache_run_clearly_and_evicts_no_pin(cli: Cli) -> None:
    assert cli("pin", "add", "ci", SAMPLES / "requirements.txt", "--now").returncode == 0
    before = cli.cached()
    cli.write_config(2000)
    run = cli("sync", "--once")
    assert run.returncode == 1
    assert cli.cached() == before
    status = cli("status")
    assert "error: the pinned sets need " in status.stdout and "no pinned file was evicted" in status.stdout


def test_a_set_that_does_not_fit_is_refused_in_one_line(cli: Cli) -> None:
    cli.write_config(3000)
    refused = cli("pin", "add", "ci", SAMPLES / "poetry.lock")
    assert refused.returncode == 2
    assert refused.stderr.startswith("pypimirror: error: pinned set 'ci' does not fit: it needs ")
    assert refused.stderr.count("\n") == 1 and "2.9 KiB free for pinned files" in refused.stderr
    assert cli("pin", "list").stdout == "none\n"


def test_a_lockfile_for_another_index_is_one_line_per_entry_and_exit_2(cli: Cli, tmp_path: Path) -> None:
    foreign = tmp_path / "pylock.toml"
    text = (SAMPLES / "pylock.toml").read_text()
    for digest in sample_sha256s("pylock.toml"):
        text = text.replace(digest, hashlib.sha256(digest.encode()).hexdigest())
    foreign.write_text(text)
    refused = cli("pin", "add", "ci", foreign)
    assert refused.returncode == 2
    lines = refused.stderr.splitlines()
    assert len(lines) == len(sample_sha256s("pylock.toml")) + 1
    assert all(line.startswith(f"pypimirror: error: {foreign}: package 'pkg-") for line in lines[:-1])
    assert all("differs from the stored page's" in line for line in lines[:-1])
    assert lines[-1] == f"pypimirror: error: pinned set 'ci': no entry of {foreign} is on the stored pages; " \
                        "nothing was pinned"


def test_some_unknown_entries_are_reported_the_rest_pinned_and_exit_1(cli: Cli, tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("pkg-d==0.3\npkg-e==9.9\n")
    added = cli("pin", "add", "ci", requirements)
    assert added.returncode == 1
    assert added.stderr == (f"pypimirror: error: {requirements}: line 2: the stored page lists no file of "
                            "pkg-e==9.9 with a sha256\n")
    assert "pinned set 'ci' stored: 2 files, " in added.stdout and "1 entries not pinned" in added.stdout


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('version = 1\n[[package]]\nname = "pkg-a"\nversion = "1.0"\nsdist = { url = "http', "uv.lock: end of file: not valid TOML: "),
        ("[tool.poetry]\nname = 'x'\n", "uv.lock: not a lockfile (a pyproject.toml?): "),
    ],
)
def test_a_truncated_or_foreign_toml_is_one_line_and_exit_2(cli: Cli, tmp_path: Path, content: str,
                                                             expected: str) -> None:
    lockfile = tmp_path / "uv.lock"
    lockfile.write_text(content)
    refused = cli("pin", "add", "ci", lockfile)
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"pypimirror: error: {tmp_path / expected}") and refused.stderr.count("\n") == 1


def test_a_bad_platform_is_one_line(cli: Cli) -> None:
    refused = cli("pin", "add", "ci", SAMPLES / "uv.lock", "--platform", "Linux x86")
    assert (refused.returncode, refused.stderr.count("\n")) == (2, 1)
    assert "not a platform tag like manylinux_2_28_x86_64" in refused.stderr


def test_pin_add_before_the_first_sync_says_every_project_is_not_synced_yet(tmp_path: Path,
                                                                             fake_index: FakeIndex) -> None:
    cli = Cli(tmp_path, fake_index)  # no sync: no repo_path, no database, no pages
    refused = cli("pin", "add", "ci", SAMPLES / "poetry.lock")
    assert refused.returncode == 2
    lines = refused.stderr.splitlines()
    assert len(lines) == len(sample_sha256s("poetry.lock")) + 1 and all("(not on the index this mirror syncs, or not synced yet)" in line
                                   for line in lines[:-1])
    assert lines[-1].endswith("is on the stored pages; nothing was pinned")
