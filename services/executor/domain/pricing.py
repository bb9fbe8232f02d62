"""Tick snapping, price bounds, limit price and the depth check (pure, Decimal only)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from common import takerfee
from common.decimals import ONE, ZERO, fmt
from common.takerfee import TakerFee
from services.executor.domain.book_math import Levels, best_price, notional_within, quantize_size, volume_within
from services.executor.domain.venue_orders import LOWEST_PRICE

BPS = Decimal(10_000)
DEFAULT_MIN_DEPTH_RATIO = Decimal("0.5")


def valid_tick(tick: Decimal) -> bool:
    """A usable tick size: at least the finest tick of any market (0.0001) and below 0.5."""
    return LOWEST_PRICE <= tick < Decimal("0.5")


def snap_down(price: Decimal, tick: Decimal) -> Decimal:
    """The highest grid price ≤ ``price``."""
    return ((price / tick).to_integral_value(rounding=ROUND_FLOOR) * tick).quantize(tick)


def snap_up(price: Decimal, tick: Decimal) -> Decimal:
    """The lowest grid price ≥ ``price``."""
    return ((price / tick).to_integral_value(rounding=ROUND_CEILING) * tick).quantize(tick)


def snap_safe(price: Decimal, tick: Decimal, buying: bool) -> Decimal:
    """Snap a limit so it never exceeds the tolerance: down for a BUY, up for a SELL."""
    return snap_down(price, tick) if buying else snap_up(price, tick)


def clamp_to_bounds(price: Decimal, tick: Decimal) -> Decimal:
    """``price`` held inside the tradable range [tick, 1 − tick]."""
    return max(tick, min(ONE - tick, price)).quantize(tick)


NO_PRICE_WITHIN_SLIPPAGE = "NO_PRICE_WITHIN_SLIPPAGE"


def slipped_limit(best: Decimal, max_slippage_bps: int, tick: Decimal, buying: bool) -> Decimal | None:
    """Best opposite price moved by the slippage tolerance against us, snapped safely, kept in bounds; None when
    no price of the grid in [tick, 1 − tick] is within the tolerance.

    On the market's own grid that cannot happen (its asks are at least a tick, its bids at most 1 − tick). On a
    coarser grid than the book's (an order priced on a tick the market left: ticks go from 0.01 to 0.001 below
    0.04 and above 0.96) it does: moved into the range, a BUY at 0.005 would have had the limit 0.01, twice
    what its tolerance allows, and a SELL at 0.997 the limit 0.99."""
    factor = Decimal(max(0, max_slippage_bps)) / BPS
    raw = best * (ONE + factor) if buying else best * (ONE - factor)
    snapped = snap_safe(raw, tick, buying)
    if snapped < tick if buying else snapped > ONE - tick:
        return None
    return clamp_to_bounds(snapped, tick)


BUY_BELOW_MARKET_MINIMUM = "BUY_BELOW_MARKET_MINIMUM"
INSUFFICIENT_DEPTH = "INSUFFICIENT_DEPTH"
MARKETABLE_BUY_MIN_USD = Decimal(1)  # the venue refuses a marketable BUY of less (the router's default minimum)


def marketable_minimum_refusal(amount_usd: Decimal) -> tuple[str, str] | None:
    """Why a FOK/FAK BUY of ``amount_usd`` must not be sent (below the venue's $1 marketable minimum), or None."""
    if amount_usd >= MARKETABLE_BUY_MIN_USD:
        return None
    return (BUY_BELOW_MARKET_MINIMUM,
            f"${fmt(amount_usd)} < the venue's marketable BUY minimum ${fmt(MARKETABLE_BUY_MIN_USD)}")


def buy_minimum_refusal(amount_usd: Decimal, limit: Decimal, min_order_size: Decimal | None,
                        fee: TakerFee | None = None) -> tuple[str, str] | None:
    """Why a BUY of ``amount_usd`` priced at ``limit`` must not be sent, or None when it may go.

    The venue sizes a USD BUY at its limit price (the most it may pay): ``amount_usd / limit`` shares,
    rounded down to the share step. Fewer than the market's minimum order size is a doomed order
    (``INVALID_ORDER_MIN_SIZE``) or, if filled at better prices, a position too small to sell again:
    refused as ``BUY_BELOW_MARKET_MINIMUM``. So is a BUY that holds fewer once the venue took the market's taker
    ``fee`` in shares (its exit and every TP/SL SELL could never be posted): counted at the limit, the worst case
    (a fill at ``p`` keeps ``A/p − A·rate·p^(e−2)·(1 − p)^e`` shares, which falls as ``p`` rises for every exponent
    e ≥ 1 and rate < 1: the fee schedules in use are at 1 or 2). An unknown minimum (None, 0 or less) refuses
    nothing; an unknown fee (None) counts none.
    """
    if min_order_size is None or min_order_size <= 0 or limit <= 0:
        return None
    shares = quantize_size(amount_usd / limit)
    taken = fee.shares(shares, min(limit, ONE)) if fee is not None and shares > 0 else ZERO
    if shares - taken >= min_order_size:
        return None
    if fee is None or not taken or shares < min_order_size:
        return (BUY_BELOW_MARKET_MINIMUM,
                f"${fmt(amount_usd)} buys {fmt(shares)} shares at limit {fmt(limit)} "
                f"< market minimum {fmt(min_order_size)}")
    return (BUY_BELOW_MARKET_MINIMUM,
            f"${fmt(amount_usd)} buys {fmt(shares)} shares at limit {fmt(limit)}, {fmt(shares - taken)} once the "
            f"taker fee (rate {fmt(fee.rate)}, exponent {fmt(fee.exponent)}) takes {fmt(taken)} "
            f"< market minimum {fmt(min_order_size)}")


def order_taker_fee(rate: str, exponent: str) -> TakerFee | None:
    """The taker fee an order carries (``Order.taker_fee_rate`` / ``taker_fee_exponent``); None when it carries
    none, or one not understood: no fee known, as the router does without one (never a refusal of the order)."""
    if not rate or not exponent:
        return None
    return takerfee.from_fields({takerfee.RATE_FIELD: rate, takerfee.EXPONENT_FIELD: exponent})


@dataclass(frozen=True, slots=True)
class DepthDecision:
    """Outcome of the depth check: go with ``limit_price``, or skip with an UPPER_SNAKE reason."""

    ok: bool
    limit_price: Decimal | None
    available: Decimal
    required: Decimal
    reason: str = ""
    detail: str = ""


@dataclass(frozen=True, slots=True)
class DepthQuote:
    """The limit for one side of a book and what is available within it (shared by every order alike)."""

    limit_price: Decimal | None
    available: Decimal  # USD for a BUY, shares for a SELL
    reason: str = ""  # set when no limit can be derived
    shares: Decimal = ZERO  # shares within the limit (a SELL's ``available``)


def quote_depth(*, buying: bool, opposite: Levels, tick: Decimal, max_slippage_bps: int,
                given_limit: Decimal | None = None) -> DepthQuote:
    """The limit (given one snapped safely, or best opposite ± slippage) and the depth within it."""
    if not valid_tick(tick):
        return DepthQuote(None, ZERO, "INVALID_TICK_SIZE")
    if given_limit is not None:
        limit = clamp_to_bounds(snap_safe(given_limit, tick, buying), tick)
    elif (best := best_price(opposite)) is None:  # a level of size 0 offers nothing: the first holding shares
        return DepthQuote(None, ZERO, "NO_LIQUIDITY")
    else:
        slipped = slipped_limit(best, max_slippage_bps, tick, buying)
        if slipped is None:
            return DepthQuote(None, ZERO, NO_PRICE_WITHIN_SLIPPAGE)
        limit = slipped
    shares = volume_within(opposite, limit, buying)
    return DepthQuote(limit, notional_within(opposite, limit, buying) if buying else shares, shares=shares)


def judge_depth(q: DepthQuote, *, buying: bool, quantity: Decimal, tick: Decimal,
                min_ratio: Decimal = DEFAULT_MIN_DEPTH_RATIO, min_size: Decimal | None = None) -> DepthDecision:
    """Go or skip for one order of ``quantity`` (USD for a BUY, shares for a SELL) against a quote.

    With the market's ``min_size`` (shares) known, a BUY that can fill fewer shares within the limit is skipped too
    (a position too small to sell). A SELL is not held to it: what it leaves unsold is left either way, and a copy
    of the leader's exit that sells nothing is worse than one that sells what the book takes."""
    if q.reason == "INVALID_TICK_SIZE":
        return DepthDecision(False, None, ZERO, quantity, q.reason, f"tick size {fmt(tick)}")
    if quantity <= 0:
        return DepthDecision(False, None, ZERO, quantity, "INVALID_QUANTITY", f"quantity {fmt(quantity)}")
    if q.reason == NO_PRICE_WITHIN_SLIPPAGE:
        return DepthDecision(False, None, ZERO, quantity, q.reason, f"no price of the {fmt(tick)} grid is within the "
                             f"slippage tolerance of the best {'ask' if buying else 'bid'}")
    if q.reason or q.limit_price is None:
        return DepthDecision(False, None, ZERO, quantity, q.reason or "NO_LIQUIDITY",
                             f"no {'asks' if buying else 'bids'} in the book")
    if q.available < quantity * min_ratio:
        unit = "USD" if buying else "shares"
        return DepthDecision(False, q.limit_price, q.available, quantity, INSUFFICIENT_DEPTH,
                             f"{fmt(q.available)} {unit} within limit {fmt(q.limit_price)}, need "
                             f"{fmt(quantity * min_ratio)} of {fmt(quantity)}")
    if buying and min_size is not None and min_size > 0 and q.shares < min_size:
        return DepthDecision(False, q.limit_price, q.available, quantity, INSUFFICIENT_DEPTH,
                             f"{fmt(q.shares)} shares within limit {fmt(q.limit_price)} < market minimum "
                             f"{fmt(min_size)}")
    return DepthDecision(True, q.limit_price, q.available, quantity)


def check_depth(*, buying: bool, quantity: Decimal, opposite: Levels, tick: Decimal, max_slippage_bps: int,
                given_limit: Decimal | None = None,
                min_ratio: Decimal = DEFAULT_MIN_DEPTH_RATIO) -> DepthDecision:
    """Decide whether enough of the order can fill within the slippage tolerance.

    ``quantity`` is USD to spend for a BUY and shares for a SELL; ``opposite`` is the side the
    order takes from, best first (asks for a BUY, bids for a SELL). The limit is the given one
    (snapped safely) or the best opposite price ± ``max_slippage_bps``; the order is skipped when
    less than ``min_ratio`` of ``quantity`` is available at or better than that limit.
    """
    q = quote_depth(buying=buying, opposite=opposite, tick=tick, max_slippage_bps=max_slippage_bps,
                    given_limit=given_limit)
    return judge_depth(q, buying=buying, quantity=quantity, tick=tick, min_ratio=min_ratio)
