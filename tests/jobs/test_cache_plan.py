"""The cache plan is pure: scores, first-fit assignment, and an order of steps that never
puts a tier over its limit, even when an earlier step failed."""

from __future__ import annotations

import itertools
import random

import pytest
from pypimirror.jobs import cache_plan
from pypimirror.jobs.cache_plan import (
    CachePlan,
    Candidate,
    CandidateRanking,
    Move,
    RemoteFile,
    assign_tiers,
    format_plan,
    plan_cache,
    rank_candidates,
    schedule_moves,
    score,
)

from pypimirror.config import CachePolicy
from pypimirror.errors import UnsafePathError
from pypimirror.inventory import (
    LocalFile,
    TierScan,
    diff_rows,
    is_package_relpath,
    reconcile_tiers,
)
from pypimirror.pkgpath import parse_package_path

GiB = 1024**3


def path(name: str) -> str:
    """A well-formed package path whose file name is ``name``."""
    return f"ab/cd/{'ef' * 30}/{name}"


def remote(name: str, size: int) -> RemoteFile:
    return RemoteFile(path(name), size, "0" * 64)


def local(name: str, tier: int, size: int, metadata_size: int | None = None) -> LocalFile:
    return LocalFile(path(name), tier, size, metadata_size)


# -- score (seed §12 item 12) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("votes", "size", "expected"),
    [
        (2, 1000, 0.0009765624995452526),
        (10, 5 * GiB, 0.001953124999636202),
        (3, 2 * GiB, 0.001464843749317879),
        (0, 1000, 0.0),
        (2, 0, 0.0009765624995452526),  # below 2 GiB size has no influence
    ],
)
def test_score_matches_the_seed_formula_exactly(votes: int, size: int, expected: float) -> None:
    assert score(votes, size) == expected


# -- assignment and execution order (seed §12 item 13) -----------------------------------


def worked_example() -> CachePlan:
    """Tiers [100, 200]; by score a(80, local t1), b(50, remote), c(30, local t0),
    d(150, local t0), e(60, remote): votes 5..1 give exactly that order."""
    files = {f.path: f for f in (local("a.whl", 1, 80), local("c.whl", 0, 30), local("d.whl", 0, 150))}
    wanted = [remote("b.whl", 50), remote("e.whl", 60)]
    votes = {path(n): v for n, v in zip(("a.whl", "b.whl", "c.whl", "d.whl", "e.whl"), (5, 4, 3, 2, 1), strict=True)}
    return plan_cache(files, wanted, votes, [100, 200])


def test_worked_example_assigns_first_fit_as_the_seed() -> None:
    candidates = [
        Candidate("a", 5, 80, 80, 5.0),
        Candidate("b", 4, 50, 50, 4.0),
        Candidate("c", 3, 30, 30, 3.0),
        Candidate("d", 2, 150, 150, 2.0),
        Candidate("e", 1, 60, 60, 1.0),
    ]
    assert assign_tiers(candidates, [100, 200]) == [0, 1, 1, -1, 1]


def test_worked_example_plan_evicts_d_moves_a_and_c_downloads_b_and_e() -> None:
    plan = worked_example()
    assert [(e.file.path, e.file.tier) for e in plan.evictions] == [(path("d.whl"), 0)]
    assert [(m.file.path, m.file.tier, m.target) for m in plan.moves] == [
        (path("c.whl"), 0, 1),  # the demotion first: it frees the hot tier
        (path("a.whl"), 1, 0),
    ]
    assert [(d.file.path, d.tier) for d in plan.downloads] == [(path("b.whl"), 1), (path("e.whl"), 1)]
    assert plan.used_before == (180, 80)
    assert plan.used_after == (80, 140)
    assert (plan.kept, plan.deferred, plan.unplaced, plan.blocked) == (0, 0, 0, ())


def test_plan_steps_never_exceed_a_limit_except_where_the_start_already_did() -> None:
    plan = worked_example()
    fill = list(plan.used_before)
    for eviction in plan.evictions:
        fill[eviction.file.tier] -= eviction.file.bytes
    assert all(used <= limit for used, limit in zip(fill, plan.limits, strict=True))
    for move in plan.moves:
        fill[move.target] += move.file.bytes
        fill[move.file.tier] -= move.file.bytes
        assert all(used <= limit for used, limit in zip(fill, plan.limits, strict=True))
    for download in plan.downloads:
        fill[download.tier] += download.file.bytes
        assert all(used <= limit for used, limit in zip(fill, plan.limits, strict=True))


