"""A count raised after copy BUYs of the token ended LOST, booked to their subscriptions (pure; ``common.lost_buys``).

A LOST copy BUY the venue filled bought shares whose fill is never booked: the next count of the position is raised
by them. The raise goes first to the LOST copy BUYs the position may still owe it to, in the order they ended, each
at most its size (:func:`most_bought`, :func:`claims`); what is left of it is scaled over the parts as any correction's
(:func:`credited`). A position bought by hand thus keeps its shares no subscription's, and the copy's subscription
holds what its copy bought: its leader's close sells it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

from common.decimals import ONE, ZERO
from common.takerfee import TakerFee
from services.executor.domain.pricing import BPS
from services.executor.domain.subscription_shares import QUANTUM, Charge, Part, Split, rescale


@dataclass(frozen=True, slots=True)
class LostBuy:
    """A copy BUY of the position's token that ended LOST and may have bought what a count shows."""

    client_order_id: str
    subscription_id: str
    shares: Decimal  # the most it may have bought unbooked


def most_bought(size: Decimal | None, filled_size: Decimal, usd: Decimal | None, filled_usd: Decimal,
                limit: Decimal | None, slippage_bps: int, fee: TakerFee | None = None) -> Decimal:
    """The most shares a LOST BUY may have bought unbooked: a sized one's (GTC) unfilled ``size``; a market BUY's
    unfilled ``usd`` at the best price its ``limit`` may have been slipped up from (``slippage_bps``, the order's
    tolerance: 0 when the order named its limit), the cheapest it could fill at, less the taker ``fee`` the venue keeps
    in shares (what reaches the wallet falls as the price rises: the cheapest price gives the most). A count raised by
    more is not all its."""
    if size is not None:
        return max(ZERO, size - filled_size)
    if usd is None or limit is None or limit <= 0:
        return ZERO
    best = limit / (ONE + Decimal(max(0, slippage_bps)) / BPS)
    gross = (max(ZERO, usd - filled_usd) / best).quantize(QUANTUM, rounding=ROUND_DOWN)
    if fee is None or gross <= 0:
        return gross
    return max(ZERO, (gross - fee.shares(gross, min(best, ONE))).quantize(QUANTUM, rounding=ROUND_DOWN))


def claims(raised: Decimal, lost: Iterable[LostBuy]) -> list[tuple[LostBuy, Decimal]]:
    """The shares of a count ``raised`` (above the booked size) each LOST BUY of ``lost`` (in the order they ended)
    is credited: in turn, each at most its size, none past the raise. Those credited none are left out: a later
    count may still show what they bought (their fill not settled when this one was taken)."""
    out = []
    left = max(ZERO, raised)
    for b in lost:
        n = min(left, max(ZERO, b.shares))
        if n > 0:
            out.append((b, n))
            left -= n
    return out


def credited(split: Split, size: Decimal, cost_usd: Decimal, avg_price: Decimal,
             claimed: Iterable[tuple[LostBuy, Decimal]]) -> tuple[dict[str, Part], tuple[Charge, ...]]:
    """The parts of a position corrected to ``size`` and ``cost_usd`` (its average cost ``avg_price`` kept) when the
    ``claimed`` shares of the raise are its LOST BUYs' subscriptions': each such part gains them at the average cost,
    and the rest of the position is scaled over the parts as before (``rescale``). The charges: each part's change."""
    gained: dict[str, Decimal] = {}
    for b, n in claimed:
        if n > 0:
            gained[b.subscription_id] = gained.get(b.subscription_id, ZERO) + n
    if not split or not gained:  # an empty split stays as a correction leaves it (none kept)
        return rescale(split, size, cost_usd)
    total = sum(gained.values(), ZERO)
    rest, _ = rescale(split, size - total, cost_usd - total * avg_price)
    after = dict(rest)
    for sub, n in gained.items():
        held = after.get(sub, Part())
        after[sub] = Part(held.shares + n, held.cost_usd + n * avg_price)
    charges = []
    for k in sorted({*split, *after}):
        before, now = split.get(k, Part()), after.get(k, Part())
        charges.append(Charge(k, now.shares - before.shares, ZERO, now.cost_usd - before.cost_usd, ZERO))
    return after, tuple(charges)
