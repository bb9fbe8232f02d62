"""The serialized subscriptions of list pages, kept per (subscription id, row version) (pure, no I/O).

A 500-row page spent most of its time decoding rows into protobuf messages. Only control writes
``subscriptions`` and every write bumps the row ``version``, so the serialized form of a
subscription *without its stats* is cached under its id and the version it was read at; a page
query reads the ids, versions and live stats (written by other services, never cached) and
takes each subscription from here when the version still matches. A stale entry is never
used: a change made by any writer (this process, another replica, a migration that bumps the
version) misses and is read again. Entries are evicted least recently used beyond ``max_entries``.

A page is assembled on the wire: each subscription is its bytes before field ``stats``, the
stats sub-message, then its bytes after ``stats``; exactly what ``SerializeToString`` of the whole
message would print (fields in number order).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Generic, TypeVar

from common.protowire import read_varint, varint
from tradingtools.control.v1 import subscription_pb2 as spb

STATS_FIELD = spb.Subscription.DESCRIPTOR.fields_by_name["stats"].number
_STATS_TAG = bytes([(STATS_FIELD << 3) | 2])
_REPEATED_SUBSCRIPTIONS_TAG = bytes([(1 << 3) | 2])  # ListSubscriptionsResponse.subscriptions = 1

Parts = tuple[bytes, bytes]
T = TypeVar("T")


def split_at_field(data: bytes, number: int) -> Parts:
    """``data`` (a serialized message, fields in number order) cut before the first field > ``number``."""
    pos = 0
    while pos < len(data):
        tag, after_tag = read_varint(data, pos)
        if tag >> 3 > number:
            break
        wire = tag & 7
        if wire == 0:
            _, pos = read_varint(data, after_tag)
        elif wire == 1:
            pos = after_tag + 8
        elif wire == 2:
            length, start = read_varint(data, after_tag)
            pos = start + length
        elif wire == 5:
            pos = after_tag + 4
        else:
            raise ValueError(f"unexpected wire type {wire} in a serialized Subscription")
    return data[:pos], data[pos:]


def parts_of(sub: spb.Subscription) -> Parts:
    """The serialized subscription without stats, cut where ``stats`` goes."""
    copy = spb.Subscription()
    copy.CopyFrom(sub)
    copy.ClearField("stats")
    return split_at_field(copy.SerializeToString(), STATS_FIELD)


def stats_field(stats: spb.Stats) -> bytes:
    """The ``stats`` field of a Subscription, tag and length included."""
    body = stats.SerializeToString()
    return _STATS_TAG + varint(len(body)) + body


def page_bytes(entries: Iterable[tuple[Parts, bytes]]) -> bytes:
    """The ``subscriptions`` of a ListSubscriptionsResponse from (parts, ``stats_field``) pairs."""
    out: list[bytes] = []
    for (head, tail), stats in entries:
        out.append(_REPEATED_SUBSCRIPTIONS_TAG)
        out.append(varint(len(head) + len(stats) + len(tail)))
        out.append(head)
        out.append(stats)
        out.append(tail)
    return b"".join(out)


class VersionedLru(Generic[T]):
    """LRU of (id → version, value); a lookup at another version misses."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[int, T]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, subscription_id: str, version: int) -> T | None:
        """The cached value of ``subscription_id`` at exactly ``version``."""
        entry = self._entries.get(subscription_id)
        if entry is None or entry[0] != version:
            self.misses += 1
            return None
        self._entries.move_to_end(subscription_id)
        self.hits += 1
        return entry[1]

    def remember(self, subscription_id: str, version: int, value: T) -> T:
        """Keep ``value`` as read at ``version`` (an older version never replaces a newer one)."""
        current = self._entries.get(subscription_id)
        if current is not None and current[0] > version:
            return value
        self._entries[subscription_id] = (version, value)
        self._entries.move_to_end(subscription_id)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return value


class SubscriptionBytesCache(VersionedLru[Parts]):
    """LRU of (id → version, serialized parts); a lookup at another version misses."""

    def put(self, sub: spb.Subscription, version: int) -> Parts:
        """Remember ``sub`` as read at ``version`` (an older version never replaces a newer one)."""
        return self.remember(sub.id, version, parts_of(sub))
