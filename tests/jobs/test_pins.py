"""Pinned sets against real parts: the fake upstream, an index sync, SQLite, tier directories, run_cache.

The lockfiles are the committed samples (written by uv and poetry against a fake index holding
the same deterministic files), so their hashes match the pages this test's index sync stores.
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path
from typing import Any

import pytest
from fakeindex import FakeIndex
from packaging.utils import canonicalize_name
from lockfilesamples import add_sample_projects
from pypimirror.jobs.cache import CacheReport, run_cache
from pypimirror.jobs.index_sync import run_index_sync
from pypimirror.jobs.pin_command import add_pinned_set, remove_pinned_set
from tornado.httpclient import AsyncHTTPClient

from pypimirror import pinqueries
from pypimirror import queries as dbq
from pypimirror.byteunits import format_bytes
from pypimirror.config import Config
from pypimirror.configreader import parse_config
from pypimirror.db import Database
from pypimirror.errors import LockfileError, PinnedSetError
from pypimirror.listedfiles import ListedFile, read_listed_files
from pypimirror.lockfiles import read_lockfile
from pypimirror.lockmodel import FileEntry
from pypimirror.queries import Vote
from pypimirror.storage import RepoLayout
from pypimirror.upstream import UpstreamClient, UpstreamSettings

SAMPLES = Path(__file__).parent.parent / "data" / "lockfiles"
SAMPLE_NAMES = ("uv.lock", "pylock.toml", "poetry.lock", "requirements.txt")


async def no_sleep(_seconds: float) -> None:
    """Back-off without waiting."""


class Mirror:
    """A mirror of the fake upstream: its config (tier limits changeable), database and client."""

    def __init__(self, tmp_path: Path, fake: FakeIndex, db: Database) -> None:
        self.tmp_path, self.fake, self.db = tmp_path, fake, db
        self.limits = [10**7, 10**7]
        self.client = UpstreamClient(
            UpstreamSettings(user_agent="pypimirror-test", proxy=None, connect_timeout=5, stall_timeout=5, attempts=2),
            sleep=no_sleep,
        )

    def config_data(self) -> dict[str, Any]:
        return {
            "repo_path": str(self.tmp_path / "repo"),
            "prefix": "/pypi",
            "node_id": "node-a",
            "upstream": {"pypi_url": self.fake.pypi_url, "packages_url": self.fake.packages_url},
            "cache": {"tiers": [{"path": str(self.root(t)), "size_limit": n} for t, n in enumerate(self.limits)]},
            "sync": {"concurrent_downloads": 4, "retry": 2},
        }

    @property
    def config(self) -> Config:
        return parse_config(self.config_data(), base_dir=self.tmp_path)

    def root(self, tier: int) -> Path:
        return self.tmp_path / f"t{tier}"

    async def sync_index(self) -> None:
        report = await run_index_sync(self.config, self.db, self.client, sleep=no_sleep)
        assert report.errors == 0

    def pin(self, name: str, *lockfiles: Path, **kwargs: Any) -> Any:
        return add_pinned_set(self.config, self.db, name, list(lockfiles), now=time.time(), **kwargs)

    async def vote(self, path: str, networks: int) -> None:
        votes = [Vote(path, f"10.0.{i}.0", int(time.time())) for i in range(networks)]
        await self.db.run(lambda conn: dbq.record_votes(conn, votes, dedup_window_s=300))

    async def run(self) -> CacheReport:
        return await run_cache(self.config, self.db, self.client)

    def cached(self) -> dict[str, int]:
        """Each cached distribution (no metadata files) and the tier holding it."""
        return {
            str(p.relative_to(self.root(t))): t
            for t in range(len(self.limits))
            for p in self.root(t).rglob("*")
            if p.is_file() and not p.name.endswith(".metadata")
        }

    def pinned_paths(self, name: str) -> set[str]:
        with self.db.connect() as conn:
            pinned = pinqueries.load_pinned_set(conn, name, "node-a")
        assert pinned is not None
        return {f.path for f in pinned.files}


@pytest.fixture
def mirror(tmp_path: Path, fake_index: FakeIndex, database: Database, curl_client: AsyncHTTPClient) -> Mirror:
    add_sample_projects(fake_index)
    return Mirror(tmp_path, fake_index, database)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lockfile_sha256s(path: Path) -> set[str]:
    return {e.sha256 for e in read_lockfile(path).entries if isinstance(e, FileEntry) and e.sha256}


# -- pin add: entries found on the stored pages ----------------------------------------------


@pytest.mark.parametrize("sample", SAMPLE_NAMES)
@pytest.mark.gen_test(timeout=30)
async def test_each_kind_of_lockfile_pins_exactly_its_files_found_by_name_and_sha256(
    mirror: Mirror, sample: str
) -> None:
    await mirror.sync_index()
    result = mirror.pin("app", SAMPLES / sample)
    assert result.unpinned == []
    with mirror.db.connect() as conn:
        pinned = pinqueries.load_pinned_set(conn, "app", "node-a")
    assert pinned is not None
    assert {f.sha256 for f in pinned.files} == lockfile_sha256s(SAMPLES / sample)
    assert result.files == len(pinned.files) > 0
    assert all(f.path.rpartition("/")[2].startswith("pkg_") for f in pinned.files)
    assert pinned.sources == (str(SAMPLES / sample),) and pinned.local == frozenset()


@pytest.mark.gen_test(timeout=30)
async def test_a_version_pin_without_hashes_is_narrowed_by_platform_and_python(mirror: Mirror, tmp_path: Path) -> None:
    await mirror.sync_index()
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("pkg-b==1.0\n")
    result = mirror.pin("bare", requirements, platforms=["manylinux_2_28_x86_64"], pythons=["3.12"])
    assert result.unpinned == []
    names = sorted(path.rpartition("/")[2] for path in mirror.pinned_paths("bare"))
    assert names == ["pkg_b-1.0-py3-none-any.whl", "pkg_b-1.0.tar.gz"]


# -- pin add: bad input, each entry one line naming the file and the entry ------------------


@pytest.mark.gen_test(timeout=30)
async def test_a_lockfile_for_another_index_reports_every_entry_and_pins_nothing(mirror: Mirror, tmp_path: Path) -> None:
    await mirror.sync_index()
    foreign = tmp_path / "uv.lock"
    text = (SAMPLES / "uv.lock").read_text()
    for digest in lockfile_sha256s(SAMPLES / "uv.lock"):  # the same names, built elsewhere
        text = text.replace(digest, hashlib.sha256(digest.encode()).hexdigest())
    foreign.write_text(text)
    result = mirror.pin("foreign", foreign)
    assert result.files == 0
    assert len(result.unpinned) == len(lockfile_sha256s(SAMPLES / "uv.lock"))
    line = next(str(u) for u in result.unpinned if "pkg_a-1.0-py3-none-any.whl" in str(u))
    assert line.startswith(f"{foreign}: package 'pkg-a' 1.0: wheel 'pkg_a-1.0-py3-none-any.whl': sha256 ")
    assert "differs from the stored page's" in line and "\n" not in line
    with mirror.db.connect() as conn:
        assert pinqueries.pinned_set_summaries(conn, "node-a") == []


@pytest.mark.gen_test(timeout=30)
async def test_unknown_hashes_and_projects_are_reported_and_the_rest_is_pinned(mirror: Mirror, tmp_path: Path) -> None:
    await mirror.sync_index()
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(
        "pkg-b==2.0 --hash=sha256:" + "0" * 64 + "\n"
        "pkg-d==0.3\n"
        "not-on-the-index==1.0\n"
    )
    result = mirror.pin("mixed", requirements)
    reported = [str(u) for u in result.unpinned]
    assert reported == [
        f"{requirements}: line 1: no file of pkg-b 2.0 on the stored page has sha256 {'0' * 64}",
        f"{requirements}: line 3: no stored page lists project 'not-on-the-index' "
        "(not on the index this mirror syncs, or not synced yet)",
    ]
    assert sorted(p.rpartition("/")[2] for p in mirror.pinned_paths("mixed")) == [
        "pkg_d-0.3-py3-none-any.whl", "pkg_d-0.3.tar.gz"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ((SAMPLES / "uv.lock").read_text()[:700], "uv.lock: end of file: not valid TOML: "),  # cut in a string
        ('[project]\nname = "app"\nversion = "1"\n', "uv.lock: not a lockfile (a pyproject.toml?)"),
        ('[tool.black]\nline-length = 99\n', "uv.lock: not a lockfile (a pyproject.toml?)"),
    ],
)
@pytest.mark.gen_test(timeout=30)
async def test_a_truncated_or_foreign_toml_is_one_line_and_nothing_is_stored(
    mirror: Mirror, tmp_path: Path, content: str, expected: str
) -> None:
    await mirror.sync_index()
    lockfile = tmp_path / "uv.lock"
    lockfile.write_text(content)
    with pytest.raises(LockfileError) as caught:
        mirror.pin("broken", lockfile)
    assert str(caught.value).startswith(str(tmp_path / expected)) and "\n" not in str(caught.value)
    with mirror.db.connect() as conn:
        assert pinqueries.pinned_set_summaries(conn, "node-a") == []


@pytest.mark.parametrize("name", ["", "-x", "a b", "x" * 101, "sets/../x"])
@pytest.mark.gen_test(timeout=30)
async def test_a_bad_set_name_is_refused(mirror: Mirror, name: str) -> None:
    with pytest.raises(PinnedSetError, match="pinned set name"):
        mirror.pin(name, SAMPLES / "uv.lock")


# -- the budget and the cache plan ----------------------------------------------------------


def listed(mirror: Mirror, filename: str) -> ListedFile:
    """What the stored page of its project lists for ``filename`` (a file name or a package path)."""
    name = filename.rpartition("/")[2]
    files = read_listed_files(RepoLayout(mirror.tmp_path / "repo"), canonicalize_name(name.split("-", 1)[0]), "/pypi")
    return next(f for path, f in files.items() if path.rpartition("/")[2] == name)


REQUIREMENTS = SAMPLES / "requirements.txt"


@pytest.mark.gen_test(timeout=60)
async def test_a_set_larger_than_the_free_budget_is_refused_and_nothing_is_evicted(mirror: Mirror) -> None:
    await mirror.sync_index()
    needed = mirror.pin("probe", REQUIREMENTS).bytes
    remove_pinned_set(mirror.db, "probe")
    popular = listed(mirror, "pkg_b-1.0-py3-none-any.whl").path  # not in the set
    await mirror.vote(popular, 3)
    mirror.limits = [needed // 2, needed // 4]
    assert (await mirror.run()).ok
    before = mirror.cached()
    assert popular in before

    with pytest.raises(PinnedSetError) as caught:
        mirror.pin("ci", REQUIREMENTS)
    total = needed // 2 + needed // 4
    assert str(caught.value) == (
        f"pinned set 'ci' does not fit: it needs {format_bytes(needed)} (10 files) and the cache tiers have "
        f"{format_bytes(total)} free for pinned files ({format_bytes(total)} in all, 0 B pinned by other sets); "
        "nothing was pinned or evicted"
    )
    with mirror.db.connect() as conn:
        assert pinqueries.pinned_set_summaries(conn, "node-a") == []
    assert (await mirror.run()).ok
    assert mirror.cached() == before


@pytest.mark.gen_test(timeout=60)
async def test_the_free_budget_is_what_other_sets_leave(mirror: Mirror, tmp_path: Path) -> None:
    await mirror.sync_index()
    needed = mirror.pin("all", REQUIREMENTS).bytes
    mirror.limits = [needed + 10]
    mirror.pin("all", REQUIREMENTS)  # replacing a set does not count its old files twice
    other = tmp_path / "requirements.txt"
    other.write_text("pkg-b==1.0\n")
    with pytest.raises(PinnedSetError, match=rf"free for pinned files \({re.escape(format_bytes(needed + 10))} in all, "
                                             rf"{re.escape(format_bytes(needed))} pinned by other sets\)"):
        mirror.pin("other", other)


@pytest.mark.gen_test(timeout=60)
async def test_pinned_files_come_first_verified_and_votes_rank_only_the_room_left(mirror: Mirror) -> None:
    await mirror.sync_index()
    needed = mirror.pin("ci", REQUIREMENTS).bytes
    popular = listed(mirror, "pkg_b-1.0-py3-none-any.whl").path
    await mirror.vote(popular, 5)  # voted far more than any pinned file, yet no room is left for it
    # The pinned wheels' metadata files (about 100 B each) take most of the 1000 B beyond them.
    mirror.limits = [needed // 2, needed - needed // 2 + 1000]
    report = await mirror.run()
    assert report.ok, report.failure_reason
    cached = mirror.cached()
    pinned = mirror.pinned_paths("ci")
    assert pinned <= cached.keys() and popular not in cached
    assert 0 in {cached[p] for p in pinned}, "the hottest tier holds pinned files"
    for path in pinned:
        assert sha256_of(mirror.root(cached[path]) / path) == listed(mirror, path).sha256
    counts = report.counts()
    assert (counts["pinned"], counts["pinned_short"]) == (10, 0) and counts["pinned_bytes"] >= needed
    with mirror.db.connect() as conn:
        [summary] = pinqueries.pinned_set_summaries(conn, "node-a")
    assert (summary.name, summary.files, summary.bytes, summary.local) == ("ci", 10, needed, 10)


@pytest.mark.gen_test(timeout=60)
async def test_a_shrunk_budget_evicts_unpinned_files_first_then_fails_the_run_without_evicting_a_pin(
    mirror: Mirror,
) -> None:
    await mirror.sync_index()
    needed = mirror.pin("ci", REQUIREMENTS).bytes
    popular = listed(mirror, "pkg_b-1.0-py3-none-any.whl").path
    await mirror.vote(popular, 5)
    assert (await mirror.run()).ok
    pinned = mirror.pinned_paths("ci")
    assert pinned | {popular} <= mirror.cached().keys()

    # Room for the pinned files and their metadata files, not for the popular wheel beside them.
    mirror.limits = [sum(_cost(mirror, p) for p in pinned) + 10, 0]
    report = await mirror.run()
    assert report.ok, report.failure_reason
    assert mirror.cached().keys() == pinned

    mirror.limits = [needed // 2, 0]  # below the pinned bytes
    report = await mirror.run()
    assert not report.ok
    assert report.failure_reason is not None and report.failure_reason.startswith("the pinned sets need ")
    assert "no pinned file was evicted" in report.failure_reason
    assert mirror.cached().keys() == pinned


def _cost(mirror: Mirror, path: str) -> int:
    """What a cached file costs its tier: the distribution and its metadata file."""
    tier = mirror.cached()[path]
    root = mirror.root(tier)
    metadata = root / (path + ".metadata")
    return (root / path).stat().st_size + (metadata.stat().st_size if metadata.exists() else 0)


@pytest.mark.gen_test(timeout=60)
async def test_a_removed_set_s_files_become_ordinary_candidates(mirror: Mirror) -> None:
    await mirror.sync_index()
    mirror.pin("ci", REQUIREMENTS)
    assert (await mirror.run()).ok
    pinned = mirror.pinned_paths("ci")
    popular = listed(mirror, "pkg_b-1.0-py3-none-any.whl").path
    await mirror.vote(popular, 2)
    kept = listed(mirror, "pkg_a-1.0-py3-none-any.whl").path
    await mirror.vote(kept, 3)
    remove_pinned_set(mirror.db, "ci")
    with pytest.raises(PinnedSetError, match="no pinned set named 'ci'"):
        remove_pinned_set(mirror.db, "ci")
    popular_cost = listed(mirror, popular).size + 200  # and its metadata file's
    mirror.limits = [_cost(mirror, kept) + popular_cost, 0]  # room for the two voted files, no more
    report = await mirror.run()
    assert report.ok and report.counts()["pinned"] == 0
    cached = mirror.cached()
    assert kept in cached and popular in cached
    assert not (pinned - {kept}) & cached.keys(), "unvoted files of the removed set were evicted"


@pytest.mark.gen_test(timeout=30)
async def test_a_set_whose_largest_file_fits_no_single_tier_is_refused_saying_so(mirror: Mirror, tmp_path: Path) -> None:
    await mirror.sync_index()
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("pkg-a==1.0\n")
    wheel, sdist = listed(mirror, "pkg_a-1.0-py3-none-any.whl"), listed(mirror, "pkg_a-1.0.tar.gz")
    half = (wheel.size + sdist.size + 1) // 2
    mirror.limits = [half, half]  # enough in all, but the wheel is larger than either tier
    with pytest.raises(PinnedSetError, match=r"but pkg_a-1\.0-py3-none-any\.whl fits in no single tier; "
                                             r"nothing was pinned or evicted$"):
        mirror.pin("ci", requirements)
