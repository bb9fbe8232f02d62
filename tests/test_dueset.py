"""DueSet: the earliest key, as a plain dict and min() would say, through every kind of change."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from common.dueset import DueSet

KEYS = st.sampled_from(["a", "b", "c", "d", "e"])
OPS = st.lists(st.tuples(st.sampled_from(["set", "earlier", "discard"]), KEYS,
                         st.integers(min_value=0, max_value=20)), max_size=300)


@given(OPS)
def test_first_is_the_minimum_of_the_map(ops: list[tuple[str, str, int]]) -> None:
    model: dict[str, float] = {}
    due = DueSet()
    for op, key, at in ops:
        if op == "set":
            model[key] = at
            due.set(key, at)
        elif op == "earlier":
            model[key] = min(model.get(key, at), at)
            due.set_earlier(key, at)
        else:
            model.pop(key, None)
            due.discard(key)
        expected = min((at, k) for k, at in model.items()) if model else None
        assert due.first() == expected
        assert len(due) == len(model) and set(due) == set(model)
        assert all(due.get(k) == model.get(k) for k in "abcdef")


def test_stale_entries_do_not_pile_up() -> None:
    due = DueSet()
    for i in range(10_000):
        due.set("a", float(i))
    assert due.first() == (9999.0, "a")
    assert len(due._heap) <= 2 * len(due) + 64 + 1
