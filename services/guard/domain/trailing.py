"""Trailing stops of one asset and price source, in O(log n + fired) per tick (pure, no I/O).

A trailing stop waits until the price reaches its activation price, then tracks a high-water
mark (the highest price seen since activation, never falling) and fires when the price is at or
below ``mark x (1 - trail_pct/100)``.

Active stops are kept in *groups* sharing one mark: a rising price lifts every mark below it to
the same value, so the groups below the price merge into one (smaller groups move into the
largest, so each stop moves O(log n) times in its life). Each group keeps its members ordered by
trail, so its highest stop level is its first member's; groups are indexed by mark (for lifting)
and by that highest level (for firing).
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

from sortedcontainers import SortedList

from common.decimals import ZERO

_HUNDRED = Decimal(100)


class _Group:
    __slots__ = ("gid", "mark", "members")

    def __init__(self, gid: int, mark: Decimal) -> None:
        self.gid = gid
        self.mark = mark
        self.members: SortedList = SortedList()  # (trail fraction, trigger id)

    def threshold(self) -> Decimal:
        """The highest stop level in the group (its tightest trail)."""
        return self.level(self.members[0][0])

    def level(self, trail: Decimal) -> Decimal:
        """Stop level of a member with this trail fraction."""
        return self.mark * (1 - trail)


class TrailBook:
    """Pending and active trailing stops watching one price series."""

    def __init__(self) -> None:
        self._pending: SortedList = SortedList()  # (activation price, id)
        self._activation: dict[str, Decimal] = {}
        self._trail: dict[str, Decimal] = {}  # id -> trail fraction (pct / 100)
        self._trail_counts: dict[Decimal, int] = {}  # trail fraction -> stops with it (few distinct values)
        self._groups: dict[int, _Group] = {}
        self._where: dict[str, int] = {}  # active id -> group id
        self._by_mark: SortedList = SortedList()  # (mark, gid); marks are unique
        self._by_threshold: SortedList = SortedList()  # (threshold, gid)
        self._gid_of_mark: dict[Decimal, int] = {}
        self._next_gid = 0
        self._dirty: set[int] = set()

    def __len__(self) -> int:
        return len(self._trail)

    def __contains__(self, trigger_id: object) -> bool:
        return trigger_id in self._trail

    def add(self, trigger_id: str, trail_pct: Decimal, activation_price: Decimal,
            high_water_mark: Decimal = ZERO, *, unsaved: bool = False) -> None:
        """Watch a stop; an existing mark (> 0) makes it active at once with that mark (``unsaved``: a mark
        not stored yet, reported by :meth:`take_dirty_marks`)."""
        if trigger_id in self._trail:
            raise ValueError(f"trailing stop {trigger_id} already present")
        if not ZERO < trail_pct < _HUNDRED:
            raise ValueError(f"trail_pct must be in (0, 100), got {trail_pct}")
        trail = self._trail[trigger_id] = trail_pct / _HUNDRED
        self._trail_counts[trail] = self._trail_counts.get(trail, 0) + 1
        if high_water_mark > 0:
            self._join(high_water_mark, [trigger_id], moved=unsaved)
        else:
            self._activation[trigger_id] = activation_price
            self._pending.add((activation_price, trigger_id))

    def remove(self, trigger_id: str) -> bool:
        """Stop watching; False when unknown."""
        trail = self._trail.pop(trigger_id, None)
        if trail is None:
            return False
        self._drop_trail(trail)
        activation = self._activation.pop(trigger_id, None)
        if activation is not None:
            self._pending.remove((activation, trigger_id))
            return True
        group = self._groups[self._where.pop(trigger_id)]
        self._unindex(group)
        group.members.remove((trail, trigger_id))
        self._index(group)
        return True

    def absorb(self, other: TrailBook) -> None:
        """Take every stop of ``other`` (left empty) with its activation price or mark; a mark ``other`` has not
        reported yet (:meth:`take_dirty_marks`) is reported here."""
        for tid in other._trail:
            if tid in self._trail:
                raise ValueError(f"trailing stop {tid} already present")
        for tid, trail in other._trail.items():
            self._trail[tid] = trail
            self._trail_counts[trail] = self._trail_counts.get(trail, 0) + 1
        self._activation.update(other._activation)
        self._pending.update(other._pending)
        for gid, group in other._groups.items():
            self._join(group.mark, [tid for _t, tid in group.members], moved=gid in other._dirty)
        TrailBook.__init__(other)

    @property
    def dirty(self) -> bool:
        """True when marks changed since :meth:`take_dirty_marks` last ran."""
        return bool(self._dirty)

    def mark_of(self, trigger_id: str) -> Decimal:
        """The stop's high-water mark (0 while not yet active)."""
        gid = self._where.get(trigger_id)
        return self._groups[gid].mark if gid is not None else ZERO

    def tick(self, price: Decimal) -> list[tuple[str, Decimal]]:
        """Apply a fresh price: activate, lift marks, and return the stops that fire, with their marks."""
        # Each step first looks at one end of its index (cheap): most ticks change nothing.
        if self._pending and self._pending[0][0] <= price:
            self._activate(price)
        if self._by_mark and self._by_mark[0][0] < price:
            self._lift(price)
        if self._by_threshold and self._by_threshold[-1][0] >= price:
            return self._fire(price)
        return []

    def fire(self, price: Decimal) -> list[tuple[str, Decimal]]:
        """Apply a fresh price that may lift nothing (received before a stop here was armed): return the stops that
        fire with today's marks."""
        if self._by_threshold and self._by_threshold[-1][0] >= price:
            return self._fire(price)
        return []

    def rise(self, price: Decimal) -> bool:
        """Apply a price that may not fire (a fresh price read late): activate and lift marks only. True when a
        stop was activated or a mark lifted."""
        moved = False
        if self._pending and self._pending[0][0] <= price:
            self._activate(price)
            moved = True
        if self._by_mark and self._by_mark[0][0] < price:
            self._lift(price)
            moved = True
        return moved

    def band(self) -> tuple[Decimal | None, Decimal | None, bool]:
        """(lo, hi, hi_inclusive): a price above lo and below hi (or equal to it when ``hi_inclusive``) fires,
        activates and lifts nothing (None = unbounded). A price equal to the lowest mark lifts nothing; one
        equal to the lowest activation price activates."""
        lo = self._by_threshold[-1][0] if self._by_threshold else None
        hi = self._by_mark[0][0] if self._by_mark else None
        inclusive = hi is not None
        if self._pending and (hi is None or self._pending[0][0] <= hi):
            hi, inclusive = self._pending[0][0], False
        return lo, hi, inclusive

    def min_trail(self) -> Decimal | None:
        """The smallest trail fraction of the stops (None when empty): after a fresh price p above :meth:`band`,
        every stop level is at most the higher of ``lo`` and ``p x (1 - min_trail)``."""
        return min(self._trail_counts) if self._trail_counts else None

    def would_fire(self, price: Decimal) -> list[str]:
        """Stops at or below their level at ``price`` with today's marks; changes nothing."""
        out: list[str] = []
        if not self._by_threshold or self._by_threshold[-1][0] < price:
            return out
        start = self._by_threshold.bisect_left((price,))
        for _thr, gid in self._by_threshold.islice(start):
            group = self._groups[gid]
            for trail, trigger_id in group.members:
                if group.level(trail) < price:
                    break
                out.append(trigger_id)
        return out

    def take_dirty_marks(self) -> Iterator[tuple[Decimal, list[str]]]:
        """Marks changed since the last call, each with the stops now carrying it."""
        dirty, self._dirty = self._dirty, set()
        for gid in dirty:
            group = self._groups.get(gid)
            if group is not None and group.members:
                yield group.mark, [tid for _t, tid in group.members]

    # internals

    def _drop_trail(self, trail: Decimal) -> None:
        left = self._trail_counts[trail] - 1
        if left:
            self._trail_counts[trail] = left
        else:
            del self._trail_counts[trail]

    def _activate(self, price: Decimal) -> None:
        end = self._pending.bisect_right((price, "\U0010ffff"))
        if not end:
            return
        ready = [tid for _a, tid in self._pending.islice(0, end)]
        del self._pending[:end]
        for tid in ready:
            del self._activation[tid]
        self._join(price, ready)

    def _lift(self, price: Decimal) -> None:
        end = self._by_mark.bisect_left((price,))
        if not end:
            return
        lifted = [self._groups[gid] for _m, gid in self._by_mark.islice(0, end)]
        at_price = self._gid_of_mark.get(price)
        if at_price is not None:
            lifted.append(self._groups[at_price])
        base = max(lifted, key=lambda g: len(g.members))
        for group in lifted:
            self._unindex(group)
        for group in lifted:
            if group is base:
                continue
            for trail, tid in group.members:
                base.members.add((trail, tid))
                self._where[tid] = base.gid
            del self._groups[group.gid]
        base.mark = price
        self._index(base, moved=True)

    def _fire(self, price: Decimal) -> list[tuple[str, Decimal]]:
        start = self._by_threshold.bisect_left((price,))
        if start == len(self._by_threshold):
            return []
        fired: list[tuple[str, Decimal]] = []
        for _thr, gid in list(self._by_threshold.islice(start)):
            group = self._groups[gid]
            self._unindex(group)
            while group.members and group.level(group.members[0][0]) >= price:
                trail, tid = group.members.pop(0)
                del self._trail[tid]
                self._drop_trail(trail)
                del self._where[tid]
                fired.append((tid, group.mark))
            self._index(group)
        return fired

    def _join(self, mark: Decimal, trigger_ids: list[str], *, moved: bool = True) -> None:
        gid = self._gid_of_mark.get(mark)
        if gid is None:
            gid = self._next_gid
            self._next_gid += 1
            group = _Group(gid, mark)
            self._groups[gid] = group
        else:
            group = self._groups[gid]
            self._unindex(group)
        for tid in trigger_ids:
            group.members.add((self._trail[tid], tid))
            self._where[tid] = gid
        self._index(group, moved=moved)

    def _unindex(self, group: _Group) -> None:
        if group.members:
            self._by_mark.remove((group.mark, group.gid))
            self._by_threshold.remove((group.threshold(), group.gid))
            del self._gid_of_mark[group.mark]

    def _index(self, group: _Group, *, moved: bool = False) -> None:
        if not group.members:
            self._groups.pop(group.gid, None)
            self._dirty.discard(group.gid)
            return
        self._by_mark.add((group.mark, group.gid))
        self._by_threshold.add((group.threshold(), group.gid))
        self._gid_of_mark[group.mark] = group.gid
        if moved:
            self._dirty.add(group.gid)
