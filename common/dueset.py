"""Keys with due times, the earliest found in O(log n): a map plus a heap whose stale entries are skipped."""

from __future__ import annotations

import heapq
from collections.abc import Iterator


class DueSet:
    """``key → due`` with :meth:`first` (the earliest, ties by key) in O(log n) amortized, whatever the count.

    Every change pushes a heap entry; an entry whose due is no longer the key's is dropped when it reaches the
    top, and the heap is rebuilt when stale entries outnumber the live ones.
    """

    def __init__(self) -> None:
        self._due: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, key: object) -> bool:
        return key in self._due

    def __iter__(self) -> Iterator[str]:
        return iter(self._due)

    def get(self, key: str) -> float | None:
        """The key's due, None when absent."""
        return self._due.get(key)

    def set(self, key: str, due: float) -> None:
        """Make ``key`` due at ``due``."""
        if self._due.get(key) == due:
            return
        self._due[key] = due
        heapq.heappush(self._heap, (due, key))
        if len(self._heap) > 2 * len(self._due) + 64:
            self._heap = [(d, k) for k, d in self._due.items()]
            heapq.heapify(self._heap)

    def set_earlier(self, key: str, due: float) -> None:
        """Make ``key`` due at ``due`` unless it is due sooner already."""
        current = self._due.get(key)
        if current is None or due < current:
            self.set(key, due)

    def discard(self, key: str) -> None:
        """Forget ``key`` (its heap entries go stale)."""
        self._due.pop(key, None)

    def first(self) -> tuple[float, str] | None:
        """The earliest (due, key), ties by key; None when empty."""
        heap, due = self._heap, self._due
        while heap:
            at, key = heap[0]
            if due.get(key) == at:
                return at, key
            heapq.heappop(heap)
        return None