# -- fixed behaviours ----------------------------------------------------------------------


def test_ties_are_broken_by_votes_then_smaller_size_then_path_whatever_the_input_order() -> None:
    files = [local("z.whl", 0, 10), local("a.whl", 0, 10), local("big.whl", 0, 20)]
    wanted = [remote("m.whl", 10)]
    votes = {path("z.whl"): 3, path("a.whl"): 3, path("big.whl"): 3, path("m.whl"): 4}
    orders = set()
    for permutation in itertools.permutations(files):
        ranked = rank_candidates(permutation, wanted, votes)
        orders.add(tuple(c.path for c in ranked))
    assert orders == {(path("m.whl"), path("a.whl"), path("z.whl"), path("big.whl"))}


def test_unpopular_cached_files_score_zero_and_keep_leftover_room() -> None:
    plan = plan_cache({path("old.whl"): local("old.whl", 0, 40)}, [remote("new.whl", 50)], {path("new.whl"): 2}, [100])
    assert plan.evictions == ()
    assert [d.file.path for d in plan.downloads] == [path("new.whl")]
    assert plan.kept == 1


def test_download_is_planned_only_after_the_eviction_that_makes_room() -> None:
    plan = plan_cache({path("old.whl"): local("old.whl", 0, 80)}, [remote("new.whl", 50)], {path("new.whl"): 2}, [100])
    assert [e.file.path for e in plan.evictions] == [path("old.whl")]
    assert [d.file.path for d in plan.downloads] == [path("new.whl")]
    assert plan.used_after == (50,)


def test_metadata_bytes_count_toward_the_tier() -> None:
    plan = plan_cache(
        {path("a.whl"): local("a.whl", 0, 60, metadata_size=5)},
        [RemoteFile(path("b.whl"), 30, "0" * 64, "1" * 64, metadata_size=10)],
        {path("a.whl"): 3, path("b.whl"): 2},
        [100],
    )
    assert plan.downloads == ()  # 65 + 40 > 100, although 60 + 30 would fit
    assert plan.unplaced == 1


def test_shrunken_budget_evicts_until_within_the_new_limit() -> None:
    files = {f.path: f for f in (local("a.whl", 0, 40), local("b.whl", 0, 40), local("c.whl", 0, 40))}
    votes = {path("a.whl"): 3, path("b.whl"): 2, path("c.whl"): 1}
    plan = plan_cache(files, [], votes, [50])
    assert [e.file.path for e in plan.evictions] == [path("c.whl"), path("b.whl")]
    assert plan.used_after == (40,)


def test_swap_between_two_full_tiers_is_blocked_not_overfilled() -> None:
    files = {f.path: f for f in (local("hot.whl", 1, 100), local("cold.whl", 0, 100))}
    plan = plan_cache(files, [], {path("hot.whl"): 5}, [100, 100])
    assert plan.moves == ()
    assert sorted(m.file.path for m in plan.blocked) == [path("cold.whl"), path("hot.whl")]
    assert plan.used_after == (100, 100)
    assert plan.evictions == ()


def test_blocked_move_out_of_an_over_full_tier_becomes_an_eviction() -> None:
    # Tier 0 shrank to 100 while holding a and b (120); tier 1 is full enough that nothing can
    # move until something else has moved: every move is blocked, tier 0 would stay over.
    files = {
        f.path: f
        for f in (local("a.whl", 0, 60), local("b.whl", 0, 60), local("c.whl", 1, 100), local("d.whl", 1, 80))
    }
    votes = {path("c.whl"): 9, path("a.whl"): 8, path("b.whl"): 7, path("d.whl"): 6}
    plan = plan_cache(files, [], votes, [100, 200])
    assert [e.file.path for e in plan.evictions] == [path("b.whl")]
    assert sorted(m.file.path for m in plan.blocked) == [path("a.whl"), path("c.whl")]
    assert plan.used_after == (60, 180)


def test_schedule_moves_waits_for_room_made_by_a_later_move() -> None:
    promote = Move(local("p.whl", 1, 50), 0, 2.0)
    demote = Move(local("d.whl", 0, 50), 1, 1.0)
    ordered, blocked = schedule_moves([promote, demote], used=[100, 50], limits=[100, 100])
    assert ordered == [demote, promote]
    assert blocked == []


def test_filesize_limits_of_zero_keep_nothing() -> None:
    plan = plan_cache({path("a.whl"): local("a.whl", 0, 1)}, [remote("b.whl", 1)], {path("b.whl"): 2}, [0])
    assert [e.file.path for e in plan.evictions] == [path("a.whl")]
    assert plan.unplaced == 1


