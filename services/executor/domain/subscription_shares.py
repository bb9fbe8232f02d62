"""Which subscriptions a position's shares and cost belong to (pure).

One follower wallet can follow several leaders that buy the same token: its one position then holds shares bought
by several subscriptions. The position's *split* names each subscription's part (shares, cost); the parts always
add up to the position. A BUY adds to its own subscription's part; a SELL takes the shares of its own subscription
first (up to what it holds) and the rest from the others in proportion to their shares, each part realizing its
proceeds less its own average cost; a settlement pays each part for its shares; a reconciliation scales the parts
to the venue's count. Shares bought by no subscription (manual, external) are the part of :data:`NO_SUBSCRIPTION`.

A position held by one part is booked exactly as :func:`~services.executor.domain.position_math.apply_fill` books
it; a shared one is the sum of its parts.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import NamedTuple

from common.decimals import ZERO
from common.parts import NO_SUBSCRIPTION as NO_SUBSCRIPTION  # the executor reads it from here too
from services.executor.domain.position_math import MONEY_QUANTUM, FillEffect, Position

QUANTUM = Decimal("0.00000001")  # of the shares and USD a proportional split hands out (the last part is exact)


class Part(NamedTuple):  # a tuple: built for every fill booked, at a fraction of a frozen dataclass's cost
    """One subscription's shares of a position and what it paid for them."""

    shares: Decimal = ZERO
    cost_usd: Decimal = ZERO


Split = Mapping[str, Part]  # subscription id (NO_SUBSCRIPTION: none) → its part; empty parts are left out


class Charge(NamedTuple):
    """What one booking did to one subscription's part."""

    subscription_id: str
    shares: Decimal  # taken (SELL, settlement), or the change (reconciliation)
    proceeds_usd: Decimal  # USD received for the shares taken
    exposure_delta_usd: Decimal  # change of the part's cost
    realized_pnl_usd: Decimal


def key_of(subscription_id: str | None) -> str:
    """The split's key of a subscription id (None and "" alike: no subscription)."""
    return subscription_id or NO_SUBSCRIPTION


def kept_split(kept: Split | None, size: Decimal, cost_usd: Decimal) -> dict[str, Part] | None:
    """The split kept of a position when it adds up to the position's ``size`` and ``cost_usd``; None when none
    is kept or the one kept does not add up (an executor before splits booked the position since)."""
    if kept and sum((p.shares for p in kept.values()), ZERO) == size and sum(
            (p.cost_usd for p in kept.values()), ZERO) == cost_usd:
        return dict(kept)
    return None


def split_of(kept: Split | None, size: Decimal, cost_usd: Decimal, opening: str | None) -> dict[str, Part]:
    """The split of a position as kept, or, when none is kept (the position is its opening subscription's alone,
    or was booked before splits were kept) or the one kept does not add up to the position (an executor before
    splits booked it since), the whole position as the part of its opening subscription."""
    split = kept_split(kept, size, cost_usd)
    if split is not None:
        return split
    if size == 0 and cost_usd == 0:
        return {}
    return {key_of(opening): Part(size, cost_usd)}


def _put(split: dict[str, Part], key: str, shares: Decimal, cost: Decimal) -> None:
    if shares or cost:
        split[key] = Part(shares, cost)
    else:
        split.pop(key, None)


def allocate(total: Decimal, weights: Mapping[str, Decimal], *, capped: bool = False) -> dict[str, Decimal]:
    """``total`` handed out in proportion to ``weights`` (in key order), each share to :data:`QUANTUM` but the
    last, which takes what is left: the shares sum to ``total`` exactly. ``capped``: no share exceeds its weight
    (``total`` must not exceed their sum)."""
    out: dict[str, Decimal] = {}
    left, left_weight = total, sum(weights.values(), ZERO)
    for key in sorted(weights):
        w = weights[key]
        if w == left_weight:
            share = left
        else:
            share = min(left, (left * w / left_weight).quantize(QUANTUM))
            if capped:  # what the weights after this one can still take bounds it from below
                share = min(w, max(share, w - (left_weight - left)))
        out[key] = share
        left -= share
        left_weight -= w
    return out


def take(split: Split, key: str, sold: Decimal) -> dict[str, Decimal]:
    """The shares ``sold`` taken from each part: ``key``'s own first, the rest in proportion to the others'."""
    own = min(sold, split[key].shares) if key in split else ZERO
    others = {k: p.shares for k, p in split.items() if k != key and p.shares > 0}
    taken = allocate(sold - own, others, capped=True) if others else {}
    if own > 0:
        taken[key] = own
    return {k: v for k, v in taken.items() if v > 0}


def add(split: Split, key: str, effect: FillEffect, before: Position,
        usd: Decimal) -> tuple[FillEffect, dict[str, Part], tuple[Charge, ...]]:
    """A BUY of ``usd`` booked as ``effect`` (:func:`apply_fill`) added to ``key``'s part: its shares (net of the
    fee) and its cost. Fewer than none (a fee beyond its fill, or reported alone) come off ``key``'s part, then,
    past what that part holds (its shares sold since), off the others as a SELL's do (:func:`take`); a part left
    without shares by it (every part, when the position closes) frees its cost as a realized loss, as a SELL's
    does, and the effect is then the parts' sum. The charges: ``key``'s, and each part the fee took from."""
    change = effect.position.size - before.size
    own = split.get(key, Part())
    if own.shares + change > 0:  # almost every BUY: its own part holds the change
        after = dict(split)
        _put(after, key, own.shares + change, own.cost_usd + usd)
        return effect, after, (Charge(key, max(ZERO, -change), ZERO, usd, ZERO),)
    taken = take(split, key, -change) if change < 0 else {}
    closing = effect.position.size == 0
    after, charges = {}, []
    for k, part in (split if key in split else {**split, key: own}).items():
        n = taken.get(k, ZERO)
        left, cost = part.shares - n, part.cost_usd + (usd if k == key else ZERO)
        if left == 0 and (k == key or n > 0 or closing):
            charges.append(Charge(k, n, ZERO, -part.cost_usd, -cost))
        elif n > 0:
            after[k] = Part(left, cost)
            charges.append(Charge(k, n, ZERO, ZERO, ZERO))
        else:
            after[k] = part
    return _summed(effect, before, after, charges)


