"""From an ``Order`` to a venue request, or a refusal with a reason (pure: book and time passed in)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import ROUND_DOWN, Decimal
from functools import lru_cache

from common.ceiling import MAX_ORDER_USD_EXCEEDED, above_ceiling, cap_sell
from common.decimals import ONE, fmt, parse_decimal
from common.marketstate import BookSnapshot
from services.executor.domain.book_math import quantize_size
from services.executor.domain.order_lifecycle import OrderLife, OrderRejected, OrderSubmitted, apply
from services.executor.domain.pricing import (
    BUY_BELOW_MARKET_MINIMUM,
    NO_PRICE_WITHIN_SLIPPAGE,
    DepthQuote,
    buy_minimum_refusal,
    clamp_to_bounds,
    judge_depth,
    marketable_minimum_refusal,
    order_taker_fee,
    quote_depth,
    slipped_limit,
    snap_safe,
    valid_tick,
)
from services.executor.domain.sell_sizing import sell_worth_price
from services.executor.domain.ticket import INSIDERS, ORDER_TYPES, PAPER, Ticket
from services.executor.domain.venue_orders import PlaceRequest
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb


@dataclass(frozen=True, slots=True)
class IntakeRules:
    """Settings the intake applies."""

    live_configured: bool
    max_order_age_ns: int = 60_000_000_000  # 0 disables the staleness check
    min_depth_ratio: Decimal = Decimal("0.5")
    max_order_usd: Decimal | None = None  # the operator ceiling (TT_MAX_ORDER_USD; the service always sets it)


@dataclass(frozen=True, slots=True)
class Prepared:
    """An order ready for the venue (``life`` in SUBMITTING) or refused (``life`` in REJECTED).

    ``condition_replaced``: the condition id the order carried when it named another market than the one its book
    (or the token's market as otherwise known) names, which the order took instead ("" when it carried none or the
    same one)."""

    ticket: Ticket
    life: OrderLife
    condition_replaced: str = ""

    @property
    def refused(self) -> bool:
        """True when the order never goes to a venue."""
        return self.life.terminal


class _Refusal(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


_PARSED: dict[str, Decimal] = {}  # a fan-out repeats the same tick, prices and amounts: parse each once
_PARSED_MAX = 4096


def _decimal(field: str, raw: str, *, required: bool) -> Decimal | None:
    if not raw:
        if required:
            raise _Refusal("INVALID_ORDER", f"{field} is required")
        return None
    value = _PARSED.get(raw)
    if value is not None:
        return value
    try:
        value = parse_decimal(raw)
    except ValueError:
        raise _Refusal("INVALID_ORDER", f"{field} is not a decimal: {raw[:40]!r}") from None
    if len(_PARSED) >= _PARSED_MAX:
        _PARSED.clear()
    _PARSED[raw] = value
    return value


QuoteCache = dict[tuple[str, bool, Decimal, int, Decimal | None], DepthQuote]


@dataclass(frozen=True, slots=True)
class _Shape:
    """What orders alike share (all but their ids and follower): the venue request's terms."""

    side: str
    order_type: str
    amount: Decimal | None
    size: Decimal | None
    limit: Decimal
    detail: str


# A shape's outcome: the terms, or the refusal and whether it comes before the staleness check.
ShapeCache = dict[tuple[object, ...], "_Shape | tuple[_Refusal, bool]"]


