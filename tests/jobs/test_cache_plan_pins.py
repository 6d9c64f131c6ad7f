"""Pinned files in the pure cache plan: placed first, hottest tier with room, never evicted."""

from __future__ import annotations

import pytest
from pypimirror.jobs.cache_plan import RemoteFile, format_plan, place_pinned, plan_cache

from pypimirror.inventory import LocalFile


def path(name: str) -> str:
    return f"ab/cd/{'ef' * 30}/{name}"


def remote(name: str, size: int) -> RemoteFile:
    return RemoteFile(path(name), size, "0" * 64)


def local(name: str, tier: int, size: int) -> LocalFile:
    return LocalFile(path(name), tier, size, None)


@pytest.mark.parametrize("policy", ["seed", "default"])
def test_pinned_files_take_room_first_and_votes_rank_only_what_is_left(policy: str) -> None:
    files = {f.path: f for f in (local("voted.whl", 0, 60), local("pin-here.whl", 0, 30))}
    wanted = [remote("pin-new.whl", 50), remote("hot.whl", 20)]
    votes = {path("voted.whl"): 9, path("hot.whl"): 9}
    pinned = {path("pin-here.whl"), path("pin-new.whl")}
    plan = plan_cache(files, wanted, votes, [100], policy=policy, pinned=pinned)  # type: ignore[arg-type]
    assert [e.file.path for e in plan.evictions] == [path("voted.whl")]
    assert [(d.file.path, d.tier) for d in plan.downloads] == [(path("pin-new.whl"), 0), (path("hot.whl"), 0)]
    assert (plan.pinned, plan.pinned_bytes, plan.pinned_short) == (2, 80, 0)
    assert plan.used_after == (100,)


def test_pinned_files_go_to_the_hottest_tier_with_room_largest_first() -> None:
    placement = place_pinned([("a", 40), ("b", 70), ("c", 30), ("d", 500)], [100, 60])
    assert dict(placement.tiers) == {"b": 0, "a": 1, "c": 0}
    assert placement.room == (0, 20) and placement.unplaced == ("d",)


def test_a_pinned_file_is_never_evicted_even_when_its_move_is_blocked() -> None:
    # A full swap: the pinned file in tier 1 should go to tier 0, the voted one there to tier 1.
    files = {f.path: f for f in (local("voted.whl", 0, 100), local("pin.whl", 1, 100))}
    plan = plan_cache(files, [], {path("voted.whl"): 5}, [100, 100], pinned={path("pin.whl")})
    assert all(e.file.path != path("pin.whl") for e in plan.evictions)
    assert (plan.pinned, plan.pinned_short) == (1, 0)


def test_pins_over_the_budget_stay_where_they_are_unpinned_go_and_the_shortfall_is_reported() -> None:
    files = {f.path: f for f in (local("pin-a.whl", 0, 80), local("pin-b.whl", 0, 70), local("voted.whl", 0, 10))}
    wanted = [remote("pin-c.whl", 40)]
    plan = plan_cache(files, wanted, {path("voted.whl"): 50}, [100],
                      pinned={path("pin-a.whl"), path("pin-b.whl"), path("pin-c.whl")})
    assert [e.file.path for e in plan.evictions] == [path("voted.whl")]
    assert plan.downloads == () and plan.moves == ()
    assert (plan.pinned, plan.pinned_bytes, plan.pinned_short) == (2, 190, 110)  # pin-b stays where it is, pin-c is not fetched
    assert "pinned files: 190 B, 110 B of them fit no tier" in format_plan(plan)


def test_without_pins_nothing_changes() -> None:
    files = {f.path: f for f in (local("a.whl", 0, 60), local("b.whl", 0, 60))}
    votes = {path("a.whl"): 3, path("b.whl"): 1}
    assert plan_cache(files, [], votes, [100]) == plan_cache(files, [], votes, [100], pinned=frozenset())
    assert plan_cache(files, [], votes, [100]).pinned_bytes == 0


def test_the_printed_plan_says_which_steps_are_for_pins() -> None:
    plan = plan_cache({}, [remote("pin.whl", 10), remote("hot.whl", 10)], {path("hot.whl"): 3}, [100],
                      pinned={path("pin.whl")})
    text = format_plan(plan)
    assert f"download {path('pin.whl')} to tier 0 (10 B, pinned)" in text
    assert f"download {path('hot.whl')} to tier 0 (10 B, score " in text
