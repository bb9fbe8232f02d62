"""Leader-trade identity: a content hash of (tx, wallet, asset, side, price, size) plus the occurrence.

Why an occurrence: one transaction can hold two identical fills of the same wallet, and they must
stay two trades. Each *source* counts the identical tuples it has seen in a transaction (the k-th
identical fill from that source gets occurrence k), so:

- the same trade seen on two sources gets the same id (both call it occurrence 0) and is one trade;
- two identical fills seen by a source are occurrences 0 and 1, two trades;
- a source that missed one of two identical fills emits only occurrence 0; the other source's
  occurrence 1 is then new: the emitted count is the maximum any source saw, never the sum.

RTDS ``trades`` and ``orders_matched`` are separate sources (both carry the taker's row). A
data-api poll counts within its own response (all pages of one poll), because every poll sees the
transaction's rows again. Price and size are canonicalised with ``common.decimals.fmt`` after
``Decimal(str(x))``, so ``0.5``, ``"0.50"`` and ``0.500`` hash alike.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from common.decimals import fmt
from common.ids import hash_id
from services.ingest.model import Fill

Key = tuple[str, ...]


def content_key(fill: Fill) -> Key:
    """The fields that identify a fill within its transaction, canonicalised."""
    key = (fill.tx_hash, fill.wallet, fill.asset_id, fill.side, fmt(fill.price), fmt(fill.size))
    return key if fill.is_trade else (fill.activity_type, *key)


def event_id(key: Key, occurrence: int) -> str:
    """``lt_…`` for trades, ``la_…`` for non-trade activity rows."""
    prefix = "lt" if len(key) == 6 else "la"
    return hash_id(prefix, *key, str(occurrence))


@dataclass(frozen=True, slots=True)
class Identified:
    """A fill with its identity."""

    fill: Fill
    id: str
    occurrence: int


class OccurrenceCounter:
    """Per-source count of identical tuples per transaction, forgotten after ``ttl_s`` of silence."""

    def __init__(self, ttl_s: float = 900.0, max_keys: int = 500_000) -> None:
        self.ttl_s = ttl_s
        self.max_keys = max_keys
        self._seen: OrderedDict[Key, tuple[int, float]] = OrderedDict()

    def next(self, key: Key, now_s: float) -> int:
        """The occurrence index of this sighting of ``key`` (0 for the first)."""
        self._evict(now_s)
        count, _ = self._seen.pop(key, (0, 0.0))
        self._seen[key] = (count + 1, now_s)
        if len(self._seen) > self.max_keys:
            self._evict(now_s)
        return count

    def reset(self) -> None:
        """Forget everything (a new poll response starts counting afresh)."""
        self._seen.clear()

    def __len__(self) -> int:
        return len(self._seen)

    def _evict(self, now_s: float) -> None:
        horizon = now_s - self.ttl_s
        while self._seen:
            key, (_, seen_at) = next(iter(self._seen.items()))
            if seen_at >= horizon and len(self._seen) <= self.max_keys:
                return
            del self._seen[key]


def identify(fill: Fill, counter: OccurrenceCounter, now_s: float) -> Identified:
    """Assign the identity of one fill from the source whose counter is ``counter``."""
    key = content_key(fill)
    occurrence = counter.next(key, now_s)
    return Identified(fill, event_id(key, occurrence), occurrence)


def identify_batch(fills: list[Fill], now_s: float) -> list[Identified]:
    """Identities of one complete response (a data-api poll): counting starts at 0 for it."""
    counter = OccurrenceCounter(ttl_s=float("inf"), max_keys=len(fills) + 1)
    return [identify(f, counter, now_s) for f in fills]


class FirstSightingOnly(OccurrenceCounter):
    """Every sighting is occurrence 0, so repeated sightings share one id: for a source that can deliver one
    fill more than once (RTDS messages without topic/type arrive through both subscriptions). A second genuine
    identical fill is then left to the data-api poller, which counts per response."""

    def next(self, key: Key, now_s: float) -> int:
        """Always 0."""
        return 0
