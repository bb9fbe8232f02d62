"""Reconciling a LIVE wallet's booked positions with the venue's count (pure).

The venue's count is the truth for what can be sold. Per token:

- a booked OPEN position whose size differs from the venue's is corrected to it (to 0: CLOSED, sold outside
  the executor), keeping its average cost; its subscriptions' parts are scaled to it, but for a raise after copy BUYs
  of the token ended LOST, first booked to their subscriptions (:mod:`.lost_buys`);
- a token the venue holds that the executor has no open position in becomes an EXTERNAL position;
- a token with an order in flight, or whose position changed (a fill booked, a sale that closed it) too recently
  for the count (:func:`changed_since_count`), is left alone this round; so are tokens the venue says are
  redeemable, open positions of a market whose resolution is recorded (settlement, not reconciliation, ends those:
  the venue's count of a resolved market's token may lack shares a redemption took, not sold ones) and booked
  positions that already ended. An open position with a SELL that ended LOST and may have sold is compared all the
  same (settlement waits for it while no redemption of its market is recorded: ``common.lost_sells``).

"Too recently" is later than the count's time minus the settling grace (shares settle on-chain a few seconds
after a match). The count's time is the venue's ``asOf`` (the row's, else the answer's): a count taken before a
booking cannot hold it, however late it is read (a lagging indexer). It is never later than when the engine asked
(the grace counted back from then), which is also all there is when the venue gave no usable ``asOf``. A count
newer than every booking of a token still corrects it. The ``asOf`` is on the venue's clock, the booking time on
PostgreSQL's: the grace is also the margin for the two clocks' difference.

A SELL the venue refused for lack of shares is sent once more after its wallet's reconciliation
(:func:`resize_size`): for what it wanted, never more than the venue's count, nor, for a copy of a position that
keeps a split, its own subscription's part as the correction scaled it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal

from common.decimals import ZERO
from services.executor.domain.sell_sizing import Refusal, copy_sellable
from services.executor.domain.subscription_shares import QUANTUM

TOLERANCE_SHARES = Decimal("0.0001")  # below this a difference is rounding, not a correction

CORRECTED = "CORRECTED"
CLOSED_AT_VENUE = "CLOSED_AT_VENUE"
EXTERNAL = "EXTERNAL"


@dataclass(frozen=True, slots=True)
class Booked:
    """The executor's position of a wallet in one token (its current life)."""

    asset_id: str
    state: str  # OPEN | CLOSED | RESOLVED_WON | RESOLVED_LOST | REDEEMED
    size: Decimal
    avg_price: Decimal
    cost_usd: Decimal


@dataclass(frozen=True, slots=True)
class AtVenue:
    """One row of ``GET /v1/wallets/{walletId}/positions``."""

    asset_id: str
    condition_id: str
    outcome: str
    size: Decimal
    avg_price: Decimal
    redeemable: bool
    as_of: float | None = None  # when the venue counted this row (its own asOf, Unix seconds on the venue's clock)


@dataclass(frozen=True, slots=True)
class CountTime:
    """When the venue took its count, on its clock (Unix seconds): the answer's ``asOf`` and the rows' own (None, {}:
    unknown)."""

    answer: float | None = None
    rows: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, answer: float | None, venue: Iterable[AtVenue]) -> CountTime:
        """The count time of an answer whose own ``asOf`` is ``answer`` and whose rows are ``venue``."""
        return cls(answer, {v.asset_id: v.as_of for v in venue if v.as_of is not None})

    def at(self, asset_id: str) -> float | None:
        """The time of the count of ``asset_id``: its row's, else the answer's (a token the venue did not list is
        counted as none by the answer)."""
        return self.rows.get(asset_id, self.answer)

    def earliest(self) -> float | None:
        """The oldest count time of the answer (None: none known)."""
        times = [*self.rows.values(), *([self.answer] if self.answer is not None else [])]
        return min(times) if times else None


def changed_since_count(changed: Mapping[str, float], asked_cutoff: float, count: CountTime,
                        grace_s: float) -> set[str]:
    """The tokens whose position changed too recently for the venue's count to hold the change: ``changed`` (asset →
    when its position last changed, Unix seconds on PostgreSQL's clock) later than ``asked_cutoff`` (the grace
    before the venue was asked, on the same clock) or later than the token's count time minus the grace."""
    busy = set()
    for asset, at in changed.items():
        counted = count.at(asset)
        cutoff = asked_cutoff if counted is None else min(asked_cutoff, counted - grace_s)
        if at > cutoff:
            busy.add(asset)
    return busy


