"""SELL sizing: mirror the fraction of its position the leader sold on the follower's real position.

Rules:
- The leader's position before the sell comes from the router's own record of the leader's net
  shares per asset (every leader trade it routes adds BUYs and subtracts SELLs, floored at 0).
  When that record is zero, or the leader sold at least what we saw it hold, the leader is
  treated as closing: fraction = 1 (sell everything the follower holds).
- No record at all means the router never saw this leader buy the asset, so the follower's
  shares were not bought by copying this leader (another subscription of the wallet, or its
  own trading): LEADER_POSITION_UNKNOWN, nothing is sold. (Treating it as a close sold a
  whole position on a one-share sell of a leader who never bought it for this follower.)
- While a copy BUY of the wallet in this market is still in flight (the leader bought and sold before
  the copy was answered), the SELL goes out as the leader's fraction (:class:`AfterBuy`): the executor
  sizes it by the rule below once every earlier order of the wallet on the asset has the venue's answer.
  Sized now, it missed the BUY's shares (skipped as NOTHING_HELD when nothing else was held), and
  the follower kept what the leader had sold.
- So does a SELL while such a fraction SELL of the wallet's asset is in flight and not sized yet (the BUY answered
  and released, the executor still waiting for its turn or sizing it: its claim reserves no shares until then).
  Sized now, on every share held, it sold the shares that SELL will sell again; sent as a fraction, the executor
  sizes it once that SELL has ended (in its turn: every earlier order of the wallet on the asset), on what it left.
- Otherwise the follower's sellable size (:mod:`~services.router.domain.holdings`), only ever of what the
  subscription's copies bought and still hold:
  - a position bought by hand (MANUAL) with no split kept is no subscription's (read as one part of none):
    NOTHING_HELD, the follower's own shares are never sold by a leader's exit;
  - no split of the position a copy opened kept (NULL, almost always: one subscription bought it): the wallet's
    shares held (positions table) − shares its SELLs in flight may still sell (the router's copies:
    :func:`unfilled_in_flight`, reserved less what their fills already took out of the position; guard's exits,
    manual SELLs and copies the executor sent again re-sized, which reserve nothing: their size less their fills,
    from the executor's open orders), for every subscription of the wallet;
  - a split kept (several subscriptions bought it, or a copy and the follower by hand: the shares it added are the
    part of no subscription): the subscription's own part − what the wallet's SELLs in
    flight may still sell of it (other subscriptions' SELL copies aside up to their own parts: beyond them they take
    from every part), never more than the wallet's shares not being sold, and all of these when no copy of another
    subscription could sell what the other parts keep (each below a share step, or less than one in all: sub-cent
    leftovers nobody else could sell go with it); a
    subscription with no part in it holds none (its leader's exit never sells the shares another leader's copies
    bought and still hold).
  Nothing sellable → NOTHING_HELD (its detail gives the shares already being sold, exits included).
- size = sellable × fraction, rounded down to 0.01 share; never more than held.
- If what would remain is positive but below the market's minimum order size, sell everything
  instead (a remainder that can never be sold is worse than a slightly larger exit).
- If the size is below the market's minimum order size → SELL_BELOW_MARKET_MINIMUM (the follower
  keeps the position and follows the leader's next exit).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from common.decimals import fmt
from services.router.domain import holdings
from services.router.domain.market_rules import floor_shares
from services.router.domain.model import ONE, ZERO, FollowerState, Reason

Rejection = tuple[Reason, str]


@dataclass(frozen=True, slots=True)
class AfterBuy:
    """Sell ``fraction`` of the position once the wallet's copy BUY in flight in the market is answered (and the
    SELLs sized later before it have ended)."""

    fraction: Decimal


def unfilled_in_flight(reserved: Decimal, orders: Iterable[tuple[Decimal, Decimal]]) -> Decimal:
    """Shares the wallet's in-flight SELLs of an asset may still sell.

    ``reserved`` is what all of them reserve (Redis, one read); ``orders`` gives, for the ones known by id in
    that same read, each one's reservation and the shares its fills already booked (PostgreSQL, read after).
    The executor commits a fill (the position falls) before it releases the order's reservation, so in
    between those shares are both gone from the position and still reserved: counted twice, a leader's exit
    found nothing to sell. Each order's booked shares are taken off up to its own reservation (a fill never
    frees more than the order held back); orders not known by id keep their whole reservation (never
    fewer shares held back than are truly unsold). Never below zero."""
    booked = sum((min(own, filled) for own, filled in orders if own > ZERO and filled > ZERO), ZERO)
    return max(ZERO, reserved - booked)


def leader_fraction(leader_before: Decimal | None, sold: Decimal) -> Decimal:
    """Fraction of its position the leader sold (1 when closing or unknown)."""
    if leader_before is None or leader_before <= ZERO or sold >= leader_before:
        return ONE
    return sold / leader_before


def size_sell(state: FollowerState, sold: Decimal, leader_before: Decimal | None,
              min_order_size: Decimal, subscription_id: str | None = None) -> Decimal | AfterBuy | Rejection:
    """Shares the follower sells for its subscription ``subscription_id`` (None: on the wallet's position), the
    fraction to sell once its BUY in flight is answered and its SELLs not sized yet have ended, or why not."""
    if (state.reserved_market_usd > ZERO or state.unsized_sells) and leader_before is not None:
        return AfterBuy(leader_fraction(leader_before, sold))
    own = holdings.part_of(state, subscription_id)  # None: no split kept, the wallet's shares (almost always)
    sellable = holdings.sellable(state, own, subscription_id)
    if sellable <= ZERO:
        if own is not None and own <= ZERO:
            return Reason.NOTHING_HELD, holdings.none_held(state)
        in_flight = f" ({fmt(state.reserved_sell_size)} already being sold)" if state.reserved_sell_size else ""
        held = f"follower holds {fmt(state.held_size)} shares" if own is None else \
            f"subscription holds {fmt(own)} of the follower's {fmt(state.held_size)} shares"
        return Reason.NOTHING_HELD, held + in_flight
    if leader_before is None:
        return (Reason.LEADER_POSITION_UNKNOWN,
                f"the leader sold {fmt(sold)} shares of an asset it was never seen buying: the follower's "
                f"{fmt(sellable)} shares were not bought by copying this leader")
    fraction = leader_fraction(leader_before, sold)
    everything = floor_shares(sellable)
    size = everything if fraction == ONE else floor_shares(sellable * fraction)
    remainder = sellable - size
    if ZERO < remainder < min_order_size:
        size = everything
    if size <= ZERO or size < min_order_size:
        return (Reason.SELL_BELOW_MARKET_MINIMUM,
                f"leader sold {fmt(sold)} of {fmt(leader_before)} shares "
                f"(fraction {fmt(fraction.quantize(Decimal('0.0001')))}); "
                f"follower's share {fmt(size)} of {fmt(sellable)} < market minimum {fmt(min_order_size)}")
    return size