def prepare(order: epb.Order, book: BookSnapshot | None, rules: IntakeRules, now_ns: int,
            quotes: QuoteCache | None = None, shapes: ShapeCache | None = None, *, market: str = "") -> Prepared:
    """Validate, pick the venue, run the depth check and derive the limit price.

    The order's condition id becomes the market's (:func:`market_condition`): the one ``book`` names, else
    ``market`` (the token's market as known without a fresh book: a stale stored book's), whatever the order
    carried, but for a copy that carried none of the venue's form (a leader trade without a ``conditionId`` whose
    token's market the router did not know): the router counted that copy against its token (its reservation, and
    the positions it reads as ``coalesce(nullif(condition_id, ''), asset_id)``), so it keeps what it carried and its
    position is booked where the router's next copy looks for it (ingest's safety net checks a token held under none
    by the market cached for it; settlement goes by token). When no market of the venue's form is known, the order's own
    is checked (:func:`_check_condition`).

    ``quotes`` memoizes the book walk for orders alike (same asset, side, tick, slippage, given
    limit) within one batch: a fan-out walks the book once, not once per follower. ``shapes``
    memoizes the whole outcome for orders that differ only in ids and follower (one batch, one
    book per asset, one ``rules``): only the order's own checks (ids, age) run per order.
    """
    venue = PAPER if order.mode == cpb.EXECUTION_MODE_PAPER else INSIDERS
    ticket = Ticket(order, venue, None, now_ns)
    life = OrderLife(order.client_order_id)
    replaced = ""
    try:
        if not order.client_order_id:
            raise _Refusal("INVALID_ORDER", "client_order_id is required")
        proxy = order.follower_proxy.lower()  # positions are booked under it, and looked up in lower case
        if proxy != order.follower_proxy:
            order.follower_proxy = proxy  # in place: the intent stores it so
        token_market = market_condition(book.condition_id if book is not None else "") or market_condition(market)
        if token_market and (order.origin != epb.ORDER_ORIGIN_COPY or market_condition(order.condition_id)):
            replaced = _take_condition(order, token_market)
        elif order.condition_id:
            _check_condition(order)
        if order.sell_fraction and not order.size:
            _check_fraction(order, venue, rules)
            _check_age(order, rules, now_ns)
            # NEW: sized on the position once the orders before it are answered
            return Prepared(ticket, life, replaced)
        if shapes is None:
            shape = _shape(order, venue, book, rules, now_ns, {} if quotes is None else quotes, None)
        else:
            key = (venue, order.asset_id, order.side, order.mode, order.order_type, order.amount_usd, order.size,
                   order.tick_size, order.limit_price, order.reference_price, order.max_slippage_bps,
                   order.origin, order.min_order_size, order.taker_fee_rate, order.taker_fee_exponent, id(book))
            known = shapes.get(key)
            if known is None:
                shape = _shape(order, venue, book, rules, now_ns, {} if quotes is None else quotes, (shapes, key))
            elif isinstance(known, _Shape):
                _check_age(order, rules, now_ns)
                shape = known
            else:
                refusal, early = known
                if not early:
                    _check_age(order, rules, now_ns)
                raise _Refusal(refusal.reason, refusal.detail)
    except _Refusal as r:
        return Prepared(ticket, apply(life, OrderRejected(r.reason, r.detail)), replaced)
    ticket.request = PlaceRequest(
        client_order_id=order.client_order_id, user_id=order.follower_user_id, wallet_id=order.follower_wallet_id,
        proxy=order.follower_proxy, token_id=order.asset_id, side=shape.side, order_type=shape.order_type,
        amount_usd=shape.amount, size=shape.size, limit_price=shape.limit, neg_risk=order.neg_risk)
    submitted = apply(life, OrderSubmitted(shape.limit))
    detail = f"{order.sizing_note}; {shape.detail}" if order.sizing_note and shape.detail else (
        order.sizing_note or shape.detail)
    return Prepared(ticket, replace(submitted, detail=detail) if detail else submitted, replaced)


_HEX = frozenset("0123456789abcdef")


def market_condition(raw: str) -> str:
    """``raw`` in lower case when it has the venue's form of a condition id (0x + 64 hex digits), else ""."""
    return _venue_form(raw) if len(raw) == 66 else ""


@lru_cache(maxsize=1024)  # a fan-out's orders, and the books they are priced on, repeat the same few ids
def _venue_form(raw: str) -> str:
    cid = raw.lower()
    return cid if cid.startswith("0x") and _HEX.issuperset(cid[2:]) else ""


