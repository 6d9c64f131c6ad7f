"""Release successors: which newer file replaces a cached one, and with which votes."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from packaging.version import Version
from pypimirror.jobs.cache_successors import ReleaseIndex, successor_votes

DAY = 86_400
NOW = 100 * DAY
SINCE = NOW - 7 * DAY


@dataclass(frozen=True)
class Listed:
    path: str
    filename: str
    upload_time: float | None
    yanked: bool = False


def listed(filename: str, uploaded: float | None = NOW - DAY, *, yanked: bool = False) -> Listed:
    return Listed(f"ab/cd/{filename}", filename, uploaded, yanked)


def path(filename: str) -> str:
    return f"ab/cd/{filename}"


LINUX = "cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
WINDOWS = "cp312-cp312-win_amd64.whl"


def index(*files: Listed) -> ReleaseIndex:
    return ReleaseIndex(files)


def test_a_wheel_is_succeeded_by_the_newest_release_with_the_same_tags() -> None:
    idx = index(
        listed(f"numpy-1.0-{LINUX}", 10.0), listed(f"numpy-1.0-{WINDOWS}", 10.0),
        listed(f"numpy-1.1-{LINUX}"), listed(f"numpy-1.2-{LINUX}"), listed(f"numpy-1.2-{WINDOWS}"),
        listed("numpy-1.2-cp313-cp313-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"),
        listed("numpy-1.2.tar.gz"),
    )
    assert idx.successor(path(f"numpy-1.0-{LINUX}"), since=SINCE, now=NOW) == path(f"numpy-1.2-{LINUX}")
    assert idx.successor(path(f"numpy-1.0-{WINDOWS}"), since=SINCE, now=NOW) == path(f"numpy-1.2-{WINDOWS}")
    assert idx.successor(path(f"numpy-1.2-{LINUX}"), since=SINCE, now=NOW) is None  # already the newest


def test_an_sdist_is_succeeded_by_the_newest_sdist() -> None:
    idx = index(listed("demo-1.0.tar.gz", 10.0), listed("demo-2.0-py3-none-any.whl"), listed("demo-2.0.tar.gz"))
    assert idx.successor(path("demo-1.0.tar.gz"), since=SINCE, now=NOW) == path("demo-2.0.tar.gz")


def test_a_release_not_yet_uploaded_or_older_than_the_window_succeeds_nothing() -> None:
    idx = index(
        listed("demo-1.0-py3-none-any.whl", 10.0),
        listed("demo-1.1-py3-none-any.whl", SINCE),  # uploaded before the window
        listed("demo-1.3-py3-none-any.whl", NOW + 1),  # not yet uploaded at NOW
    )
    assert idx.successor(path("demo-1.0-py3-none-any.whl"), since=SINCE, now=NOW) is None
    # An hour later 1.3 is out: it succeeds.
    assert idx.successor(path("demo-1.0-py3-none-any.whl"), since=SINCE, now=NOW + 3600) == path(
        "demo-1.3-py3-none-any.whl"
    )
    # Skipping a future release, an older one inside the window still succeeds.
    idx = index(
        listed("demo-1.0-py3-none-any.whl", 10.0), listed("demo-1.2-py3-none-any.whl"),
        listed("demo-1.3-py3-none-any.whl", NOW + 1),
    )
    assert idx.successor(path("demo-1.0-py3-none-any.whl"), since=SINCE, now=NOW) == path("demo-1.2-py3-none-any.whl")


def test_pre_releases_succeed_only_pre_releases_and_yanked_or_undated_files_nothing() -> None:
    idx = index(
        listed("demo-1.0-py3-none-any.whl", 10.0), listed("demo-2.0rc1-py3-none-any.whl", 10.0),
        listed("demo-2.0-py3-none-any.whl", yanked=True), listed("demo-2.1b1-py3-none-any.whl"),
        listed("demo-1.5-py3-none-any.whl", None),
    )
    assert idx.successor(path("demo-1.0-py3-none-any.whl"), since=SINCE, now=NOW) is None
    assert idx.successor(path("demo-2.0rc1-py3-none-any.whl"), since=SINCE, now=NOW) == path(
        "demo-2.1b1-py3-none-any.whl"
    )


def test_names_that_are_no_wheel_or_sdist_have_no_successor() -> None:
    idx = index(listed("demo-1.0.egg", 10.0), listed("demo-2.0.egg"), listed("not a dist.whl"))
    assert idx.successor(path("demo-1.0.egg"), since=SINCE, now=NOW) is None
    assert idx.successor(path("not a dist.whl"), since=SINCE, now=NOW) is None
    assert idx.successor("never/listed-1.0.tar.gz", since=SINCE, now=NOW) is None


def test_successors_inherit_the_most_votes_cached_or_not_and_only_voted_cached_files_have_them() -> None:
    linux_old, windows_old = path(f"numpy-1.0-{LINUX}"), path(f"numpy-1.0-{WINDOWS}")
    linux_new, windows_new = path(f"numpy-1.1-{LINUX}"), path(f"numpy-1.1-{WINDOWS}")
    sdist_old, sdist_new = path("numpy-1.0.tar.gz"), path("numpy-1.1.tar.gz")
    lonely = path("lonely-1.0.tar.gz")
    idx = index(
        listed(f"numpy-1.0-{LINUX}", 10.0), listed(f"numpy-1.0-{WINDOWS}", 10.0), listed("numpy-1.0.tar.gz", 10.0),
        listed(f"numpy-1.1-{LINUX}"), listed(f"numpy-1.1-{WINDOWS}"), listed("numpy-1.1.tar.gz"),
        listed("lonely-1.0.tar.gz", 10.0), listed("lonely-1.1.tar.gz"),
    )
    cached = {linux_old, windows_old, sdist_old, windows_new}
    votes = {linux_old: 5, windows_old: 3, sdist_old: 2, linux_new: 7, lonely: 4}
    assert successor_votes(idx, cached, votes, since=SINCE, now=NOW) == {
        linux_new: 7,  # its own votes are more than its predecessor's
        sdist_new: 2,  # inherited
        windows_new: 3,  # cached already: it keeps the votes it was fetched with
        # lonely is voted but not cached; nothing else is voted.
    }


def test_a_cached_successor_keeps_the_votes_of_a_predecessor_it_displaced() -> None:
    old, new = path("demo-1.0-py3-none-any.whl"), path("demo-2.0-py3-none-any.whl")
    idx = index(listed("demo-1.0-py3-none-any.whl", 10.0), listed("demo-2.0-py3-none-any.whl"))
    assert successor_votes(idx, {new}, {old: 4}, since=SINCE, now=NOW) == {new: 4}
    # Neither cached: nothing to prefetch (the votes alone decide on the old file).
    assert successor_votes(idx, set(), {old: 4}, since=SINCE, now=NOW) == {}


def test_the_index_answers_alike_when_asked_for_earlier_times_after_later_ones() -> None:
    """The index keeps the files with a recent newer release for the last time asked (a replay
    asks for ever later ones); asked for an earlier time again, it answers from scratch."""
    old = path(f"numpy-1.0-{LINUX}")
    idx = index(listed(f"numpy-1.0-{LINUX}", 10.0), listed(f"numpy-1.1-{LINUX}", NOW - DAY))
    assert idx.successor(old, since=SINCE, now=NOW) == path(f"numpy-1.1-{LINUX}")
    later = NOW + 7 * DAY  # 1.1 left the window
    assert idx.successor(old, since=later - 7 * DAY, now=later) is None
    assert idx.successor(old, since=SINCE, now=NOW) == path(f"numpy-1.1-{LINUX}")


def test_the_index_kept_over_moving_windows_answers_as_the_definition_says() -> None:
    """Windows that move on (as in a replay), jump back, or end at infinity (as in the cache
    job): at every step the kept index finds, for every file, the newest newer release of its
    kind uploaded inside the window, and nothing where there is none."""
    rng = random.Random(5)
    files = [
        listed(f"{project}-{major}.{minor}-{tags}", rng.uniform(0, 60 * DAY))
        for project in ("numpy", "scipy", "pandas")
        for tags in (LINUX, WINDOWS)
        for major in range(1, 4)
        for minor in range(4)
    ]
    idx = index(*files)
    paths = {f.path for f in files}

    def expected(since: float, now: float) -> dict[str, str]:
        found = {}
        for f in files:
            project, version, tags = f.filename.split("-", 2)
            newer = [
                g for g in files
                if g.filename.startswith(f"{project}-") and g.filename.endswith(tags)
                and Version(g.filename.split("-")[1]) > Version(version) and since < g.upload_time <= now
            ]
            if newer:
                found[f.path] = max(newer, key=lambda g: Version(g.filename.split("-")[1])).path
        return found

    windows = [(t - 7 * DAY, t) for t in range(0, 70 * DAY, DAY // 2)]
    windows += [(20 * DAY, 27 * DAY), (30 * DAY, math.inf), (35 * DAY, math.inf), (10 * DAY, 17 * DAY)]
    windows += [(t - 7 * DAY, t) for t in range(12 * DAY, 40 * DAY, DAY)]
    for since, now in windows:
        assert dict(idx.successors(paths, since=since, now=now)) == expected(since, now)
    assert any(expected(since, now) for since, now in windows)
