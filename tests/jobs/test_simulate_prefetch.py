"""Release prefetch in the replay, on a hand-made trace whose figures are computed by hand below.

Project ``demo`` 1.0 has a pure wheel W1 (1,000,000 bytes) and a Windows wheel X1 (500,000),
uploaded long before the trace; 2.0 (W2, X2, the same sizes) is uploaded at t0+1.5h. One tier;
``schedule.cache`` 1h (planner from the first request on: t0+10s, then hourly; called t0+1h,
t0+2h, t0+3h below), ``min_vote_count`` 2,
``vote_window`` 7d. Networks: net1 = 10.0.1.0/24, ...

====  ==========  ====  =====
 req  time        file  net
====  ==========  ====  =====
 r1   t0+10       W1    1
 r2   t0+20       W1    2
 r3   t0+30       X1    1
 r4   t0+40       X1    2
 r5   t0+3700     W1    3
 r6   t0+3800     X1    3
 r7   t0+7300     W2    1
 r8   t0+7400     W2    2
 r9   t0+10900    W2    3
====  ==========  ====  =====

t0+1h: W1 and X1 have 2 votes each; every policy at both budgets downloads them (1.5 MB):
r5, r6 hit everywhere.

t0+2h: W1 and X1 have 3 votes; 2.0 is out. ``default`` prefetches: W2 and X2 inherit 3 votes.
Scores (votes per MiB of size + 64 KiB; cached ones 1.5 times): X1 7.97, X2 5.32, W1 4.22,
W2 2.82. 2 MB: X1, X2, W1 fill it exactly, W2 does not fit -> downloads X2 only.
3 MB: all four -> downloads X2 and W2. ``seed`` changes nothing (2.0 has no votes).
r7, r8 hit only for ``default`` at 3 MB.

t0+3h: W2 has 2 votes of its own. ``seed`` 2 MB: X1, W1 (3 votes), W2 does not fit -> no
change; ``seed`` 3 MB downloads W2. ``default`` 2 MB: X2 (cached, keeping its 3 inherited
votes while X1 has them) scores 7.97 like X1; W2 (3 inherited votes, 2.82) still comes after
X1, X2 and W1 and does not fit -> no change.
r9 hits for ``seed`` 3 MB and ``default`` 3 MB.

Hits: seed 2 MB 2, seed 3 MB 3, default 2 MB 2, default 3 MB 5.
Upstream: seed 2 MB 1.5 MB, seed 3 MB 2.5 MB, default 2 MB 2.0 MB (X2 is never requested:
its bytes are the price of prefetching), default 3 MB 3.0 MB.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from packaging.utils import NormalizedName
from pypimirror.jobs import simulate as simulate_module
from pypimirror.jobs.cache_plan import CachePlan, RemoteFile, plan_cache
from pypimirror.jobs.simulate import PolicyResult, compact_trace, release_listing, simulate

from pypimirror.config import Config
from pypimirror.configreader import parse_config
from pypimirror.pagescan import ListedFile

T0 = 1_700_000_000
MB = 1_000_000
LONG_AGO = T0 - 100 * 86_400
RELEASED = T0 + 5400


@dataclass(frozen=True)
class Request:
    time: float
    client: str
    path: str


def dist(filename: str, size: int, uploaded: float) -> ListedFile:
    project, version = filename.split("-")[:2]
    return ListedFile(f"ab/cd/{'ef' * 30}/{filename}", size, NormalizedName(project), version, filename, uploaded)


def listing(released: float = RELEASED) -> dict[str, ListedFile]:
    files = [
        dist("demo-1.0-py3-none-any.whl", MB, LONG_AGO),
        dist("demo-1.0-cp312-cp312-win_amd64.whl", MB // 2, LONG_AGO),
        dist("demo-2.0-py3-none-any.whl", MB, released),
        dist("demo-2.0-cp312-cp312-win_amd64.whl", MB // 2, released),
    ]
    return {f.path: f for f in files}


W1, X1, W2, X2 = listing()
TRACE = [
    Request(T0 + 10, "10.0.1.5", W1),
    Request(T0 + 20, "10.0.2.5", W1),
    Request(T0 + 30, "10.0.1.5", X1),
    Request(T0 + 40, "10.0.2.5", X1),
    Request(T0 + 3700, "10.0.3.5", W1),
    Request(T0 + 3800, "10.0.3.5", X1),
    Request(T0 + 7300, "10.0.1.5", W2),
    Request(T0 + 7400, "10.0.2.5", W2),
    Request(T0 + 10900, "10.0.3.5", W2),
]
BUDGETS = (2 * MB, 3 * MB)


def make_config(**cache: Any) -> Config:
    section = {"size_limit": "1g", "min_vote_count": 2, "dedup_window": "5m", "vote_window": "7d", **cache}
    upstream = {"pypi_url": "https://index.example.org", "packages_url": "https://files.example.org/packages"}
    return parse_config({"repo_path": "/srv/repo", "upstream": upstream, "cache": section, "schedule": {"cache": "1h"}})


def run(listed: dict[str, ListedFile] | None) -> dict[tuple[str, int], PolicyResult]:
    config = make_config()
    files = listed or listing()
    trace = compact_trace(TRACE, files)
    results = simulate(
        trace, BUDGETS, ("seed", "default"), cache=config.cache, schedule=config.schedule.cache, listed=listed,
    )
    return {(r.policy, r.budget): r for r in results}


def test_default_prefetches_the_new_release_at_the_next_planning_and_seed_does_not() -> None:
    results = run(listing())
    assert {key: r.hits for key, r in results.items()} == {
        ("seed", 2 * MB): 2, ("seed", 3 * MB): 3, ("default", 2 * MB): 2, ("default", 3 * MB): 5,
    }
    assert {key: r.upstream_bytes for key, r in results.items()} == {
        ("seed", 2 * MB): 1_500_000, ("seed", 3 * MB): 2_500_000,
        ("default", 2 * MB): 2_000_000, ("default", 3 * MB): 3_000_000,
    }


@pytest.mark.parametrize(("filesize_limit", "upstream"), [(None, 1_500_000), ("700k", 500_000)])
def test_a_new_release_above_filesize_limit_is_not_prefetched(filesize_limit: str | None, upstream: int) -> None:
    # demo 1.0's wheel (0.5 MB) is cached at t0+1h (2 votes); 2.0's (1 MB, out at t0+1.5h)
    # succeeds it at t0+2h and is prefetched, unless larger than filesize_limit. r3 hits.
    w1 = dist("demo-1.0-py3-none-any.whl", MB // 2, LONG_AGO)
    w2 = dist("demo-2.0-py3-none-any.whl", MB, RELEASED)
    files = {f.path: f for f in (w1, w2)}
    requests = [Request(T0 + 10, "10.0.1.5", w1.path), Request(T0 + 20, "10.0.2.5", w1.path),
                Request(T0 + 7300, "10.0.1.5", w1.path)]
    config = make_config(filesize_limit=filesize_limit)
    (result,) = simulate(
        compact_trace(requests, files), (3 * MB,), ("default",), cache=config.cache,
        schedule=config.schedule.cache, listed=files,
    )
    assert (result.hits, result.upstream_bytes) == (1, upstream)


def test_without_the_stored_pages_nothing_is_prefetched() -> None:
    results = run(None)
    assert (results[("default", 3 * MB)].hits, results[("default", 3 * MB)].upstream_bytes) == (3, 2_500_000)
    assert (results[("default", 2 * MB)].hits, results[("default", 2 * MB)].upstream_bytes) == (2, 1_500_000)


@pytest.mark.parametrize(("released", "hits"), [(T0 + 7210, 5), (T0 + 7211, 3)])
def test_a_release_is_prefetched_only_from_the_first_planning_at_or_after_its_upload(released: int, hits: int) -> None:
    # The planner runs from the first request on: t0+10, t0+10+1h, t0+10+2h (= t0+7210), ...
    # Out at that third planning's instant: prefetched then. A second later: W2's first requests
    # miss, and at t0+3h its own votes bring it (and X2 comes along, prefetched).
    results = run(listing(released))
    assert results[("default", 3 * MB)].hits == hits
    assert results[("default", 3 * MB)].upstream_bytes == 3_000_000


def test_the_replay_needs_only_the_trace_files_and_their_projects_uploads_within_the_window() -> None:
    files = listing()
    unrelated = [
        dist("demo-0.9-py3-none-any.whl", MB, LONG_AGO),  # before the window: can succeed nothing
        dist("other-2.0-py3-none-any.whl", MB, RELEASED),  # a project the trace never asks for
        dist("demo-3.0-py3-none-any.whl", MB, T0 + 86_400),  # after the trace
    ]
    whole = {**files, **{f.path: f for f in unrelated}}
    trace = compact_trace(TRACE, whole)
    assert release_listing(trace, whole, 7 * 86_400) == files
    assert run(whole) == run(files)


def test_a_prefetched_file_keeps_its_votes_so_it_is_not_evicted_and_fetched_again() -> None:
    # W1 (1 MB) and Y (1 MB) fill 2 MB at t0+1h. At t0+2h W2 (0.5 MB, out at t0+1.5h) inherits
    # W1's 2 votes and scores 2/0.56 MiB = 3.54, above W1's 2.82 (cached, 1.5 x 1.88) and below
    # Y's 4.22 (3 votes): Y and W2 stay, W1 is evicted. At t0+3h and t0+4h W2 keeps the 2
    # votes (5.32 cached), W1 (1.88) does not fit: nothing changes. Were W2 ranked by its own
    # votes (none), it would be evicted for W1 at t0+3h and fetched again at t0+4h.
    w1 = dist("demo-1.0-py3-none-any.whl", MB, LONG_AGO)
    w2 = dist("demo-2.0-py3-none-any.whl", MB // 2, RELEASED)
    y = dist("aaa-1.0-py3-none-any.whl", MB, LONG_AGO)
    files = {f.path: f for f in (w1, w2, y)}
    trace = compact_trace(
        [
            Request(T0 + 10, "10.0.1.5", w1.path),
            Request(T0 + 20, "10.0.2.5", w1.path),
            Request(T0 + 30, "10.0.1.5", y.path),
            Request(T0 + 40, "10.0.2.5", y.path),
            Request(T0 + 3700, "10.0.3.5", y.path),
            Request(T0 + 14500, "10.0.4.5", y.path),
        ],
        files,
    )
    config = make_config()
    (result,) = simulate(
        trace, (2 * MB,), ("default",), cache=config.cache, schedule=config.schedule.cache, listed=files
    )
    assert (result.hits, result.upstream_bytes) == (2, 2_500_000)


def test_the_kept_rankings_replay_exactly_as_rankings_made_afresh_at_every_instant(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each planner state ranks again only the paths it is told may have changed (votes, its
    last plan's steps, new releases); a random month-like replay with several releases gives
    the same figures as one that ranks every candidate afresh at every instant."""
    rng = random.Random(3)
    files: list[ListedFile] = []
    for project in ("alpha", "beta", "gamma", "delta"):
        for version, uploaded in enumerate((LONG_AGO, T0 + 20_000, T0 + 90_000, T0 + 150_000), start=1):
            for tag in ("py3-none-any", "cp312-cp312-win_amd64", "cp311-cp311-manylinux_2_17_x86_64"):
                files.append(dist(f"{project}-{version}.0-{tag}.whl", rng.randrange(50_000, MB), uploaded))
    listed = {f.path: f for f in files}
    requests = []
    for t in sorted(rng.randrange(200_000) for _ in range(1500)):
        out = [f for f in files if f.upload_time <= T0 + t]
        newest = max(f.version for f in out)
        choices = [f for f in out if f.version == newest or rng.random() < 0.2]
        requests.append(Request(T0 + t, f"10.{rng.randrange(30)}.0.1", rng.choice(choices).path))
    trace = compact_trace(requests, listed)
    config = make_config()
    budgets = [MB, 3 * MB, 6 * MB]

    def replay() -> list[PolicyResult]:
        return simulate(trace, budgets, ("seed", "default"), cache=config.cache,
                        schedule=config.schedule.cache, listed=listed, workers=1)

    kept = replay()

    def afresh(
        local: dict[str, Any], _: Any, votes: Mapping[str, int], limits: list[int], *, ranking: Any, changed: Any,
        **kwargs: Any,
    ) -> CachePlan:
        """The plan over every voted file not cached (the replay passes the changed ones only)."""
        wanted = [RemoteFile(p, listed[p].size, "") for p in votes if p not in local]
        return plan_cache(local, wanted, votes, limits, **kwargs)

    monkeypatch.setattr(simulate_module, "plan_cache", afresh)
    assert replay() == kept
    assert all(r.hits > 0 for r in kept)
