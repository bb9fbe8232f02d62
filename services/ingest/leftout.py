"""The fresh prices ingest's tick gate left out, kept a few seconds for a band that lands after its triggers changed
(pure: time is passed in).

Guard arms or changes a trigger at once, but the band that reflects it reaches ingest only after guard wrote it
(publisher pacing, fires under way, Redis). Meanwhile the gate filters the asset's ticks with the band from before:
a price that crossed the new trigger and came back was left out, and guard never read it. A band carries when its
asset's latest triggers were armed or changed (``common.bands``, ``changes``); a change time the gate had not seen
makes the prices it left out since then due for a second look against the new band (:meth:`LeftOut.due`).

Only prices left out at or after the change are looked at again (one before it happened before the trigger
existed). A source with trailing stops looks only at prices after the asset's last tick sent: guard reads a price
sent again after every tick it read already, and a trailing stop compares a price with the mark the prices before
it set, so an older price read after a newer one could fire on a mark that rose after it.
"""

from __future__ import annotations

from decimal import Decimal

from common.bands import CHANGES_KEPT, AssetBand, outside
from services.ingest.unread import Top, prices_of

KEEP_S = 5.0  # how long a left-out price is kept (a change's band landing later than this may miss some)
MAX_KEPT = 256  # left-out prices kept per asset, newest


class LeftOut:
    """Each asset's recently left-out fresh prices and when a band change makes them due again."""

    def __init__(self, *, keep_s: float = KEEP_S, max_kept: int = MAX_KEPT) -> None:
        self.keep_ns = int(keep_s * 1e9)
        self.max_kept = max_kept
        self.late = 0  # changes that landed after prices left out since them may have been dropped
        self._kept: dict[str, list[tuple[int, Top]]] = {}  # asset -> [(received ns, top)] in received order
        self._due: dict[str, int] = {}  # asset -> left-out prices received at or after this are looked at again

    def leave(self, asset_id: str, top: Top, recv_ns: int) -> None:
        """A fresh tick the gate left out."""
        kept = self._kept.get(asset_id)
        if kept is None:
            self._kept[asset_id] = [(recv_ns, top)]
            return
        kept.append((recv_ns, top))
        if kept[0][0] < recv_ns - self.keep_ns or len(kept) > self.max_kept:
            horizon = recv_ns - self.keep_ns
            n = 0
            while n < len(kept) and kept[n][0] < horizon:
                n += 1
            del kept[:max(n, len(kept) - self.max_kept)]

    def changed(self, asset_id: str, old: AssetBand | None, new: AssetBand) -> None:
        """The asset's band went from ``old`` to ``new``: its change times not in ``old`` make the prices left out
        since the earliest of them due. When every one of the kept times is new, an older change may have been
        dropped from the list: the prices since the latest change ``old`` had are due too."""
        seen = old.changes if old is not None else ()
        fresh = [c for c in new.changes if c not in seen]
        if not fresh:
            return
        start = fresh[0]
        if seen and len(fresh) == CHANGES_KEPT:
            start = min(start, seen[-1] + 1)
        due = self._due.get(asset_id)
        self._due[asset_id] = start if due is None else min(due, start)

    def due(self, asset_id: str, now_ns: int) -> list[tuple[int, Top]]:
        """The asset's left-out prices a band change made due (received order; none when nothing is due)."""
        start = self._due.pop(asset_id, None)
        if start is None:
            return []
        kept = self._kept.get(asset_id)
        if not kept:
            return []
        if start < now_ns - self.keep_ns or (len(kept) == self.max_kept and kept[0][0] > start):
            self.late += 1
        return [item for item in kept if item[0] >= start]

    def forget(self, asset_ids: set[str]) -> None:
        """Assets no longer followed."""
        for asset_id in asset_ids:
            self._kept.pop(asset_id, None)
            self._due.pop(asset_id, None)

    def __len__(self) -> int:
        return sum(len(k) for k in self._kept.values())


def crossing(band: AssetBand, top: Top, after_last_sent: bool) -> tuple[list[Decimal | None], bool, bool]:
    """(prices, outside, rising) of a left-out ``top`` against ``band``; a source with trailing stops counts only
    when the price came ``after_last_sent`` (see the module docstring)."""
    prices = prices_of(top)
    beyond = rising = False
    for sb in band.sources:
        if sb.trail is not None and not after_last_sent:
            continue
        price = prices[sb.source]
        if price is not None:
            side = outside(sb, price)
            if side:
                beyond = True
                rising = rising or side > 0
    return prices, beyond, rising
