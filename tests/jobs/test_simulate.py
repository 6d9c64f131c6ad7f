"""The replay simulator on a hand-made trace whose hit rates are computed by hand below.

Files (sizes in bytes): A = 1,000,000, B = 1,000,000, C = 3,000,000, D = 500,000; one tier;
``schedule.cache`` 1h, so the planner runs at t0, t0 + 1h and t0 + 2h; ``min_vote_count`` 2
(the seed's threshold; the default policy has none), ``dedup_window`` 5m, ``vote_window`` 7d. Networks: net1 = 10.0.1.0/24, net2 = 10.0.2.0/24, ...

====  ==========  ====  =====
 req  time        file  net
====  ==========  ====  =====
 r1   t0          A     1
 r2   t0+10       A     2
 r3   t0+20       C     1
 r4   t0+30       C     2
 r5   t0+40       C     3
 r6   t0+50       B     1 (another host of the same /24)
 r7   t0+60       D     1
 r8   t0+70       A     1 (within dedup_window of r1: no new vote)
 --   t0+80       an unlisted file (counted apart, in no figure)
 r9   t0+3700     A     3
 r10  t0+3800     C     4
 r11  t0+3900     D     2
 r12  t0+4000     B     2
 r13  t0+4100     C     1
 r14  t0+7300     C     5
 r15  t0+7400     D     3
 r16  t0+7500     B     3
 r17  t0+7600     A     4
====  ==========  ====  =====

Planner at t0: no votes, nothing is cached, so r1–r8 all miss.

Planner at t0+1h, votes: A 2 (net1, net2), C 3, B 1, D 1 (as networks and as votes).

- seed (only files with >= 2 networks; below 2 GiB the score is the networks): C, then A.
  2 MB: C does not fit, A does -> {A}. 4 MB: C then A -> {A, C}.
- default (every voted file, by votes per (size + 64 KiB)): A 2/1.066M (1.88e-6), D 1/0.566M
  (1.77e-6), C 3/3.066M (0.98e-6), B 1/1.066M (0.94e-6). 2 MB: A, D, then neither C nor B
  fits -> {A, D}. 4 MB: A, D, C does not fit in the 2.5 MB left, B does -> {A, D, B}.

Hour 1 (r9–r13): seed 2M hits r9 (1); seed 4M r9, r10, r13 (3); default 2M r9, r11 (2);
default 4M r9, r11, r12 (3).

Planner at t0+2h: networks A 3, B 2, C 4, D 2; votes the same but C 5 (net1 again, r13).

- seed 2 MB: C (no room), A, then B and D tie on networks: smaller first, D -> {A, D},
  downloads D. seed 4 MB: C, A -> {A, C}, no change.
- default (cached files count 1.5 times): D 2/0.566M*1.5 (5.3e-6), A 3/1.066M*1.5 (4.2e-6),
  B 2/1.066M (1.9e-6, 2.8e-6 where cached), C 5/3.066M (1.6e-6). 2 MB: D, A -> {D, A}.
  4 MB: D, A, B, and C does not fit -> {D, A, B}. No change at either budget.

Hour 2 (r14–r17): seed 2M hits r15, r17 (total 3); seed 4M r14, r17 (total 5);
default 2M r15, r17 (total 4); default 4M r15, r16, r17 (total 6).

Upstream: seed 2M A + D = 1.5 MB; seed 4M A + C = 4 MB; default 2M A + D = 1.5 MB;
default 4M A + D + B = 2.5 MB.

static-greedy: requests A 5, B 3, C 6, D 3; per byte D 6e-6, A 5e-6, B 3e-6, C 2e-6.
2 MB: D, A (B does not fit) -> 8 hits, stores 1.5 MB. 4 MB: D, A, B -> 11 hits, 2.5 MB.

lru, 2 MB (C never stored): hits r2, r9, r11, r15, r16 = 5; inserts A, B, D, A, B, A = 5.5 MB.
lru, 4 MB: hits r2, r4, r5, r9, r14 = 5; inserts A C B D A C D B C D B A = 16.5 MB.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from pypimirror.jobs import simulate as simulate_module
from pypimirror.jobs.simulate import (
    CompactTrace,
    PolicyResult,
    compact_trace,
    planning_times,
    simulate,
    tier_budgets,
)

from pypimirror.config import Config, Schedule
from pypimirror.configreader import parse_config

T0 = 1_700_000_000
MB = 1_000_000


@dataclass(frozen=True)
class Request:
    time: float
    client: str
    path: str


@dataclass(frozen=True)
class Listed:
    path: str
    size: int


def package(name: str) -> str:
    return f"ab/cd/{'ef' * 30}/{name}-1.0-py3-none-any.whl"


A, B, C, D = (package(n) for n in "abcd")
LISTED = {p: Listed(p, s) for p, s in ((A, MB), (B, MB), (C, 3 * MB), (D, MB // 2))}
TRACE = [
    Request(T0, "10.0.1.5", A),
    Request(T0 + 10, "10.0.2.5", A),
    Request(T0 + 20, "10.0.1.5", C),
    Request(T0 + 30, "10.0.2.5", C),
    Request(T0 + 40, "10.0.3.5", C),
    Request(T0 + 50, "10.0.1.200", B),
    Request(T0 + 60, "10.0.1.5", D),
    Request(T0 + 70, "10.0.1.5", A),
    Request(T0 + 80, "10.0.1.5", package("unlisted")),
    Request(T0 + 3700, "10.0.3.5", A),
    Request(T0 + 3800, "10.0.4.5", C),
    Request(T0 + 3900, "10.0.2.5", D),
    Request(T0 + 4000, "10.0.2.5", B),
    Request(T0 + 4100, "10.0.1.5", C),
    Request(T0 + 7300, "10.0.5.5", C),
    Request(T0 + 7400, "10.0.3.5", D),
    Request(T0 + 7500, "10.0.3.5", B),
    Request(T0 + 7600, "10.0.4.5", A),
]
POLICIES = ("seed", "default", "lru", "static-greedy")


def make_config(**cache: Any) -> Config:
    section = {"size_limit": "1g", "min_vote_count": 2, "dedup_window": "5m", "vote_window": "7d", **cache}
    upstream = {"pypi_url": "https://index.example.org", "packages_url": "https://files.example.org/packages"}
    return parse_config({"repo_path": "/srv/repo", "upstream": upstream, "cache": section, "schedule": {"cache": "1h"}})


def run(config: Config, budgets: tuple[int, ...] = (2 * MB, 4 * MB)) -> dict[tuple[str, int], PolicyResult]:
    trace = compact_trace(TRACE, LISTED)
    results = simulate(trace, budgets, POLICIES, cache=config.cache, schedule=config.schedule.cache)
    return {(r.policy, r.budget): r for r in results}


def test_hand_made_trace_gives_the_hand_computed_hits_for_every_policy() -> None:
    results = run(make_config())
    hits = {key: r.hits for key, r in results.items()}
    assert hits == {
        ("seed", 2 * MB): 3, ("seed", 4 * MB): 5,
        ("default", 2 * MB): 4, ("default", 4 * MB): 6,
        ("lru", 2 * MB): 5, ("lru", 4 * MB): 5,
        ("static-greedy", 2 * MB): 8, ("static-greedy", 4 * MB): 11,
    }
    assert all(r.requests == 17 for r in results.values())
    assert results[("default", 4 * MB)].request_hit_rate == pytest.approx(6 / 17)


def test_hand_made_trace_gives_the_hand_computed_upstream_bytes() -> None:
    upstream = {key: r.upstream_bytes for key, r in run(make_config()).items()}
    assert upstream == {
        ("seed", 2 * MB): 1.5 * MB, ("seed", 4 * MB): 4 * MB,
        ("default", 2 * MB): 1.5 * MB, ("default", 4 * MB): 2.5 * MB,
        ("lru", 2 * MB): 5.5 * MB, ("lru", 4 * MB): 16.5 * MB,
        ("static-greedy", 2 * MB): 1.5 * MB, ("static-greedy", 4 * MB): 2.5 * MB,
    }


def test_byte_hit_rate_weighs_each_hit_by_its_file_size() -> None:
    # lru at 2 MB hits A (r2, r9), D (r11, r15) and B (r16): 4 MB of the 26.5 MB requested.
    result = run(make_config())[("lru", 2 * MB)]
    assert result.requested_bytes == 5 * MB + 3 * MB + 18 * MB + 1.5 * MB
    assert result.hit_bytes == 4 * MB
    assert result.byte_hit_rate == pytest.approx(4 / 27.5)


def test_unlisted_files_are_counted_apart_and_left_out() -> None:
    trace = compact_trace(TRACE, LISTED)
    assert (trace.requests, trace.unlisted_requests, trace.unlisted_files) == (17, 1, 1)
    assert (trace.distinct_files, trace.distinct_bytes) == (4, 5.5 * MB)
    assert trace.networks == 5


def test_clients_are_numbered_by_network_and_unparsable_addresses_cast_no_vote() -> None:
    clients = [
        "10.0.1.5", "10.0.1.05", "10.0.1.256", "10.0.1.7 ", " 10.0.1.9", "::ffff:10.0.1.8", "10.0.1.-1",
        "2001:db8:1::1", "2001:db8:1::1.2.3.4", "2001:db8:2::9", "nonsense.5", "nonsense.6", "", "10.0.2.1",
    ]
    trace = compact_trace([Request(T0 + n, client, A) for n, client in enumerate(clients)], LISTED)
    assert list(trace.nets) == [0, -1, -1, 0, 0, 0, -1, 1, 1, 2, -1, -1, -1, 3]
    assert trace.networks == 4


def test_a_planner_setting_in_the_config_changes_the_simulated_result() -> None:
    # With min_vote_count 1 the seed's planner at t0+1h ranks C, A, then D before B (smaller):
    # at 2 MB it holds {A, D}, so r11 (D) hits too: 4 hits instead of 3.
    strict = run(make_config())[("seed", 2 * MB)]
    lenient = run(make_config(min_vote_count=1))[("seed", 2 * MB)]
    assert (strict.hits, lenient.hits) == (3, 4)


def test_votes_older_than_the_vote_window_stop_counting() -> None:
    # vote_window 1h: the planner at t0+2h counts only r9-r13, so D (net2 only) and B (net2
    # only) have one vote each, below min_vote_count: seed at 2 MB no longer downloads D and
    # r15 misses (2 hits instead of 3). A, cached with no vote left, stays while there is room.
    narrow = run(make_config(vote_window="1h"))[("seed", 2 * MB)]
    assert (narrow.hits, narrow.upstream_bytes) == (2, MB)


E, F = package("e"), package("f")


def planner_hits(trace: list[Request], config: Config) -> dict[str, int]:
    """Hits of ``seed`` and ``default`` replaying ``trace`` of E and F (1 MB each) in 1 MB."""
    listed = {E: Listed(E, MB), F: Listed(F, MB)}
    results = simulate(compact_trace(trace, listed), [MB], ("seed", "default"), cache=config.cache,
                       schedule=config.schedule.cache)
    return {r.policy: r.hits for r in results}


def test_each_policy_counts_votes_over_its_own_window() -> None:
    # E is voted by three networks in the first hour, F by two in the second and asked for
    # twice in the third; 1 MB holds one of them. At t0+2h the seed (vote_window 1h) sees only
    # F's votes and swaps E for F: both late requests hit. The default policy (score_window 7d)
    # still sees E's three votes against F's two and keeps E: no hit. With score_window 1h it
    # swaps too.
    trace = [
        Request(T0, "10.0.1.5", E), Request(T0 + 1000, "10.0.2.5", E), Request(T0 + 2000, "10.0.3.5", E),
        Request(T0 + 4000, "10.0.1.5", F), Request(T0 + 4500, "10.0.2.5", F),
        Request(T0 + 7300, "10.0.3.5", F), Request(T0 + 7400, "10.0.4.5", F),
    ]
    assert planner_hits(trace, make_config(vote_window="1h", score_window="7d")) == {"seed": 2, "default": 0}
    assert planner_hits(trace, make_config(vote_window="1h", score_window="1h")) == {"seed": 2, "default": 2}


def test_the_default_policy_counts_every_vote_the_seed_only_networks() -> None:
    # E is asked for three times by one network (each vote counted: more than dedup_window
    # apart), F once each by two. At t0+1h, 1 MB holds one: the default policy takes E (3 votes
    # to 2), the seed F (E has one network, below min_vote_count). Then E is asked for twice.
    trace = [
        Request(T0, "10.0.1.5", E), Request(T0 + 1000, "10.0.1.6", E), Request(T0 + 2000, "10.0.1.7", E),
        Request(T0 + 2500, "10.0.2.5", F), Request(T0 + 3000, "10.0.3.5", F),
        Request(T0 + 4000, "10.0.1.5", E), Request(T0 + 5000, "10.0.1.5", E),
    ]
    assert planner_hits(trace, make_config()) == {"seed": 0, "default": 2}


def test_a_file_larger_than_the_budget_never_enters_the_lru_cache() -> None:
    results = run(make_config(), budgets=(2 * MB,))
    assert results[("lru", 2 * MB)].upstream_bytes == 5.5 * MB  # C (3 MB) was never inserted


def test_an_empty_trace_gives_zero_rates() -> None:
    config = make_config()
    results = simulate(CompactTrace(), [MB], POLICIES, cache=config.cache, schedule=config.schedule.cache)
    assert [(r.policy, r.request_hit_rate, r.upstream_bytes) for r in results] == [(p, 0.0, 0) for p in POLICIES]


def test_an_unknown_policy_is_refused() -> None:
    config = make_config()
    with pytest.raises(ValueError, match="unknown policies nope"):
        simulate(compact_trace(TRACE, LISTED), [MB], ["nope"], cache=config.cache, schedule=config.schedule.cache)


def test_a_budget_is_shared_by_the_tiers_in_proportion_to_their_limits() -> None:
    assert tier_budgets(1000, [1, 3]) == [250, 750]
    assert tier_budgets(1001, [1, 1, 1]) == [333, 333, 335]
    assert tier_budgets(10, [0, 0]) == [5, 5]


def test_planning_times_follow_an_interval_and_a_cron_expression() -> None:
    from datetime import timedelta

    assert list(planning_times(Schedule(interval=timedelta(hours=1)), 0, 7200)) == [0, 3600, 7200]
    # "*/30 * * * *" from 00:10 UTC: at the start, then 00:30, 01:00.
    assert list(planning_times(Schedule(cron="*/30 * * * *"), 600, 3600)) == [600, 1800, 3600]


def random_trace(requests: int, seed: int) -> tuple[list[Request], dict[str, Listed]]:
    """A trace over three days: 60 files of mixed sizes, skewed popularity, 40 networks."""
    rng = random.Random(seed)
    listed = {p: Listed(p, rng.randrange(10_000, 3 * MB)) for p in (package(f"f{n}") for n in range(60))}
    paths = list(listed)
    weights = [1 / (rank + 1) for rank in range(len(paths))]
    times = sorted(rng.randrange(3 * 86400) for _ in range(requests))
    trace = [
        Request(T0 + t, f"10.{rng.randrange(40)}.0.{rng.randrange(1, 250)}", rng.choices(paths, weights)[0])
        for t in times
    ]
    return trace, listed


def test_planner_states_replayed_in_several_processes_give_the_results_of_one() -> None:
    requests, listed = random_trace(3000, seed=5)
    trace = compact_trace(requests, listed)
    config = make_config(min_vote_count=3, vote_window="1d")
    budgets = [2 * MB, 5 * MB, 9 * MB]
    serial = simulate(trace, budgets, POLICIES, cache=config.cache, schedule=config.schedule.cache, workers=1)
    parallel = simulate(trace, budgets, POLICIES, cache=config.cache, schedule=config.schedule.cache, workers=2)
    assert parallel == serial
    assert all(r.hits > 0 for r in serial)  # every state did replay


def test_a_failing_simulation_process_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    replay = simulate_module._replay_planners

    def fail_in_child(*args: Any, report: bool = True) -> None:
        if not report:
            raise ValueError("no planner today")
        replay(*args, report=report)

    monkeypatch.setattr(simulate_module, "_replay_planners", fail_in_child)
    config = make_config()
    with pytest.raises(RuntimeError, match="a simulation process failed: ValueError: no planner today"):
        simulate(compact_trace(TRACE, LISTED), [MB, 2 * MB], POLICIES, cache=config.cache,
                 schedule=config.schedule.cache, workers=2)


@pytest.mark.parametrize("distinct", [True, False], ids=["networks", "votes"])
def test_the_vote_store_keeps_its_popular_files_as_a_recount_finds_them(distinct: bool) -> None:
    """Counted and expired vote by vote, the files with at least 3 networks (``seed``) or votes
    (``default``), by number and by path, are always those a recount of the trace finds: every
    request counted unless the same network's last counted one for the file is less than the
    dedup window before it, then the counted votes inside the window."""
    requests, listed = random_trace(3000, seed=11)
    trace = compact_trace(requests, listed)
    cache = make_config(vote_window="2h").cache
    dedup = int(cache.dedup_window.total_seconds())
    votes = simulate_module._Votes(trace, cache, distinct=distinct, floor=3)
    counted: list[tuple[int, int, int]] = []  # (time, file, network) of each counted vote
    last: dict[tuple[int, int], int] = {}
    for t, fid, net in zip(trace.times, trace.files, trace.nets, strict=True):
        previous = last.get((fid, net))
        if net >= 0 and (previous is None or previous <= t - dedup):
            last[fid, net] = t
            counted.append((t, fid, net))
    start = 0
    for instant in range(trace.times[0] + 1800, trace.times[-1] + 1800, 1800):
        end = simulate_module._first_at_or_after(trace.times, instant, start)
        votes.count(start, end)
        votes.expire(instant - 7200)
        start = end
        inside = [(fid, net) for t, fid, net in counted if instant - 7200 <= t < instant]
        recount = Counter(fid for fid, _ in (set(inside) if distinct else inside))
        popular = {f: n for f, n in recount.items() if n >= 3}
        assert votes.popular_files == popular
        assert votes.popular_paths == {trace.paths[f]: n for f, n in popular.items()}
    assert popular and len(recount) > len(popular)  # both kinds of file were seen
