"""TierLookup: a miss is remembered for its TTL and no longer; a hit is never remembered."""

from __future__ import annotations

from pathlib import Path

import pytest

from pypimirror import tierlookup
from pypimirror.pkgpath import parse_package_path
from pypimirror.tierlookup import TierLookup

REL = "30/52/547eb3b2ab0fe4a6c3cd61ab71a0d1d82caf1f7b25d0a1e5d9c8bfbfdf88/sampleproject-1.2.0-py3-none-any.whl"
PATH = parse_package_path(REL)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def tiers(tmp_path: Path) -> list[Path]:
    roots = [tmp_path / "hot", tmp_path / "cold"]
    for root in roots:
        root.mkdir()
    return roots


def put_file(root: Path, relpath: str = REL) -> Path:
    target = root / relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"wheel")
    return target


def test_a_file_placed_after_a_miss_is_found_once_the_miss_is_forgotten(tiers: list[Path], clock: FakeClock) -> None:
    lookup = TierLookup(tiers, miss_ttl=1.0, clock=clock)
    assert lookup.find(PATH) is None
    put_file(tiers[1])
    clock.now += 0.9
    assert lookup.find(PATH) is None  # still remembered: no lstat, the client is redirected
    clock.now += 0.1
    found = lookup.find(PATH)
    assert found is not None and found[:2] == (1, tiers[1] / REL)


def test_a_hit_is_not_remembered_so_an_evicted_file_is_missed_at_once(tiers: list[Path], clock: FakeClock) -> None:
    lookup = TierLookup(tiers, miss_ttl=60.0, clock=clock)
    put_file(tiers[0])
    assert lookup.find(PATH) is not None
    (tiers[0] / REL).unlink()
    assert lookup.find(PATH) is None


def test_a_miss_found_later_is_dropped_from_memory(tiers: list[Path], clock: FakeClock) -> None:
    lookup = TierLookup(tiers, miss_ttl=1.0, clock=clock)
    assert lookup.find(PATH) is None
    put_file(tiers[0])
    clock.now += 5
    assert lookup.find(PATH) is not None
    (tiers[0] / REL).unlink()
    assert lookup.find(PATH) is None  # looked up again, not answered by the old entry's ghost


def test_a_zero_ttl_remembers_nothing(tiers: list[Path], clock: FakeClock) -> None:
    lookup = TierLookup(tiers, miss_ttl=0, clock=clock)
    assert lookup.find(PATH) is None
    put_file(tiers[0])
    assert lookup.find(PATH) is not None


def test_memory_of_misses_is_bounded(
    tiers: list[Path], clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tierlookup, "_MAX_MISSES", 3)
    lookup = TierLookup(tiers, miss_ttl=60.0, clock=clock)
    others = [parse_package_path(f"ab/cd/ef/other{n}-1.0.tar.gz") for n in range(3)]
    assert lookup.find(PATH) is None
    for other in others[:2]:
        assert lookup.find(other) is None
    put_file(tiers[0])
    assert lookup.find(PATH) is None  # three remembered: the bound is reached, nothing forgotten yet
    assert lookup.find(others[2]) is None  # a fourth miss starts the memory afresh
    assert lookup.find(PATH) is not None
