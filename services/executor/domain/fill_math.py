"""Fill arithmetic (pure): the fill between two cumulative readings of an order, the :class:`Booking` a state
change adds, and fills applied in order to positions, their subscriptions' parts
(:mod:`~services.executor.domain.subscription_shares`) and subscription stats (the SQL that books them is
:mod:`services.executor.adapters.fill_store`).

A fill id is derived from (client order id, cumulative filled size), and that of a BUY's fee booked alone (a fills
row of size 0) from (client order id, cumulative fee), so a fill replayed after a restart conflicts and books nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from common.decimals import ONE, ZERO, fmt
from common.ids import hash_id
from common.text import storable
from services.executor.domain import subscription_shares as shares
from services.executor.domain import venue_orders as v
from services.executor.domain.order_lifecycle import OrderLife
from services.executor.domain.position_math import FillEffect, Position, apply_fill
from services.executor.domain.ticket import Ticket

PRICE_QUANTUM = Decimal("0.00000001")


@dataclass(frozen=True, slots=True)
class Booking:
    """One fill to book: a fills row, the position change and the subscription's stats."""

    fill_id: str
    size: Decimal
    price: Decimal
    notional: Decimal
    fee_shares: Decimal
    first_fill: bool  # the order's first fill (counts one copy)
    fill_time_ms: int


def fill_increment(old_size: Decimal, old_avg: Decimal, new_size: Decimal, new_avg: Decimal, *,
                   fallback: Decimal = ZERO) -> tuple[Decimal, Decimal]:
    """Shares and price (in [0, 1]) of the fill between two cumulative (size, average price) readings; the price is
    ``fallback`` when an average is no price (:func:`is_price`)."""
    inc = new_size - old_size
    if inc <= 0:
        return Decimal(0), Decimal(0)
    if not is_price(new_avg) or (old_size > 0 and not is_price(old_avg)):
        return inc, fallback
    price = (new_size * new_avg - old_size * old_avg) / inc  # off [0, 1] only by the averages' rounding
    return inc, min(max(price, ZERO), ONE).quantize(PRICE_QUANTUM)


def is_price(value: Decimal) -> bool:
    """True for a price a market can trade at: in [``LOWEST_PRICE``, 1] (an average of 0 is an answer without one)."""
    return value.is_finite() and v.LOWEST_PRICE <= value <= ONE


def fill_booking(t: Ticket, before: OrderLife, life: OrderLife, order: v.VenueOrder | None,
                 now_ms: int) -> Booking | None:
    """The fill a state change adds to ``t`` (None when nothing more filled and no more fee is due); moves ``t``'s
    booked fee and USD.

    Price and USD come from the venue's cumulative amounts when they are plausible, else from the change in
    average price, else (an average that is no price) from the order's limit, the worst price it could fill at; the
    fee from the venue's fee shares beyond those already booked (:func:`_unbooked_fee`), taken off the holding
    whether it comes with a larger fill, a smaller one or alone.
    """
    fee = _unbooked_fee(t, life, order)
    limit = t.request.limit_price if t.request is not None else ZERO
    if life.filled_size <= before.filled_size:
        if fee <= 0 or not t.buying:
            return None
        # A BUY's fee reported after its shares were booked is a fills row of its own (guard folds a subscription's
        # holding from fills; its id, of the order and its cumulative fee, books it once): size 0 (migration 0760
        # allows only these), no USD, not a copy, at the order's average price. The shares leave, the cost stays.
        t.fee_booked += fee
        return Booking(hash_id("fill", t.client_order_id, "fee", fmt(t.fee_booked)), ZERO,
                       life.avg_price if is_price(life.avg_price) else limit, ZERO, fee, False, now_ms)
    size, price = fill_increment(before.filled_size, before.avg_price, life.filled_size, life.avg_price,
                                 fallback=limit)
    notional = _exact_notional(t, order, size) or size * price
    price = min(max(notional / size, ZERO), ONE).quantize(PRICE_QUANTUM)
    t.fee_booked += fee
    t.notional_booked += notional
    return Booking(hash_id("fill", t.client_order_id, fmt(life.filled_size)), size, price, notional, fee,
                   before.filled_size == 0, now_ms)


