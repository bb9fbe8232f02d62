"""The fresh prices ingest's tick gate left out, kept a second for a band that lands after its triggers changed
(pure: time is passed in).

Guard arms or changes a trigger at once, but the band that reflects it reaches ingest only after guard wrote it
(publisher pacing, fires under way, Redis). Meanwhile the gate filters the asset's ticks with the band from before:
a price that crossed the new trigger and came back was left out, and guard never read it. A band carries when its
asset's latest triggers were armed or changed (``common.bands``, ``changes``). When the latest of them is one the
gate had not seen, the prices it left out since then are due for a second look against the new band
(:meth:`LeftOut.due`, ``TickGate.replay``); each one outside goes out again, stamped when it does and carrying when
it came (``PriceTick.observed_time_ns``). What these rules leave out is missed as before this second look; none
makes guard fire what reading every tick in time would not have:

- Only prices since the band's *latest* change: every trigger in the band existed then. A band bringing several new
  changes leaves the prices between them unchecked (counted in :attr:`LeftOut.partial`).
- Only prices after the asset's last tick sent, and none when that was a STALE tick: guard reads a price sent again
  after every tick it read already, and a trailing stop compares a price with the mark the prices before it set.
- Prices are kept :data:`KEEP_S`; a band landing later finds them gone (counted in :attr:`LeftOut.late`).
- Guard reads such a price only when it came a margin after the asset's latest trigger arm or change (one armed
  after the band was written is not in the band), after guard last read the asset's stored book (prices ingest does
  not know guard has seen), and within guard's ``tick_max_age_s`` (``services.guard.domain.tick_view
  .replay_refused``).
"""

from __future__ import annotations

from collections import deque
from decimal import Decimal

from common.bands import AssetBand, outside
from services.ingest.unread import Top, prices_of

KEEP_S = 1.0  # how long a left-out price is kept
MAX_KEPT = 256  # left-out prices kept per asset, newest


class LeftOut:
    """Each asset's recently left-out fresh prices and when a band change makes them due again."""

    def __init__(self, *, keep_s: float = KEEP_S, max_kept: int = MAX_KEPT) -> None:
        self.keep_ns = int(keep_s * 1e9)
        self.max_kept = max_kept
        self.late = 0  # changes whose band landed after prices left out since them may have been dropped
        self.partial = 0  # bands bringing several new changes: the prices before the latest were not looked at
        self._kept: dict[str, deque[tuple[int, Top]]] = {}  # asset -> (received ns, top) in received order
        self._due: dict[str, int] = {}  # asset -> left-out prices received at or after this are looked at again

    def leave(self, asset_id: str, top: Top, recv_ns: int) -> None:
        """A fresh tick the gate left out."""
        kept = self._kept.get(asset_id)
        if kept is None:
            kept = self._kept[asset_id] = deque(maxlen=self.max_kept)
        else:
            horizon = recv_ns - self.keep_ns
            while kept and kept[0][0] < horizon:
                kept.popleft()
        kept.append((recv_ns, top))

    def changed(self, asset_id: str, old: AssetBand | None, new: AssetBand) -> None:
        """The asset's band went from ``old`` to ``new``: when its latest change time is new, the prices left out
        since then are due."""
        if not new.changes:
            return
        seen = old.changes if old is not None else ()
        latest = new.changes[-1]
        if latest in seen:
            return
        if sum(1 for c in new.changes if c not in seen) > 1:
            self.partial += 1
        due = self._due.get(asset_id)
        self._due[asset_id] = latest if due is None else max(due, latest)

    def due(self, asset_id: str, now_ns: int, after_ns: int = 0) -> list[tuple[int, Top]]:
        """The asset's left-out prices a band change made due, received at or after the change, after ``after_ns``
        and within :data:`KEEP_S` of ``now_ns`` (received order; none when nothing is due)."""
        start = self._due.pop(asset_id, None)
        if start is None:
            return []
        horizon = now_ns - self.keep_ns
        kept = self._kept.get(asset_id)
        if start < horizon or (kept is not None and len(kept) == self.max_kept and kept[0][0] > start):
            self.late += 1
        if not kept:
            return []
        since = max(start, horizon, after_ns + 1)
        return [item for item in kept if item[0] >= since]

    def forget(self, asset_ids: set[str]) -> None:
        """Assets no longer followed."""
        for asset_id in asset_ids:
            self._kept.pop(asset_id, None)
            self._due.pop(asset_id, None)

    def __len__(self) -> int:
        return sum(len(k) for k in self._kept.values())


def crossing(band: AssetBand, top: Top) -> tuple[list[Decimal | None], bool, bool]:
    """(prices, outside, rising) of a left-out ``top`` against ``band``."""
    prices = prices_of(top)
    beyond = rising = False
    for sb in band.sources:
        price = prices[sb.source]
        if price is not None:
            side = outside(sb, price)
            if side:
                beyond = True
                rising = rising or side > 0
    return prices, beyond, rising