def test_format_plan_lists_every_step_and_each_tier() -> None:
    text = format_plan(worked_example())
    assert text.splitlines()[0] == (
        "cache plan: 1 evictions, 2 moves, 2 downloads, 0 files stay, 0 moves blocked, "
        "0 downloads deferred, 0 wanted files fit no tier"
    )
    assert "  tier 0: 180 B -> 80 B of 100 B" in text
    assert f"evict    {path('d.whl')} from tier 0 (150 B, score 0.000976562)" in text
    assert f"demote   {path('c.whl')} tier 0 -> 1" in text
    assert f"promote  {path('a.whl')} tier 1 -> 0" in text
    assert f"download {path('e.whl')} to tier 1 (60 B" in text


# -- reconciling tier walks (pure part of phase A) ------------------------------------------


def test_reconcile_keeps_the_hottest_copy_and_marks_colder_duplicates() -> None:
    hot = TierScan(0, files={path("a.whl"): 10})
    cold = TierScan(1, files={path("a.whl"): 10, path("b.whl"): 7, path("b.whl") + ".metadata": 2})
    inventory = reconcile_tiers([hot, cold])
    assert inventory.files == {
        path("a.whl"): LocalFile(path("a.whl"), 0, 10),
        path("b.whl"): LocalFile(path("b.whl"), 1, 7, 2),
    }
    assert inventory.duplicates == [(1, path("a.whl"))]
    assert inventory.orphans == []
    assert inventory.tier_bytes(2) == [10, 9]


def test_reconcile_marks_metadata_without_its_distribution_in_the_same_tier() -> None:
    hot = TierScan(0, files={path("a.whl") + ".metadata": 3}, temp_files=[path(".x.pypimirror-tmp-1")])
    cold = TierScan(1, files={path("a.whl"): 10})
    inventory = reconcile_tiers([hot, cold])
    assert inventory.files == {path("a.whl"): LocalFile(path("a.whl"), 1, 10)}
    assert inventory.orphans == [(0, path("a.whl") + ".metadata")]
    assert inventory.temp_files == [(0, path(".x.pypimirror-tmp-1"))]


def test_diff_rows_trusts_the_disk_over_stored_rows() -> None:
    files = {path("a.whl"): LocalFile(path("a.whl"), 1, 10, 2), path("b.whl"): LocalFile(path("b.whl"), 0, 5)}
    stored = {path("a.whl"): (999, 0), path("b.whl"): (5, 0), path("gone.whl"): (1, 0)}
    upserts, stale = diff_rows(files, stored)
    assert upserts == [(path("a.whl"), 10, 1), (path("a.whl") + ".metadata", 2, 1)]
    assert stale == [path("gone.whl")]


@pytest.mark.parametrize(
    ("relpath", "expected"),
    [
        (path("demo-1.0-py3-none-any.whl"), True),
        (path("demo-1.0+local-py3-none-any.whl"), True),
        (path("demo-1.0-py3-none-any.whl.metadata"), True),
        (path("demo-1.0~odd.tar.gz"), True),  # not on the fast path, accepted by the full gate
        (path("demo..1.0.tar.gz"), False),
        (path(".demo-1.0.tar.gz"), False),
        (path("demo%2B1.0.tar.gz"), False),  # would decode to another name
        ("AB/cd/ef/demo-1.0.tar.gz", False),
        ("ab/cd/demo-1.0.tar.gz", False),
        ("ab/cd/ef/gh/demo-1.0.tar.gz", False),
    ],
)
def test_is_package_relpath_agrees_with_the_request_gate(relpath: str, expected: bool) -> None:
    assert is_package_relpath(relpath) is expected
    try:
        gate = parse_package_path(relpath).relpath == relpath
    except UnsafePathError:
        gate = False
    assert gate is expected


def test_default_policy_keeps_hundreds_of_small_popular_files_before_one_large_wheel() -> None:
    # A 300 MB wheel voted by 5 networks against 300 wheels of 1 MB voted by 2 each, 300 MB of
    # room: the seed (votes only below 2 GiB) takes the large wheel and then no small file
    # fits; the default policy (votes per byte) takes the 300 small files.
    large = RemoteFile(path("large-1.0-cp312-cp312-manylinux_2_17_x86_64.whl"), 300 * 10**6, "00" * 32)
    small = [RemoteFile(path(f"small{i}-1.0-py3-none-any.whl"), 10**6, "00" * 32) for i in range(300)]
    votes = {large.path: 5, **{f.path: 2 for f in small}}
    seed = plan_cache({}, [large, *small], votes, [300 * 10**6], policy="seed")
    default = plan_cache({}, [large, *small], votes, [300 * 10**6], policy="default")
    assert [d.file.path for d in seed.downloads] == [large.path]
    assert {d.file.path for d in default.downloads} == {f.path for f in small}