def sell(split: Split, key: str, effect: FillEffect, before: Position, size: Decimal,
         notional: Decimal) -> tuple[FillEffect, dict[str, Part], tuple[Charge, ...]]:
    """A SELL of ``size`` shares for ``notional`` USD booked as ``effect`` (:func:`apply_fill`), taken from the
    parts; the effect is the parts' sum when more than one part holds the position."""
    sold = before.size - effect.position.size
    if sold <= 0:  # nothing held: a cost left without shares is freed, as apply_fill frees it
        if effect.exposure_delta_usd == 0:
            return effect, dict(split), ()
        return effect, {}, tuple(Charge(k, ZERO, ZERO, -p.cost_usd, ZERO) for k, p in sorted(split.items()))
    proceeds = notional * sold / size
    if len(split) == 1:
        only = next(iter(split))
        after: dict[str, Part] = {}
        _put(after, only, effect.position.size, effect.position.cost_usd)
        return effect, after, (Charge(only, sold, proceeds, effect.exposure_delta_usd, effect.realized_pnl_usd),)
    taken = take(split, key, sold)
    paid = allocate(proceeds, taken)
    closing = effect.position.size == 0
    after, charges = {}, []
    for k, part in split.items():
        n = taken.get(k, ZERO)
        left = part.shares - n
        if left == 0 and (n > 0 or closing):
            basis = part.cost_usd
        elif n > 0:
            basis = min(part.cost_usd, n * (part.cost_usd / part.shares).quantize(MONEY_QUANTUM))
        else:
            after[k] = part
            continue
        _put(after, k, left, part.cost_usd - basis)
        charges.append(Charge(k, n, paid.get(k, ZERO), -basis, paid.get(k, ZERO) - basis))
    return _summed(effect, before, after, charges)


def _summed(effect: FillEffect, before: Position, after: dict[str, Part],
            charges: list[Charge]) -> tuple[FillEffect, dict[str, Part], tuple[Charge, ...]]:
    """``effect`` with the position the parts ``after`` add up to (its size as booked), and what ``charges``
    realized."""
    cost = sum((p.cost_usd for p in after.values()), ZERO)
    realized = sum((c.realized_pnl_usd for c in charges), ZERO)
    size = effect.position.size
    avg = (cost / size).quantize(MONEY_QUANTUM) if size > 0 else ZERO
    position = Position(size, avg, cost, before.realized_pnl_usd + realized)
    return (FillEffect(position, realized, cost - before.cost_usd, effect.opened, effect.closed, effect.oversold),
            after, tuple(charges))


def resolve(split: Split, payout_per_share: Decimal) -> tuple[Charge, ...]:
    """A resolution's end of every part: its shares paid at ``payout_per_share``, its cost freed."""
    charges = []
    for k, p in sorted(split.items()):
        payout = p.shares * payout_per_share
        charges.append(Charge(k, p.shares, payout, -p.cost_usd, payout - p.cost_usd))
    return tuple(charges)


def rescale(split: Split, size: Decimal, cost_usd: Decimal) -> tuple[dict[str, Part], tuple[Charge, ...]]:
    """The parts made to add up to a corrected ``size`` and ``cost_usd`` (reconciliation), each in proportion to
    its shares and cost (to its shares when no part has a cost)."""
    if not split:
        return {}, ()
    shares = allocate(size, {k: p.shares for k, p in split.items()})
    costs = {k: p.cost_usd for k, p in split.items()}
    costs = allocate(cost_usd, costs if any(costs.values()) else {k: p.shares for k, p in split.items()})
    after: dict[str, Part] = {}
    charges = []
    for k, part in sorted(split.items()):
        _put(after, k, shares[k], costs[k])
        charges.append(Charge(k, shares[k] - part.shares, ZERO, costs[k] - part.cost_usd, ZERO))
    return after, tuple(charges)


def encode(split: Split) -> dict[str, list[str]]:
    """The split as stored (``positions.subscription_shares``): subscription → [shares, cost] as strings."""
    return {k: [str(p.shares), str(p.cost_usd)] for k, p in split.items()}


def stored(split: Split, opening: str | None) -> dict[str, list[str]] | None:
    """The split as a booking stores it: None (what :func:`split_of` reads as the opening subscription's whole
    position) when the position is ``opening``'s alone or empty, as almost every position is."""
    if not split or (len(split) == 1 and key_of(opening) in split):
        return None
    return encode(split)


def decode(stored: Mapping[str, list[object]] | None) -> dict[str, Part]:
    """A stored split (None: none stored)."""
    if not stored:
        return {}
    return {k: Part(Decimal(str(v[0])), Decimal(str(v[1]))) for k, v in stored.items()}