def _take_condition(order: epb.Order, known: str) -> str:
    """The order takes the condition id of the market its book names (the venue's, as ingest wrote it), whatever it
    carried: positions are settled by token, but ingest's REST safety net checks the markets held by the id their
    positions were booked under, and a position booked under another market's id (the trading terminal's mistake)
    would leave its own market unchecked. Returns the id the order carried when it named another market ("" when
    none or the same one)."""
    given = order.condition_id
    if given == known:
        return ""
    order.condition_id = known  # the proto is changed in place: the intent stores it so
    return given if given and given.lower() != known else ""


def _check_condition(order: epb.Order) -> None:
    """The order's condition id when no market is known for its token: in lower case, as ingest writes it and
    settlement, redemption and the positions routes compare it (the proto is changed in place: the intent stores it
    so). A manual order's (the trading terminal's, checked by nothing before) must have the venue's form, 0x + 64
    hex digits; a copy's comes from ingest, and an exit's is the one its position was booked with, which must not
    stop a stop-loss whatever it is (positions are settled by token)."""
    cid = order.condition_id.lower()
    if order.origin not in (epb.ORDER_ORIGIN_COPY, epb.ORDER_ORIGIN_TRIGGER) and not market_condition(cid):
        raise _Refusal("INVALID_ORDER", f"condition_id must be 0x + 64 hex digits, got {order.condition_id[:80]!r}")
    if cid != order.condition_id:
        order.condition_id = cid


def _check_fraction(order: epb.Order, venue: str, rules: IntakeRules) -> None:
    """A SELL sent with the fraction of the position to sell (the executor sizes it later)."""
    _check_order(order, venue, rules)
    _decimal("min_order_size", order.min_order_size, required=False)  # read when it is sized
    fraction = _decimal("sell_fraction", order.sell_fraction, required=True)
    if order.side != cpb.SIDE_SELL:
        raise _Refusal("INVALID_ORDER", "sell_fraction is for a SELL only")
    if fraction is None or not 0 < fraction <= ONE:
        raise _Refusal("INVALID_ORDER", f"sell_fraction must be in (0, 1], got {order.sell_fraction[:40]!r}")


def _check_age(order: epb.Order, rules: IntakeRules, now_ns: int) -> None:
    stamp = order.routed_time_ns or order.received_time_ns
    if rules.max_order_age_ns and stamp and now_ns - stamp > rules.max_order_age_ns:
        raise _Refusal("STALE_ORDER", f"order is {(now_ns - stamp) / 1e9:.1f}s old")


def _shape(order: epb.Order, venue: str, book: BookSnapshot | None, rules: IntakeRules, now_ns: int,
           quotes: QuoteCache, memo: tuple[ShapeCache, tuple[object, ...]] | None) -> _Shape:
    try:
        _check_order(order, venue, rules)
    except _Refusal as r:
        if memo is not None:
            memo[0][memo[1]] = (r, True)
        raise
    _check_age(order, rules, now_ns)
    try:
        try:
            shape = _terms(order, venue, book, rules, quotes)
        except ArithmeticError as exc:  # a number no amount, size or price can be (beyond a Decimal's 28 digits)
            raise _Refusal("INVALID_ORDER", f"a number of the order is out of range: {exc!r}"[:300]) from None
    except _Refusal as r:
        if memo is not None:
            memo[0][memo[1]] = (r, False)
        raise
    if memo is not None:
        memo[0][memo[1]] = shape
    return shape


def _check_order(order: epb.Order, venue: str, rules: IntakeRules) -> None:
    if not order.asset_id:
        raise _Refusal("INVALID_ORDER", "asset_id is required")
    if order.side not in (cpb.SIDE_BUY, cpb.SIDE_SELL):
        raise _Refusal("INVALID_ORDER", "side must be BUY or SELL")
    if order.mode not in (cpb.EXECUTION_MODE_LIVE, cpb.EXECUTION_MODE_PAPER):
        raise _Refusal("INVALID_ORDER", "mode must be LIVE or PAPER")
    if venue == INSIDERS and not rules.live_configured:
        raise _Refusal("LIVE_VENUE_NOT_CONFIGURED", "TT_INSIDERS_API_URL is not set: live orders are refused")


