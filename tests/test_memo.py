"""common.memo: a bounded two-generation memo."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.memo import Memo


def test_a_value_in_use_survives_turnovers() -> None:
    memo: Memo[str, int] = Memo(3)
    memo.put("keep", 0)
    for i in range(20):
        assert memo.get("keep") == 0  # read between every few new entries: never dropped
        memo.put(f"k{i}", i)
    assert memo.turnovers > 3


def test_a_value_not_seen_for_two_generations_is_dropped() -> None:
    memo: Memo[str, int] = Memo(2)
    memo.put("once", 1)
    for i in range(4):
        memo.put(f"k{i}", i)
    assert memo.get("once") is None


def test_the_hot_dict_is_never_rebound() -> None:
    memo: Memo[int, int] = Memo(2)
    hot = memo.hot
    for i in range(10):
        memo.put(i, i)
    assert memo.hot is hot
    assert hot == {8: 8, 9: 9}


def test_a_hit_in_the_old_generation_moves_back_to_hot() -> None:
    memo: Memo[str, int] = Memo(2)
    memo.put("a", 1)
    memo.put("b", 2)
    memo.put("c", 3)  # turnover: a, b old
    assert "a" not in memo.hot
    assert memo.get("a") == 1
    assert "a" in memo.hot
    assert len(memo) == 3


def test_updating_a_key_in_a_full_generation_does_not_turn_it_over() -> None:
    memo: Memo[str, int] = Memo(2)
    memo.put("a", 1)
    memo.put("b", 2)
    memo.put("a", 3)
    assert memo.turnovers == 0
    assert memo.get("a") == 3


@pytest.mark.parametrize("size", [0, -1])
def test_size_must_be_positive(size: int) -> None:
    with pytest.raises(ValueError, match="size"):
        Memo(size)


def test_clear_forgets_both_generations() -> None:
    memo: Memo[int, int] = Memo(1)
    memo.put(1, 1)
    memo.put(2, 2)
    memo.clear()
    assert len(memo) == 0
    assert memo.get(1) is None


@given(st.integers(min_value=1, max_value=8), st.lists(st.integers(min_value=0, max_value=30), max_size=300))
def test_bounded_and_never_wrong(size: int, keys: list[int]) -> None:
    """Whatever the access pattern: at most 2 * size entries, and a hit is the value last put for the key."""
    memo: Memo[int, int] = Memo(size)
    last: dict[int, int] = {}
    for n, key in enumerate(keys):
        hit = memo.get(key)
        if hit is not None:
            assert hit == last[key]
        if n % 3:
            memo.put(key, n)
            last[key] = n
        assert len(memo) <= 2 * size
        assert len(memo.hot) <= size