def test_default_policy_has_no_threshold_a_tiny_file_voted_once_outranks_a_large_one_voted_thrice() -> None:
    rare = RemoteFile(path("rare-1.0-py3-none-any.whl"), 10, "00" * 32)  # tiny: the best score
    common = RemoteFile(path("common-1.0-py3-none-any.whl"), 10**6, "00" * 32)
    ranked = rank_candidates([], [rare, common], {rare.path: 1, common.path: 3}, policy="default")
    assert [c.path for c in ranked] == [rare.path, common.path]
    assert ranked[0].score > ranked[1].score


# -- a ranking kept between runs (the simulator's) -----------------------------------------


@pytest.mark.parametrize("policy", ["seed", "default"])
def test_a_ranking_kept_between_runs_ranks_and_plans_as_a_fresh_one(policy: CachePolicy) -> None:
    """Over many runs of files coming, going, moving and changing votes, the kept ranking's order
    and plans are exactly those of a fresh ranking of the same input, when each run names the
    paths that may have changed (those that did, and a few that did not)."""
    rng = random.Random(7)
    names = [f"pkg{n}-1.0-py3-none-any.whl" for n in range(60)]
    limits = [700, 900]
    kept, kept_for_plans = CandidateRanking(policy), CandidateRanking(policy)
    local_files: dict[str, LocalFile] = {}
    votes: dict[str, int] = {}
    sizes = {name: rng.choice([10, 40, 40, 120, 300]) for name in names}  # equal sizes: ties to break
    remotes = {name: remote(name, sizes[name]) for name in names}  # the same objects run after run
    for _ in range(40):
        changed = {path(name) for name in rng.sample(names, 3)}  # unchanged, named anyway
        for name in rng.sample(names, 12):  # votes come and go
            n = rng.choice([0, 1, 2, 2, 3, 5])
            if n:
                votes[path(name)] = n
            else:
                votes.pop(path(name), None)
            changed.add(path(name))
        for name in rng.sample(names, 4):  # files are cached, moved, dropped; some objects replaced by equal ones
            p = path(name)
            if p in local_files and rng.random() < 0.4:
                del local_files[p]
            else:
                local_files[p] = local(name, rng.randrange(2), sizes[name], rng.choice([None, 5]))
            changed.add(p)
        wanted = [remotes[name] for name in names if path(name) in votes and path(name) not in local_files]
        fresh = rank_candidates(local_files.values(), wanted, votes, policy=policy)
        assert kept.rank(local_files, {r.path: r for r in wanted}, votes, changed=changed) == fresh
        plan = plan_cache(local_files, wanted, votes, limits, policy=policy, ranking=kept_for_plans, changed=changed)
        assert plan == plan_cache(local_files, wanted, votes, limits, policy=policy)


def test_a_ranking_made_for_another_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot rank"):
        plan_cache({}, [], {}, [100], policy="default", ranking=CandidateRanking("seed"))


def test_one_tier_is_fitted_and_sorted_out_in_one_pass_exactly_as_in_two() -> None:
    """The one-tier pass of plan_cache gives what first fit (assign_tiers) and sort_out give."""
    rng = random.Random(11)
    seen: set[str] = set()
    for _ in range(30):
        candidates = rank_candidates(
            [local(f"c{n}-1.0-py3-none-any.whl", rng.randrange(2), rng.randrange(1, 300)) for n in range(40)],
            [remote(f"w{n}-1.0-py3-none-any.whl", rng.randrange(1, 300)) for n in range(40)],
            {path(f"{kind}{n}-1.0-py3-none-any.whl"): rng.randrange(1, 9) for kind in "cw" for n in range(40)},
            policy="default",
        )
        room = rng.randrange(0, 8000)
        one_pass, two_passes = cache_plan._Steps(2), cache_plan._Steps(2)
        one_pass.fit_one_tier(candidates, room)
        two_passes.sort_out(candidates, assign_tiers(candidates, [room]))
        assert vars(one_pass) == vars(two_passes)
        seen |= {name for name, value in vars(one_pass).items() if value and name != "used_before"}
    assert seen == {"evictions", "moves", "wanted", "kept", "unplaced"}
