"""A bounded memo for values that recur (parsed prices, encoded levels, canonical strings).

Two generations of at most ``size`` entries each: new entries go into ``hot``; when ``hot`` is full, its entries
become the old generation and ``hot`` starts empty. A key found only in the old generation moves back into
``hot``, so a value still in use survives every turnover, and one not seen for a whole generation is dropped.
Memory stays under ``2 * size`` entries however long the process runs, where a dict cleared when full grows to
its whole bound before it drops anything and then forgets the values in use too.

``hot`` is never rebound (a turnover moves its entries in place), so a hot path may bind ``memo.hot.get`` once
and look up inline, calling :meth:`Memo.get` or :meth:`Memo.put` only on a miss (the callers that chain the three
with ``or`` store values that are never falsy: non-empty text, prices above zero).
"""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Memo(Generic[K, V]):
    """A two-generation bounded memo (see the module)."""

    __slots__ = ("_old", "hot", "size", "turnovers")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a Memo needs size >= 1")
        self.hot: dict[K, V] = {}
        self._old: dict[K, V] = {}
        self.size = size
        self.turnovers = 0

    def get(self, key: K) -> V | None:
        """The value remembered for ``key``, or None (one found in the old generation moves back to ``hot``)."""
        value = self.hot.get(key)
        if value is None:
            value = self._old.pop(key, None)
            if value is not None:
                self.put(key, value)
        return value

    def put(self, key: K, value: V) -> V:
        """Remember ``value`` for ``key`` and return it."""
        hot = self.hot
        if len(hot) >= self.size and key not in hot:
            old = self._old
            old.clear()
            old.update(hot)
            hot.clear()
            self.turnovers += 1
        hot[key] = value
        return value

    def clear(self) -> None:
        """Forget everything."""
        self.hot.clear()
        self._old.clear()

    def __len__(self) -> int:
        return len(self.hot) + len(self._old)
