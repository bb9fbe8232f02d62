"""Paper fills (pure book walk) and the intake: venue choice, refusals, depth, limit price."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from common.marketstate import BookSnapshot
from services.executor.adapters.paper_venue import decode_order, encode_order, paper_fill
from services.executor.domain import venue_orders as v
from services.executor.domain.order_intake import IntakeRules, prepare
from services.executor.domain.order_lifecycle import State
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

D = Decimal
ASKS = ((D("0.50"), D("20")), (D("0.51"), D("30")), (D("0.60"), D("100")))
BIDS = ((D("0.49"), D("10")), (D("0.47"), D("40")))


def req(side: str, otype: str, *, amount: str | None = None, size: str | None = None,
        limit: str = "0.51") -> v.PlaceRequest:
    return v.PlaceRequest("co_1", "u", "w", "0xp", "tok", side, otype, D(amount) if amount else None,
                          D(size) if size else None, D(limit))


@pytest.mark.parametrize(("request_", "fee_bps", "status", "size", "avg", "fee"), [
    # $20 at 0.51 limit: 20 @ 0.50 ($10) then $10 / 0.51 = 19.60 shares ($9.996).
    (req("BUY", "FAK", amount="20"), D("0"), "confirmed", D("39.60"), D("0.50494949"), D("0")),
    (req("BUY", "FAK", amount="20"), D("100"), "confirmed", D("39.60"), D("0.50494949"), D("0.3960")),
    # More than the limit allows: FAK takes all 50 shares within 0.51 ($25.30).
    (req("BUY", "FAK", amount="100"), D("0"), "confirmed", D("50"), D("0.506"), D("0")),
    (req("BUY", "FOK", amount="25.30"), D("0"), "confirmed", D("50"), D("0.506"), D("0")),
    (req("BUY", "FAK", amount="5", limit="0.49"), D("0"), "cancelled", D("0"), D("0"), D("0")),
    (req("SELL", "FAK", size="30", limit="0.47"), D("100"), "confirmed", D("30"), D("0.47666667"), D("0")),
    (req("SELL", "FAK", size="80", limit="0.47"), D("0"), "confirmed", D("50"), D("0.474"), D("0")),
    (req("SELL", "FOK", size="50", limit="0.47"), D("0"), "confirmed", D("50"), D("0.474"), D("0")),
])
def test_paper_fill_walks_the_book(request_, fee_bps, status, size, avg, fee) -> None:  # type: ignore[no-untyped-def]
    o = paper_fill(request_, BIDS, ASKS, fee_bps)
    assert isinstance(o, v.VenueOrder)
    assert (o.status, o.filled_size, o.avg_price, o.fee_shares) == (status, size, avg, fee)
    assert decode_order(encode_order(o)) == o
    assert paper_fill(request_, BIDS, ASKS, fee_bps) == o  # deterministic


@pytest.mark.parametrize("otype", ["FAK", "FOK"])
def test_paper_buy_fills_behind_an_ask_remnant_smaller_than_one_share_step(otype: str) -> None:
    asks = ((D("0.50"), D("0.005")), (D("0.51"), D("100")))
    o = paper_fill(req("BUY", otype, amount="10", limit="0.52"), BIDS, asks, D("0"))
    assert isinstance(o, v.VenueOrder)
    assert (o.status, o.filled_size) == ("confirmed", D("19.60"))


@pytest.mark.parametrize(("request_", "code"), [
    (req("BUY", "FOK", amount="25.31"), "FOK_ORDER_NOT_FILLED_ERROR"),
    (req("SELL", "FOK", size="50.01", limit="0.47"), "FOK_ORDER_NOT_FILLED_ERROR"),
    (req("BUY", "GTC", size="10"), "PAPER_ORDER_TYPE_UNSUPPORTED"),
    (req("BUY", "FAK", amount="0"), "INVALID_ORDER_MIN_SIZE"),
])
def test_paper_refusals(request_, code) -> None:  # type: ignore[no-untyped-def]
    r = paper_fill(request_, BIDS, ASKS, D("0"))
    assert isinstance(r, v.VenueError) and r.http_status == 400 and r.code == code


BOOK = BookSnapshot("tok", "0xc", BIDS, ASKS, D("0.01"), 1, 1)
FINER_LOW = BookSnapshot("tok", "0xc", ((D("0.004"), D("1000")),), ((D("0.005"), D("1000")), (D("0.01"), D("1000"))),
                         D("0.001"), 1, 1)
FINER_HIGH = BookSnapshot("tok", "0xc", ((D("0.997"), D("1000")), (D("0.99"), D("1000"))), ((D("0.998"), D("10")),),
                          D("0.001"), 1, 1)
NOW = 10**18
RULES = IntakeRules(live_configured=True)


def order(**kw) -> epb.Order:  # type: ignore[no-untyped-def]
    base = dict(client_order_id="co_1", origin=epb.ORDER_ORIGIN_COPY, follower_wallet_id="w", asset_id="tok",
                side=cpb.SIDE_BUY, order_type=epb.ORDER_TYPE_FAK, amount_usd="20", max_slippage_bps=200,
                tick_size="0.01", mode=cpb.EXECUTION_MODE_LIVE, routed_time_ns=NOW - 1000)
    base.update(kw)
    return epb.Order(**base)


@pytest.mark.parametrize(("o", "book", "rules", "state", "reason", "limit"), [
    (order(), BOOK, RULES, State.SUBMITTING, "", D("0.51")),
    (order(side=cpb.SIDE_SELL, amount_usd="", size="20"), BOOK, RULES, State.SUBMITTING, "", D("0.49")),
    (order(), BOOK, IntakeRules(live_configured=False), State.REJECTED, "LIVE_VENUE_NOT_CONFIGURED", None),
    (order(mode=cpb.EXECUTION_MODE_PAPER), BOOK, IntakeRules(live_configured=False), State.SUBMITTING, "", D("0.51")),
    (order(mode=cpb.EXECUTION_MODE_PAPER), None, RULES, State.REJECTED, "NO_BOOK", None),
    (order(), None, RULES, State.REJECTED, "NO_BOOK", None),
    (order(reference_price="0.40"), None, RULES, State.SUBMITTING, "", D("0.40")),  # 0.408 snapped down
    (order(limit_price="0.555"), None, RULES, State.SUBMITTING, "", D("0.55")),
    # a given limit with no grid price on its safe side inside [tick, 1 - tick] is refused, never moved past
    (order(limit_price="0.005"), BOOK, RULES, State.REJECTED, "LIMIT_PRICE_OUT_OF_BOUNDS", None),
    (order(side=cpb.SIDE_SELL, amount_usd="", size="20", limit_price="0.995"), BOOK, RULES, State.REJECTED,
     "LIMIT_PRICE_OUT_OF_BOUNDS", None),
    (order(side=cpb.SIDE_SELL, amount_usd="", size="20", limit_price="0.995"), None, RULES, State.REJECTED,
     "LIMIT_PRICE_OUT_OF_BOUNDS", None),
    (order(limit_price="0.999"), None, RULES, State.SUBMITTING, "", D("0.99")),  # a BUY snaps down: fine
    (order(limit_price="1"), None, RULES, State.SUBMITTING, "", D("0.99")),  # held in bounds on the safe side
    (order(side=cpb.SIDE_SELL, amount_usd="", size="20", limit_price="0.001"), None, RULES, State.SUBMITTING, "",
     D("0.01")),
    (order(amount_usd="60"), BOOK, RULES, State.REJECTED, "INSUFFICIENT_DEPTH", None),  # $25.30 < $30
    # An exit is not skipped for depth: it goes out for whatever fills within the limit.
    (order(amount_usd="60", origin=epb.ORDER_ORIGIN_TRIGGER), BOOK, RULES, State.SUBMITTING, "", D("0.51")),
    (order(routed_time_ns=NOW - 61 * 10**9), BOOK, RULES, State.REJECTED, "STALE_ORDER", None),
    (order(amount_usd=""), BOOK, RULES, State.REJECTED, "INVALID_ORDER", None),
    (order(amount_usd="abc"), BOOK, RULES, State.REJECTED, "INVALID_ORDER", None),
    (order(side=cpb.SIDE_UNSPECIFIED), BOOK, RULES, State.REJECTED, "INVALID_ORDER", None),
    (order(mode=cpb.EXECUTION_MODE_UNSPECIFIED), BOOK, RULES, State.REJECTED, "INVALID_ORDER", None),
    (order(tick_size="0.7"), BOOK, RULES, State.REJECTED, "INVALID_TICK_SIZE", None),
    (order(tick_size=""), BOOK, RULES, State.SUBMITTING, "", D("0.51")),  # the book's tick
    # priced on a tick the market left (0.01 → 0.001 below 0.04): no limit within the tolerance on that grid, so
    # none is sent rather than 0.01 for an ask of 0.005 (a BUY) or 0.99 for a bid of 0.997 (a SELL)
    (order(), FINER_LOW, RULES, State.REJECTED, "NO_PRICE_WITHIN_SLIPPAGE", None),
    (order(side=cpb.SIDE_SELL, amount_usd="", size="20", max_slippage_bps=0), FINER_HIGH, RULES, State.REJECTED,
     "NO_PRICE_WITHIN_SLIPPAGE", None),
    (order(reference_price="0.005"), None, RULES, State.REJECTED, "NO_PRICE_WITHIN_SLIPPAGE", None),
])
def test_prepare(o, book, rules, state, reason, limit) -> None:  # type: ignore[no-untyped-def]
    p = prepare(o, book, rules, NOW)
    assert (p.life.state, p.life.reason) == (state, reason)
    if state is State.SUBMITTING:
        assert p.ticket.request is not None and p.ticket.request.limit_price == limit
        assert p.life.limit_price == limit and p.life.attempts == 1
    else:
        assert p.refused and p.ticket.request is None


def _frac(fraction: str, **kw) -> epb.Order:  # type: ignore[no-untyped-def]
    return order(side=cpb.SIDE_SELL, amount_usd="", sell_fraction=fraction, **kw)


@pytest.mark.parametrize(("o", "state", "detail"), [
    (_frac("0.5"), State.NEW, ""),  # stored without a size, sized in its turn
    (_frac("1"), State.NEW, ""),
    (_frac("0"), State.REJECTED, "sell_fraction must be in (0, 1]"),
    (_frac("1.5"), State.REJECTED, "sell_fraction must be in (0, 1]"),
    (_frac("-0.1"), State.REJECTED, "sell_fraction must be in (0, 1]"),
    (_frac("half"), State.REJECTED, "sell_fraction is not a decimal"),
    (order(sell_fraction="0.5", amount_usd=""), State.REJECTED, "sell_fraction is for a SELL only"),
    (_frac("0.5", min_order_size="abc"), State.REJECTED, "min_order_size is not a decimal"),
    (_frac("0.5", routed_time_ns=NOW - 61 * 10**9), State.REJECTED, "order is 61.0s old"),
    (_frac("0.5", size="3"), State.SUBMITTING, ""),  # sized already: an ordinary SELL
])
def test_prepare_a_sell_sized_by_its_fraction(o: epb.Order, state: State, detail: str) -> None:
    p = prepare(o, BOOK, RULES, NOW)
    assert p.life.state is state and p.life.detail.startswith(detail), (p.life.state, p.life.detail)
    assert (p.life.reason == "") if state is not State.REJECTED else p.life.reason in ("INVALID_ORDER", "STALE_ORDER")


def test_prepare_builds_the_venue_request() -> None:
    p = prepare(order(follower_user_id="u_1", follower_proxy="0xabc", neg_risk=True), BOOK, RULES, NOW)
    assert p.ticket.request == v.PlaceRequest("co_1", "u_1", "w", "0xabc", "tok", "BUY", "FAK", D("20"), None,
                                              D("0.51"), True)
    sell = prepare(order(side=cpb.SIDE_SELL, amount_usd="", size="12.5"), BOOK, RULES, NOW)
    assert sell.ticket.request is not None
    assert (sell.ticket.request.amount_usd, sell.ticket.request.size) == (None, D("12.5"))
    assert p.ticket.venue == "INSIDERS"
    assert prepare(order(mode=cpb.EXECUTION_MODE_PAPER), BOOK, RULES, NOW).ticket.venue == "PAPER"


def _known(book: BookSnapshot) -> BookSnapshot:
    return replace(book, tick_known=True)


COARSENED = BookSnapshot("tok", "0xc", ((D("0.04"), D("1000")),), ((D("0.05"), D("1000")), (D("0.06"), D("1000"))),
                         D("0.01"), 1, 1)


@pytest.mark.parametrize(("o", "book", "state", "limit"), [
    # the tick went 0.01 -> 0.001 after the order was routed: the venue's tick in the book prices it
    (order(amount_usd="4"), _known(FINER_LOW), State.SUBMITTING, D("0.005")),
    (order(side=cpb.SIDE_SELL, amount_usd="", size="20", max_slippage_bps=0), _known(FINER_HIGH), State.SUBMITTING,
     D("0.997")),
    # ... and back 0.001 -> 0.01: the limit stays on the market's grid (0.05 * 1.02 = 0.051 was off it)
    (order(tick_size="0.001"), _known(COARSENED), State.SUBMITTING, D("0.05")),
    (order(tick_size="0.001"), _known(replace(COARSENED, asks=((D("0.05"), D("10")),))), State.REJECTED, None),
    # a book whose tick ingest put in by default says nothing: the order's tick stands
    (order(), FINER_LOW, State.REJECTED, None),
    (order(tick_size="0.001"), COARSENED, State.SUBMITTING, D("0.051")),
    (order(tick_size=""), COARSENED, State.SUBMITTING, D("0.05")),
])
def test_the_limit_is_priced_on_the_tick_the_venue_named_last(o: epb.Order, book: BookSnapshot, state: State,
                                                             limit: Decimal | None) -> None:
    p = prepare(o, book, RULES, NOW)
    assert p.life.state is state, p.life
    if limit is not None:
        assert p.ticket.request is not None and p.ticket.request.limit_price == limit
        assert limit % book.tick_size == 0 or not book.tick_known


def test_a_stored_book_says_whether_its_tick_is_the_venues() -> None:
    for known in (True, False):
        book = replace(BOOK, tick_known=known)
        assert BookSnapshot.from_json(book.to_json()).tick_known is known


CONDITION = "0x" + "ab" * 32


@pytest.mark.parametrize(("o", "stored"), [
    (order(condition_id=CONDITION.upper().replace("0X", "0x")), CONDITION),
    (order(condition_id="0X" + "AB" * 32, origin=epb.ORDER_ORIGIN_MANUAL), CONDITION),
    (order(condition_id=CONDITION, origin=epb.ORDER_ORIGIN_MANUAL), CONDITION),
    (order(condition_id=""), ""),  # a copy or an exit may not know it (booked later from the market)
    (order(condition_id="", origin=epb.ORDER_ORIGIN_MANUAL), ""),
    (_frac("0.5", condition_id="0x" + "AB" * 32), CONDITION),  # sized later: stored as taken
])
def test_the_condition_id_is_taken_in_lower_case(o: epb.Order, stored: str) -> None:
    """Settlement, redemption and the positions routes compare condition ids as ingest writes them (lower case)."""
    p = prepare(o, BOOK, RULES, NOW)
    assert not p.refused, p.life
    assert p.ticket.order.condition_id == stored


CHECKSUMMED = "0x6Af75C1b9d2A0cE3E4bF0a1dD2e3f4A5b6C7d8E9"


@pytest.mark.parametrize("o", [
    order(follower_proxy=CHECKSUMMED, origin=epb.ORDER_ORIGIN_MANUAL),
    order(follower_proxy=CHECKSUMMED),
    order(follower_proxy=CHECKSUMMED, origin=epb.ORDER_ORIGIN_TRIGGER, side=cpb.SIDE_SELL, amount_usd="", size="20"),
    _frac("0.5", follower_proxy=CHECKSUMMED),  # sized later: stored as taken
])
def test_the_follower_proxy_is_taken_in_lower_case(o: epb.Order) -> None:
    """Positions are booked under the order's proxy, and the positions routes look wallets up in lower case (as
    control stores every address): a manual order sent with a checksummed proxy booked a position no route found."""
    p = prepare(o, BOOK, RULES, NOW)
    assert not p.refused, p.life
    assert p.ticket.order.follower_proxy == CHECKSUMMED.lower()
    assert p.ticket.request is None or p.ticket.request.proxy == CHECKSUMMED.lower()


@pytest.mark.parametrize("cid", ["0xc", "c" * 64, "0x" + "g" * 64, "0x" + "a" * 65, "0x" + "a" * 63 + " "])
def test_a_manual_order_naming_no_condition_id_of_the_venues_form_is_refused(cid: str) -> None:
    p = prepare(order(condition_id=cid, origin=epb.ORDER_ORIGIN_MANUAL), BOOK, RULES, NOW)
    assert (p.life.state, p.life.reason) == (State.REJECTED, "INVALID_ORDER")
    assert p.life.detail.startswith("condition_id must be 0x + 64 hex digits"), p.life.detail


def test_an_exit_keeps_the_condition_id_it_was_given_whatever_its_form() -> None:
    """guard's exits name the condition id the position was booked with: an old malformed one must not stop a
    stop-loss (settlement goes by token)."""
    p = prepare(order(condition_id="0xC", origin=epb.ORDER_ORIGIN_TRIGGER, side=cpb.SIDE_SELL, amount_usd="",
                      size="20"), BOOK, RULES, NOW)
    assert p.life.state is State.SUBMITTING and p.ticket.order.condition_id == "0xc"


MARKET = "0x" + "5e" * 32  # the token's market, as its book names it (ingest writes the venue's id, lower-case)
NAMED = BookSnapshot("tok", MARKET, BIDS, ASKS, D("0.01"), 1, 1)
_EXIT = {"origin": epb.ORDER_ORIGIN_TRIGGER, "side": cpb.SIDE_SELL, "amount_usd": "", "size": "20"}


@pytest.mark.parametrize(("given", "kind"), [
    *((given, kind) for given in (CONDITION, "0X" + "5E" * 32, MARKET, "0xc", "not an id", "")
      for kind in ({"origin": epb.ORDER_ORIGIN_MANUAL}, _EXIT)),
    *((given, {}) for given in (CONDITION, "0X" + "5E" * 32, MARKET)),  # a copy naming a market (see below)
])
def test_an_order_takes_the_market_its_book_names_whatever_it_carried(given: str, kind: dict[str, object]) -> None:
    """Settlement goes by token, but ingest's REST safety net checks the markets held by the id their positions were
    booked under: a manual BUY naming another market's id (well formed, accepted before) left its own market
    unchecked. Every order takes the id of the market its book names (a copy, when it names one); a different one
    is reported."""
    p = prepare(order(condition_id=given, **kind), NAMED, RULES, NOW)
    assert p.life.state is State.SUBMITTING, p.life
    assert p.ticket.order.condition_id == MARKET
    assert p.condition_replaced == ("" if given.lower() in ("", MARKET) else given)


@pytest.mark.parametrize("given", ["", "0xC", "not an id"])
@pytest.mark.parametrize(("book", "market"), [(NAMED, ""), (None, MARKET)], ids=["fresh book", "stale book"])
@pytest.mark.parametrize("fraction", ["", "0.5"], ids=["sized", "sized later"])
def test_a_copy_of_a_trade_without_condition_id_keeps_none_the_router_capped_it_by_its_token(
        given: str, book: BookSnapshot | None, market: str, fraction: str) -> None:
    """A leader trade may come without a conditionId: the router counts its copies against ``market_of('', asset)``
    = the token (its reservation, and the positions it reads as coalesce(nullif(condition_id, ''), asset_id)).
    Booked under the book's id, the copy's position would be counted against another key: the router's next copy
    of such a trade would read no exposure in the market (maxMarketExposureUsd passed, maxOpenPositions counting the
    market twice). The copy keeps what it carried (lower-cased)."""
    o = _frac(fraction, condition_id=given) if fraction else order(condition_id=given, limit_price="0.51")
    p = prepare(o, book, RULES, NOW, market=market)
    assert not p.refused, p.life
    assert (p.ticket.order.condition_id, p.condition_replaced) == (given.lower(), "")


def test_an_order_sized_later_takes_the_market_its_book_names() -> None:
    p = prepare(_frac("0.5", condition_id=CONDITION), NAMED, RULES, NOW)
    assert (p.life.state, p.ticket.order.condition_id, p.condition_replaced) == (State.NEW, MARKET, CONDITION)


@pytest.mark.parametrize("book", [None, BOOK], ids=["no book", "book naming no market"])
def test_the_market_known_without_a_fresh_book_is_taken(book: BookSnapshot | None) -> None:
    """A stale stored book is not priced on, but still names its token's market (admission passes it)."""
    p = prepare(order(condition_id=CONDITION, origin=epb.ORDER_ORIGIN_MANUAL, limit_price="0.51"), book, RULES, NOW,
                market=MARKET)
    assert p.life.state is State.SUBMITTING, p.life
    assert (p.ticket.order.condition_id, p.condition_replaced) == (MARKET, CONDITION)


def test_with_no_market_known_a_manual_order_naming_a_malformed_id_is_still_refused() -> None:
    p = prepare(order(condition_id="0xc", origin=epb.ORDER_ORIGIN_MANUAL, limit_price="0.51"), None, RULES, NOW,
                market="0xc")
    assert (p.life.state, p.life.reason) == (State.REJECTED, "INVALID_ORDER")
