"""Sizing a SELL that carries the fraction of the position to sell instead of a size (pure).

The router sends a copied SELL as the leader's sold fraction when the follower's copy BUY in that
market was still in flight: the executor sizes it on the position held once every earlier order of the
wallet on the asset has the venue's answer. The rules are the router's for a sized SELL:
- what it is sized on (:func:`copy_sellable`): the wallet's shares not being sold (held, less what its SELLs
  under way may still sell), for every SELL of a position with no split kept (NULL, almost always: one
  subscription, or none, bought it) or one that does not add up to it, whichever subscription the copy is of, and
  for every SELL that is not a copy (an exit, a manual SELL); for a copy of a position with a split kept (several
  subscriptions bought it), its own subscription's part, less what SELLs under way may still sell of it, never more
  than the wallet's shares not being sold; a subscription with no part in it holds none (the wallet's shares belong
  to other subscriptions) → NOTHING_HELD. A SELL takes its own subscription's shares first and the rest from every
  other part in proportion (``subscription_shares.take``), so of the SELLs under way only other subscriptions' copies
  are left aside, and each only up to its own part (``common.parts``): what they may sell beyond it, every SELL
  that is not a copy (an exit of a trigger, a manual SELL) and every copy of its own subscription count against the
  part in full.
  When no copy of another subscription could sell what the other parts keep (each of them below a share step, the
  sub-cent leftovers of a proportional take, or less than a share step of the wallet's shares not being sold in
  all), the copy is sized on the wallet's shares not being sold: the dust goes with it (``common.parts``);
- nothing held (less than one share step) → NOTHING_HELD;
- size = held × fraction, rounded down to the share step (everything held for a fraction of 1);
- a remainder that is positive but below the market minimum is sold too (it could never be sold);
- a size below the market minimum → SELL_BELOW_MARKET_MINIMUM (the position is kept);
- then the operator ceiling (``common.ceiling.cap_sell``) at :func:`ceiling_price`, as the router does.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_DOWN, Decimal

from common.decimals import MIN_HELD_SHARES, ONE, ZERO, fmt
from common.parts import part_sellable, with_leftovers

STEP = Decimal("0.01")

Refusal = tuple[str, str]  # (UPPER_SNAKE reason, detail)


def sized_on(origin: str, subscription_id: str) -> str | None:
    """The subscription whose part of the position a SELL is sized on: a copy's own; None (the wallet's whole
    position) for any other SELL (an exit, a manual one) or a copy without a subscription."""
    return subscription_id if origin == "COPY" and subscription_id else None


def copy_sellable(parts: Mapping[str, Decimal] | None, subscription_id: str, held: Decimal, selling: Decimal,
                  others_selling: Decimal) -> Decimal | Refusal:
    """Shares a copy of ``subscription_id`` may sell of the wallet's ``held`` shares, of which the SELLs under way
    may still sell ``selling`` (``others_selling`` of it other subscriptions' copies take of their own parts:
    ``common.parts``; not every SELL of other subscriptions, whose excess over their part comes off every part):
    with ``parts`` None (no split kept, or one that does not add up) the wallet's not being sold; else its own
    part's (``common.parts``), the wallet's not being sold when the other parts keep only dust no copy of theirs
    could sell (each below a share step, or less than one in all), or NOTHING_HELD when it has none or all of it is
    being sold."""
    wallet = held - selling
    if parts is None:
        return wallet
    part = parts.get(subscription_id, ZERO)
    if part < MIN_HELD_SHARES:
        return ("NOTHING_HELD", f"subscription {subscription_id} holds none of the follower's {fmt(held)} shares: "
                                "they belong to other subscriptions of the wallet")
    sellable = with_leftovers(part_sellable(part, held, selling, others_selling), wallet, parts, subscription_id)
    if sellable < MIN_HELD_SHARES:
        return ("NOTHING_HELD", f"subscription {subscription_id} holds {fmt(part)} of the follower's {fmt(held)} "
                                f"shares ({fmt(selling)} already being sold)")
    return sellable


def fraction_size(held: Decimal, fraction: Decimal, min_order_size: Decimal) -> Decimal | Refusal:
    """Shares to sell of ``held`` for ``fraction`` in (0, 1], or why nothing is sold."""
    if held < MIN_HELD_SHARES:
        return "NOTHING_HELD", f"follower holds {fmt(held)} shares"
    everything = held.quantize(STEP, rounding=ROUND_DOWN)
    size = everything if fraction >= ONE else (held * fraction).quantize(STEP, rounding=ROUND_DOWN)
    if ZERO < held - size < min_order_size:
        size = everything
    if size <= ZERO or size < min_order_size:
        return ("SELL_BELOW_MARKET_MINIMUM",
                f"fraction {fmt(fraction.quantize(Decimal('0.0001')))} of {fmt(held)} shares is {fmt(size)} "
                f"< market minimum {fmt(min_order_size)}")
    return size


def ceiling_price(reference_price: str, best_bid: Decimal | None) -> Decimal:
    """The price a SELL sized here is held to the operator ceiling at: the higher of its reference price and the
    best bid (its limit, derived from one of them less the slippage, is above neither); 0 when neither is known.
    The intake holds every exit SELL at the same price (:func:`sell_worth_price`)."""
    try:
        reference = Decimal(reference_price) if reference_price else ZERO
    except ArithmeticError:
        reference = ZERO
    return sell_worth_price(reference, best_bid, ZERO)


def sell_worth_price(reference: Decimal | None, best_bid: Decimal | None, limit: Decimal) -> Decimal:
    """What a SELL's shares are worth for the operator ceiling: the highest of its reference price, the best bid
    and its limit (a limit derived from the others is below both; a given one may rest above them)."""
    if reference is None or not reference.is_finite():
        reference = ZERO
    return max(reference, best_bid or ZERO, limit)