def _tick(order: epb.Order, book: BookSnapshot | None) -> Decimal | None:
    """The grid to price on: the book's tick when the venue named it (ingest writes a ``tick_size_change`` into
    the book as it comes, so it is newer than the tick the order was routed with), else the order's, else the
    book's default. A stale order tick would put the limit off the market's grid (a finer one: refused by the
    venue) or off the book's best prices (a coarser one)."""
    if book is not None and book.tick_known and valid_tick(book.tick_size):
        return book.tick_size
    return _decimal("tick_size", order.tick_size, required=False) or (book.tick_size if book else None)


def _terms(order: epb.Order, venue: str, book: BookSnapshot | None, rules: IntakeRules,
           quotes: QuoteCache) -> _Shape:
    buying = order.side == cpb.SIDE_BUY
    order_type = ORDER_TYPES.get(order.order_type, "FAK")
    amount = _decimal("amount_usd", order.amount_usd, required=buying and order_type != "GTC")
    size = _decimal("size", order.size, required=not buying or order_type == "GTC")
    quantity = amount if buying and amount is not None else size
    if quantity is None or quantity <= 0:
        raise _Refusal("INVALID_ORDER", f"{'amount_usd' if buying else 'size'} must be positive")
    # the venue takes a market BUY's USD to the cent and shares to the hundredth: rounded down, never up
    if buying and amount is not None and (order_type != "GTC" or size is None):
        amount = quantity = amount.quantize(_CENT, rounding=ROUND_DOWN)
        if amount <= 0:
            raise _Refusal("INVALID_ORDER", f"amount_usd {order.amount_usd[:40]} is less than a cent")
    elif size is not None:
        size = quantity = quantize_size(size)
        if size <= 0:
            raise _Refusal("INVALID_ORDER", f"size {order.size[:40]} is less than a share step (0.01)")
    tick = _tick(order, book)
    if tick is None or not valid_tick(tick):
        raise _Refusal("INVALID_TICK_SIZE", f"tick size {order.tick_size or 'unknown'}")
    given = _decimal("limit_price", order.limit_price, required=False)
    if given is not None and (snap_safe(given, tick, buying) < tick if buying
                              else snap_safe(given, tick, buying) > ONE - tick):
        # no tradable grid price on the safe side: moving it into [tick, 1 − tick] would pay more (BUY) or
        # take less (SELL) than the caller's worst acceptable price
        raise _Refusal("LIMIT_PRICE_OUT_OF_BOUNDS",
                       f"limit_price {fmt(given)} has no {'BUY' if buying else 'SELL'} price on the {fmt(tick)} grid "
                       f"within [{fmt(tick)}, {fmt(ONE - tick)}]")
    reference = _decimal("reference_price", order.reference_price, required=False)
    min_size = _decimal("min_order_size", order.min_order_size, required=False)  # "" when the market is unknown
    detail = ""
    if book is not None:
        key = (order.asset_id, buying, tick, order.max_slippage_bps, given)
        quote = quotes.get(key)
        if quote is None:
            quote = quotes[key] = quote_depth(buying=buying, opposite=book.asks if buying else book.bids, tick=tick,
                                              max_slippage_bps=order.max_slippage_bps, given_limit=given)
        # Copies are skipped when the book is too thin; exits (trigger, manual) go out for whatever fills,
        # and a GTC order rests for what does not fill now.
        ratio = (rules.min_depth_ratio if order.origin == epb.ORDER_ORIGIN_COPY and order_type != "GTC"
                 else Decimal(0))
        decision = judge_depth(quote, buying=buying, quantity=quantity, tick=tick, min_ratio=ratio,
                               min_size=min_size if ratio else None)
        if not decision.ok or decision.limit_price is None:
            raise _Refusal(decision.reason, decision.detail)
        limit = decision.limit_price
    elif venue == PAPER:
        raise _Refusal("NO_BOOK", f"no book for {order.asset_id}: the paper venue cannot fill")
    elif given is not None:
        limit = clamp_to_bounds(snap_safe(given, tick, buying), tick)
        detail = "no book: depth not checked"
    elif reference is not None and reference > 0:
        slipped = slipped_limit(reference, order.max_slippage_bps, tick, buying)
        if slipped is None:
            raise _Refusal(NO_PRICE_WITHIN_SLIPPAGE, f"no book, and no price of the {fmt(tick)} grid is within the "
                           f"slippage tolerance of the reference price {fmt(reference)}")
        limit = slipped
        detail = f"no book: limit from reference price {fmt(reference)}"
    else:
        raise _Refusal("NO_BOOK", f"no book and no reference price for {order.asset_id}")
    if buying and amount is not None and (order_type != "GTC" or size is None):
        # the router checked the minimum at the leader's price; the shares are bought at this limit, less the fee
        fee = order_taker_fee(order.taker_fee_rate, order.taker_fee_exponent)  # not understood: no fee known
        below = buy_minimum_refusal(amount, limit, min_size, fee) or (
            marketable_minimum_refusal(amount) if order_type != "GTC" else None)
        if below is not None:
            raise _Refusal(*below)
    if order_type == "GTC" and size is None and amount is not None:
        size = quantize_size(amount / limit)
    if order_type == "GTC" and size is not None and min_size is not None and 0 < size < min_size:  # refused there
        raise _Refusal(BUY_BELOW_MARKET_MINIMUM if buying else "SELL_BELOW_MARKET_MINIMUM",
                       f"{fmt(size)} shares < market minimum {fmt(min_size)}")
    worth = limit if buying else sell_worth_price(reference, book.best_bid if book is not None else None, limit)
    size, cut = _check_ceiling(order.origin, buying, order_type, amount, size, limit, rules, min_size, worth)
    if cut:
        detail = f"{detail}; {cut}" if detail else cut
    return _Shape("BUY" if buying else "SELL", order_type, amount if buying and order_type != "GTC" else None,
                  None if buying and order_type != "GTC" else size, limit, detail)