def _unbooked_fee(t: Ticket, life: OrderLife, order: v.VenueOrder | None) -> Decimal:
    """Fee shares the venue reports for ``t`` beyond those booked. A BUY's: never more than the shares booked in all
    (``life``'s), and none while the answer reports shares not booked yet (its fee may be theirs: it is booked with
    them). A SELL's (not taken in shares) is only counted."""
    if order is None:
        return ZERO
    reported = v.fee_shares(order, buying=t.buying)
    if t.buying:
        if order.filled_size > life.filled_size:
            return ZERO
        reported = min(reported, life.filled_size)
    return max(ZERO, reported - t.fee_booked)


def _exact_notional(t: Ticket, order: v.VenueOrder | None, size: Decimal) -> Decimal | None:
    """USD of this fill from the venue's cumulative amounts, when they are present and plausible."""
    if order is None:
        return None
    cumulative = order.making_amount if t.buying else order.taking_amount
    notional = cumulative - t.notional_booked
    if notional <= 0 or notional > size:  # a price above 1 means the amounts are not what we think
        return None
    return notional


@dataclass(frozen=True, slots=True)
class Booked:
    """A fill that was booked now (not a replay), with its effect on the position and on each subscription's
    part of it."""

    ticket: Ticket
    effect: FillEffect
    charges: tuple[shares.Charge, ...] = ()  # by subscription: a SELL's parts, a BUY's own and those its fee took


@dataclass
class _Stats:
    copied: int = 0
    exposure: Decimal = ZERO
    pnl: Decimal = ZERO


@dataclass(frozen=True, slots=True)
class Opening:
    """A fill that opened a position: the new life's id, origin, subscription, venue and outcome, and the
    realized PnL the position had booked before it (the new life's base)."""

    position_id: str
    origin: str  # COPY | MANUAL
    subscription_id: str | None
    venue: str
    outcome: str
    realized_base_usd: Decimal


def _opening(t: Ticket, b: Booking, before: Position) -> Opening:
    o = t.order
    return Opening(hash_id("pos", o.follower_wallet_id, o.asset_id, b.fill_id),
                   "COPY" if t.origin == "COPY" else "MANUAL", o.subscription_id or None, t.venue,
                   storable(o.outcome), before.realized_pnl_usd)


def settle(positions: dict[tuple[str, str], Position], fills: list[tuple[Ticket, Booking]],
           splits: dict[tuple[str, str], Mapping[str, shares.Part]] | None = None
           ) -> tuple[list[Booked], dict[str, _Stats], dict[tuple[str, str], Opening]]:
    """Apply fills in order to ``positions`` and their ``splits`` (both mutated; a position without a split is
    its opening subscription's, or no subscription's); returns effects, stats deltas (exposure and PnL by the
    subscriptions charged) and, for each key a fill opened, its (last) opening."""
    splits = {} if splits is None else splits
    booked: list[Booked] = []
    stats: dict[str, _Stats] = {}
    opened: dict[tuple[str, str], Opening] = {}
    for t, b in fills:
        key = (t.order.follower_wallet_id, t.order.asset_id)
        before = positions.get(key, Position())
        split = splits.get(key)
        if split is None:
            split = shares.split_of(None, before.size, before.cost_usd, None)
        effect = apply_fill(before, buying=t.buying, size=b.size, price=b.price,
                            fee_shares=b.fee_shares, notional=b.notional)
        sub = t.order.subscription_id
        charges: tuple[shares.Charge, ...] = ()
        if t.buying:
            effect, splits[key], charges = shares.add(split, shares.key_of(sub), effect, before, b.notional)
        else:
            effect, splits[key], charges = shares.sell(split, shares.key_of(sub), effect, before, b.size, b.notional)
        positions[key] = effect.position
        if effect.opened:
            opened[key] = _opening(t, b, before)
        booked.append(Booked(t, effect, charges))
        if sub:
            s = stats.setdefault(sub, _Stats())
            s.copied += 1 if b.first_fill and t.origin == "COPY" else 0
        for c in charges:
            if c.subscription_id:
                s = stats.setdefault(c.subscription_id, _Stats())
                s.exposure += c.exposure_delta_usd
                s.pnl += c.realized_pnl_usd
    return booked, stats, opened