@dataclass(frozen=True, slots=True)
class Correction:
    """A change of one booked position to the venue's count."""

    asset_id: str
    kind: str  # CORRECTED | CLOSED_AT_VENUE | EXTERNAL
    size_before: Decimal
    size_after: Decimal
    avg_price: Decimal
    cost_before: Decimal
    cost_after: Decimal
    condition_id: str = ""
    outcome: str = ""


def reconcile(booked: Iterable[Booked], venue: Iterable[AtVenue], busy: Iterable[str],
              resolved: Iterable[str] = (), lost: Iterable[str] = ()) -> list[Correction]:
    """The corrections that make ``booked`` agree with ``venue``; ``busy`` tokens are skipped this round, ``resolved``
    ones (their market's resolution is recorded) as long as it is, but for the ``lost`` ones (an open position whose
    SELL ended LOST and may have sold: settlement waits for its count, redeemable or not)."""
    compared = set(lost)
    skip = set(busy) | (set(resolved) - compared)
    at_venue = {v.asset_id: v for v in venue}
    mine = {b.asset_id: b for b in booked}
    out: list[Correction] = []
    for asset, b in mine.items():
        if asset in skip or b.state != "OPEN":
            continue
        v = at_venue.get(asset)
        if v is not None and v.redeemable and asset not in compared:
            continue
        count = v.size if v is not None else ZERO
        if abs(count - b.size) <= TOLERANCE_SHARES:
            continue
        cost = (count * b.avg_price) if count > 0 else ZERO
        out.append(Correction(asset, CORRECTED if count > 0 else CLOSED_AT_VENUE, b.size, count, b.avg_price,
                              b.cost_usd, cost))
    for asset, v in at_venue.items():
        if asset in skip or v.redeemable or v.size <= TOLERANCE_SHARES:
            continue
        held = mine.get(asset)
        if held is not None and held.state != "CLOSED":
            continue  # open (compared above) or ended with its market
        out.append(Correction(asset, EXTERNAL, ZERO, v.size, v.avg_price, ZERO, v.size * v.avg_price,
                              v.condition_id, v.outcome))
    return out


def resize_size(wanted: Decimal | None, held: Decimal, parts: Mapping[str, Decimal] | None,
                sized_on: str | None) -> Decimal | Refusal:
    """The size a SELL the venue refused for lack of shares is sent again at, once its wallet is reconciled: what it
    wanted (None: it carried no size, everything it may sell), never more than the venue's count of the wallet's
    shares (``held``); for a copy (``sized_on``: its subscription, :func:`~.sell_sizing.sized_on`; None for an exit,
    a manual SELL) of a position that keeps a split (``parts``: each subscription's shares as corrected; None: none
    kept, or one that does not add up; scaled down to ``held`` when the correction was not applied, its token being
    busy), never more than its own subscription's part either
    (:func:`~.sell_sizing.copy_sellable`), or NOTHING_HELD when it has none: the rest of the wallet's shares are
    other subscriptions', whose leaders may still hold them."""
    booked = sum(parts.values(), ZERO) if parts else ZERO
    if parts and booked > held:  # not corrected yet (its token was busy): the parts as the venue's count scales them
        parts = {k: (v * held / booked).quantize(QUANTUM, rounding=ROUND_DOWN) for k, v in parts.items()}
    sellable = held if sized_on is None else copy_sellable(parts, sized_on, held, ZERO, ZERO)
    if isinstance(sellable, tuple):
        return sellable
    return sellable if wanted is None else min(wanted, sellable)


def stale_by(corrections: Sequence[Correction]) -> Decimal:
    """Shares the booked positions were off by, in total (for the metric)."""
    return sum((abs(c.size_after - c.size_before) for c in corrections), ZERO)


ROUND_SHARE = 0.8  # a round of every wallet takes this share of the interval, the rest is slack
MIN_PACE_PER_S = 1.0  # however few the wallets, a call goes out at least this often when one is due


def round_pace(wallets: int, interval_s: float, cap_per_s: float) -> float:
    """Venue calls per second of the periodic rounds: every wallet once in :data:`ROUND_SHARE` of the interval,
    spread evenly (not as a burst at the cap), between :data:`MIN_PACE_PER_S` and ``cap_per_s``; the cap when
    there are no periodic rounds (``interval_s`` <= 0)."""
    if interval_s <= 0:
        return cap_per_s
    return max(MIN_PACE_PER_S, min(cap_per_s, wallets / (ROUND_SHARE * interval_s)))