_CENT = Decimal("0.01")
_EXITS = (epb.ORDER_ORIGIN_TRIGGER, epb.ORDER_ORIGIN_COPY)  # a SELL of these origins leaves a position


def _check_ceiling(origin: int, buying: bool, order_type: str, amount: Decimal | None, size: Decimal | None,
                   limit: Decimal, rules: IntakeRules, min_size: Decimal | None = None,
                   worth_price: Decimal | None = None) -> tuple[Decimal | None, str]:
    """The order's size once held to the operator ceiling, and the note of a cut ("" when none).

    An exit (a trigger's SELL, or a copied one: the leader left) above the ceiling is cut to it: it only ever
    sells shares held, and refusing it would leave the whole position open. The router cut a copied SELL at the
    leader's price already, but this limit comes from the book, and a bid above the leader's price makes the
    same shares worth more here. It is measured at ``worth_price`` (:func:`sell_worth_price`: the reference price,
    best bid or limit, the highest), as a SELL sized here is (``sell_sizing.ceiling_price``). A cut that leaves
    less than the market's minimum size is refused. Any other
    order worth more than the ceiling (a BUY its USD amount, GTC size × limit; a manual SELL size × limit) is
    refused."""
    if rules.max_order_usd is None:
        return size, ""
    if not buying and origin in _EXITS and size is not None:
        cut, note = cap_sell(size, worth_price or limit, rules.max_order_usd)
        if cut <= 0:
            raise _Refusal(MAX_ORDER_USD_EXCEEDED, note)
        if note and min_size is not None and cut < min_size:
            raise _Refusal(MAX_ORDER_USD_EXCEEDED, f"{note}: below the market minimum of {fmt(min_size)} shares")
        return cut, note
    if buying and amount is not None and order_type != "GTC":
        worth, how = amount, f"amount_usd ${fmt(amount)}"
    elif size is not None:
        worth, how = size * limit, f"{fmt(size)} shares × limit {fmt(limit)}"
    else:  # pragma: no cover - _terms always has one of them
        return size, ""
    refused = above_ceiling(worth, rules.max_order_usd, how)
    if refused is not None:
        raise _Refusal(*refused)
    return size, ""
