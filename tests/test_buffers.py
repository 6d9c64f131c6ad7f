"""The buffer budget: full sizes while it has room, small ones beyond, never a refusal."""

from __future__ import annotations

from pypimirror.buffers import BufferBudget, BufferStats

MIB = 1024 * 1024
SMALL = 64 * 1024


def test_full_sizes_are_granted_while_the_budget_has_room_then_small_ones():
    budget = BufferBudget(3 * MIB)
    granted = [budget.take(MIB, SMALL) for _ in range(5)]
    assert granted == [MIB, MIB, MIB, SMALL, SMALL]
    assert budget.stats == BufferStats(limit=3 * MIB, in_use=3 * MIB + 2 * SMALL, squeezed=2)


def test_what_is_given_back_can_be_taken_again_and_small_sizes_count_too():
    budget = BufferBudget(MIB + SMALL)
    first = budget.take(MIB, SMALL)
    assert budget.take(MIB, SMALL) == SMALL
    budget.give_back(first)
    assert budget.take(MIB, SMALL) == MIB  # beside the small one still held
    assert budget.take(MIB, SMALL) == SMALL
    assert budget.stats == BufferStats(limit=MIB + SMALL, in_use=MIB + 2 * SMALL, squeezed=2)


def test_a_request_larger_than_the_whole_budget_gets_the_small_size():
    budget = BufferBudget(MIB)
    assert budget.take(4 * MIB, 256 * 1024) == 256 * 1024
    assert budget.in_use == 256 * 1024


def test_a_full_size_no_larger_than_the_small_one_is_always_granted_and_never_counted_as_squeezed():
    budget = BufferBudget(MIB)
    budget.take(MIB, SMALL)
    assert budget.take(SMALL, SMALL) == SMALL
    assert budget.stats == BufferStats(limit=MIB, in_use=MIB + SMALL, squeezed=0)
