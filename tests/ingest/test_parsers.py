"""Table-driven parsing of every message type, on our own fixtures written in the documented formats."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from common.clob_rest import DEFAULT_TICK, market_infos, parse_market
from services.ingest import clob, dataapi, rtds
from services.ingest.frames import decode
from services.ingest.model import (
    BAD_FIELD,
    BAD_NUMBER,
    BAD_SHAPE,
    MISSING_FIELD,
    NOT_JSON,
    PRICE_OUT_OF_RANGE,
    SIZE_NOT_POSITIVE,
    TIMESTAMP_OUT_OF_RANGE,
    TOO_LARGE,
    ParseError,
    TradeRefused,
)
from tests.ingest.conftest import RECV_NS

FIXTURES = Path(__file__).parent / "fixtures"
LEADER = "0x5a1ce0000000000000000000000000000000beef"
T1 = "31415926535897932384626433832795028841971693993751058209749445923078164062862"
T2 = "27182818284590452353602874713526624977572470936999595749669676277240766303535"
C1 = "0x" + "1c" * 32


def load(name: str) -> Any:
    return orjson.loads((FIXTURES / name).read_bytes())


@pytest.mark.parametrize(("raw", "expected"), [
    ("", None), ("  ", None), ("PONG", None), ("ping", None), (b"", None),
    ('{"a": 1}', [{"a": 1}]), ("[1, {}]", [1, {}]), (b'{"x": "y"}', [{"x": "y"}]),
])
def test_decode_frames(raw: str | bytes, expected: Any) -> None:
    assert decode(raw) == expected


@pytest.mark.parametrize(("raw", "kind"), [
    ("hello", NOT_JSON), ('{"a": ', NOT_JSON), ("1e999", NOT_JSON), (b"\xff\xfe", NOT_JSON),
    ("42", BAD_SHAPE), ('"text"', BAD_SHAPE), ("null", BAD_SHAPE), ("x" * 2000, TOO_LARGE),
])
def test_decode_rejects(raw: str | bytes, kind: str) -> None:
    with pytest.raises(ParseError) as err:
        decode(raw, max_bytes=1024)
    assert err.value.kind == kind


@pytest.mark.parametrize(("name", "source", "wallet", "asset", "side", "price", "size", "fee", "venue_ms"), [
    ("rtds_trade_buy_taker_fee.json", "RTDS_TRADES", LEADER, T1, "BUY", "0.62", "48.25", "0.4172", 1767225600000),
    ("rtds_trade_sell_maker.json", "RTDS_TRADES", "0x00000000000000000000000000000000000c0ffe", T2, "SELL", "0.38",
     "48.25", None, 1767225600000),
    ("rtds_orders_matched_taker.json", "RTDS_ORDERS_MATCHED", LEADER, T1, "BUY", "0.62", "48.25", "0.4172",
     1767225600000),
    ("rtds_no_topic_fallback.json", "RTDS_TRADES", LEADER, T2, "SELL", "0.1", "3", None, 1767225600000),
])
def test_rtds_trades(name: str, source: str, wallet: str, asset: str, side: str, price: str, size: str,
                     fee: str | None, venue_ms: int) -> None:
    msg = load(name)
    route, src = rtds.route(msg)
    assert (route, src) == (rtds.ROUTE_TRADE, source)
    fill = rtds.parse_trade(rtds.payload_of(msg), src, RECV_NS)
    assert (fill.wallet, fill.asset_id, fill.side) == (wallet, asset, side)
    assert (fill.price, fill.size) == (Decimal(price), Decimal(size))
    assert fill.fee == (Decimal(fee) if fee else None)
    assert fill.venue_time_ms == venue_ms and fill.received_ns == RECV_NS
    assert fill.condition_id == C1 and fill.is_trade and fill.source == source


@pytest.mark.parametrize(("name", "route"), [
    ("rtds_crypto_prices_update.json", rtds.ROUTE_OTHER),
    ("rtds_error_invalid_body.json", rtds.ROUTE_SERVER_ERROR),
])
def test_rtds_non_trades(name: str, route: str) -> None:
    assert rtds.route(load(name))[0] == route


def test_rtds_array_frame_holds_two_identical_fills() -> None:
    messages = decode((FIXTURES / "rtds_array_same_tx_two_fills.json").read_bytes())
    assert messages is not None and len(messages) == 2
    fills = [rtds.parse_trade(rtds.payload_of(m), "RTDS_TRADES", RECV_NS) for m in messages]
    assert fills[0] == fills[1]


def _payload(**changes: Any) -> dict[str, Any]:
    p = load("rtds_trade_buy_taker_fee.json")["payload"]
    p.update(changes)
    return {k: v for k, v in p.items() if v is not ...}


@pytest.mark.parametrize(("changes", "kind"), [
    ({"asset": 3.14e76}, BAD_FIELD),  # a float token id lost its digits
    ({"asset": ...}, MISSING_FIELD),
    ({"asset": "12ab"}, BAD_FIELD),
    ({"proxyWallet": "0x123"}, BAD_FIELD),
    ({"proxyWallet": 5}, BAD_FIELD),
    ({"transactionHash": "0xzz"}, BAD_FIELD),
    ({"side": "HOLD"}, BAD_FIELD),
    ({"price": "abc"}, BAD_NUMBER),
    ({"price": True}, BAD_NUMBER),
    ({"price": 1e80}, BAD_NUMBER),
    ({"price": 0}, PRICE_OUT_OF_RANGE),
    ({"price": 1.5}, PRICE_OUT_OF_RANGE),
    ({"price": 1}, PRICE_OUT_OF_RANGE),
    ({"price": "-0.5"}, PRICE_OUT_OF_RANGE),
    ({"size": -1}, SIZE_NOT_POSITIVE),
    ({"size": "0"}, SIZE_NOT_POSITIVE),
    ({"timestamp": 0}, TIMESTAMP_OUT_OF_RANGE),
    ({"timestamp": RECV_NS // 10**9 + 61}, TIMESTAMP_OUT_OF_RANGE),  # stamped more than 60 s ahead of us
    ({"size": [1]}, BAD_NUMBER),
    ({"timestamp": 1e20}, BAD_NUMBER),
    ({"timestamp": ...}, MISSING_FIELD),
    ({"outcomeIndex": 1.5}, BAD_NUMBER),
    ({"title": {"x": 1}}, BAD_FIELD),
])
def test_rtds_trade_rejects_bad_fields(changes: dict[str, Any], kind: str) -> None:
    with pytest.raises(ParseError) as err:
        rtds.parse_trade(_payload(**changes), "RTDS_TRADES", RECV_NS)
    assert err.value.kind == kind


@pytest.mark.parametrize(("changes", "kind"), [
    ({"price": "1"}, PRICE_OUT_OF_RANGE), ({"price": "0"}, PRICE_OUT_OF_RANGE), ({"size": "0"}, SIZE_NOT_POSITIVE),
    ({"size": "-3"}, SIZE_NOT_POSITIVE), ({"timestamp": 0}, TIMESTAMP_OUT_OF_RANGE),
    ({"timestamp": RECV_NS // 10**9 + 61}, TIMESTAMP_OUT_OF_RANGE),
])
def test_data_api_trade_rows_are_refused_like_rtds_ones(changes: dict[str, Any], kind: str) -> None:
    row = {**dataapi.rows_of(load("data_activity_mixed.json"))[0], **changes}
    with pytest.raises(TradeRefused) as err:
        dataapi.parse_row(row, RECV_NS)
    assert err.value.kind == kind
    assert dataapi.parse_row({**row, "type": "REDEEM"}, RECV_NS).activity_type == "REDEEM"  # not a trade: kept


def test_a_trade_is_accepted_up_to_the_clock_skew_and_its_notional_is_recomputed() -> None:
    ahead = rtds.parse_trade(_payload(timestamp=RECV_NS // 10**9 + 59), "RTDS_TRADES", RECV_NS)
    assert ahead.venue_time_ms == (RECV_NS // 10**9 + 59) * 1000
    with pytest.raises(TradeRefused):  # a tighter skew refuses it
        rtds.parse_trade(_payload(timestamp=RECV_NS // 10**9 + 59), "RTDS_TRADES", RECV_NS, max_skew_ms=1000)
    row = {**dataapi.rows_of(load("data_activity_mixed.json"))[0], "usdcSize": "1000000"}  # a bogus figure
    fill = dataapi.parse_row(row, RECV_NS)
    assert fill.notional == fill.price * fill.size == Decimal("0.62") * Decimal("48.25")


def test_rtds_numbers_as_strings_parse_the_same() -> None:
    a = rtds.parse_trade(_payload(), "RTDS_TRADES", RECV_NS)
    b = rtds.parse_trade(_payload(price="0.620", size="48.250", timestamp="1767225600"), "RTDS_TRADES", RECV_NS)
    assert (a.price, a.size, a.venue_time_ms) == (b.price, b.size, b.venue_time_ms)


@pytest.mark.parametrize(("index", "kind", "trade", "asset", "side", "size", "usdc"), [
    (0, "TRADE", True, T1, "BUY", "48.25", "29.915"),
    (1, "MERGE", False, "", "", "20", "20"),
    (2, "REDEEM", False, "", "", "7.5", "7.5"),
    (3, "CONVERSION", False, "", "", "12", "12"),
    (4, "MAKER_REBATE", False, "", "", "0.42", "0.42"),
])
def test_data_api_activity_rows(index: int, kind: str, trade: bool, asset: str, side: str, size: str,
                                usdc: str) -> None:
    row = dataapi.rows_of(load("data_activity_mixed.json"))[index]
    fill = dataapi.parse_row(row, RECV_NS)
    assert (fill.activity_type, fill.is_trade, fill.asset_id, fill.side) == (kind, trade, asset, side)
    assert (fill.size, fill.usdc_size, fill.wallet) == (Decimal(size), Decimal(usdc), LEADER)
    assert fill.outcome_index == (0 if trade else 999)
    assert fill.notional == (Decimal("0.62") * Decimal("48.25") if trade else Decimal(usdc))


def test_data_api_trades_rows_have_no_type_and_are_trades() -> None:
    fills = [dataapi.parse_row(r, RECV_NS) for r in dataapi.rows_of(load("data_trades_same_tx.json"))]
    assert [f.activity_type for f in fills] == ["TRADE"] * 4
    assert fills[0] == fills[1] and fills[2].size == Decimal("4.2")


def test_data_api_v2_envelope_snake_case() -> None:
    body = load("data_v2_trades.json")
    [fill] = [dataapi.parse_row(r, RECV_NS) for r in dataapi.rows_of(body)]
    assert (fill.wallet, fill.asset_id, fill.side, fill.price, fill.condition_id) == (
        LEADER, T1, "SELL", Decimal("0.71"), C1)
    assert fill.tx_hash == "0x" + "f6" * 32 and dataapi.next_cursor(body) == ""
    assert dataapi.rows_of({"data": None}) == []


@pytest.mark.parametrize("body", [{"rows": []}, "x", 5, {"data": "x"}])
def test_data_api_bad_bodies(body: Any) -> None:
    with pytest.raises(ParseError):
        dataapi.rows_of(body)


def test_clob_book_keeps_wire_order() -> None:
    msg = clob.parse_event(load("clob_book.json"))
    assert isinstance(msg, clob.BookMsg)
    assert msg.bids[-1] == (Decimal("0.6"), Decimal("30")) and msg.asks[-1] == (Decimal("0.62"), Decimal("12.25"))
    assert (msg.asset_id, msg.market, msg.tick_size, msg.last_trade_price, msg.venue_ms) == (
        T1, C1, Decimal("0.01"), Decimal("0.61"), 1767225600123)


@pytest.mark.parametrize(("name", "changes"), [
    ("clob_price_change_v2.json", [(T1, "BUY", "0.6", "0", "0.59", "0.62"), (T2, "SELL", "0.4", "0", "0.38", "0.41")]),
    ("clob_price_change_v1.json", [(T1, "BUY", "0.61", "44", None, None), (T1, "SELL", "0.62", "0", None, None)]),
    ("clob_price_change_v0.json", [(T1, "SELL", "0.65", "9", None, None)]),
])
def test_clob_price_change_schemas(name: str, changes: list[tuple[Any, ...]]) -> None:
    msg = clob.parse_event(load(name))
    assert isinstance(msg, clob.PriceChangeMsg) and msg.market == C1
    got = [(c.asset_id, c.side, c.price, c.size, c.best_bid, c.best_ask) for c in msg.changes]
    want = [(a, s, Decimal(p), Decimal(z), Decimal(b) if b else None, Decimal(k) if k else None)
            for a, s, p, z, b, k in changes]
    assert got == want


@pytest.mark.parametrize(("name", "cls", "check"), [
    ("clob_last_trade_price.json", clob.LastTradeMsg, lambda m: (m.price, m.side) == (Decimal("0.62"), "BUY")),
    ("clob_tick_size_change.json", clob.TickSizeMsg, lambda m: m.new_tick_size == Decimal("0.001")),
    ("clob_best_bid_ask.json", clob.BestBidAskMsg, lambda m: (m.best_bid, m.best_ask) == (Decimal("0.6"),
                                                                                          Decimal("0.62"))),
    ("clob_market_resolved.json", clob.ResolvedMsg, lambda m: m.winning_asset_id == T1 and m.asset_ids == (T1, T2)),
    ("clob_new_market.json", clob.IgnoredMsg, lambda m: m.event_type == "new_market"),
])
def test_clob_other_events(name: str, cls: type, check: Any) -> None:
    msg = clob.parse_event(load(name))
    assert isinstance(msg, cls) and check(msg)


def test_clob_array_frame() -> None:
    messages = decode((FIXTURES / "clob_array_frame.json").read_bytes())
    assert messages is not None
    parsed = [clob.parse_event(m) for m in messages]
    assert [type(m) for m in parsed] == [clob.BookMsg, clob.BookMsg]
    assert parsed[1].bids == ()  # type: ignore[union-attr]


@pytest.mark.parametrize(("event", "kind"), [
    ({"event_type": "book", "bids": []}, MISSING_FIELD),
    ({"event_type": "book", "asset_id": "1", "bids": [{"price": "2", "size": "1"}]}, BAD_FIELD),
    ({"event_type": "book", "asset_id": "1", "bids": "nope"}, BAD_FIELD),
    ({"event_type": "price_change", "price_changes": [{"asset_id": "1", "side": "BUY"}]}, MISSING_FIELD),
    ({"event_type": "price_change", "price_changes": [{"asset_id": "1", "price": "0.5", "side": "X"}]}, BAD_FIELD),
    ({"event_type": "tick_size_change", "asset_id": "1", "new_tick_size": "5"}, BAD_FIELD),
    ({"event_type": "last_trade_price", "asset_id": "1", "price": "x"}, BAD_NUMBER),
    ({"no_event_type": True}, MISSING_FIELD),
])
def test_clob_rejects(event: dict[str, Any], kind: str) -> None:
    with pytest.raises(ParseError) as err:
        clob.parse_event(event)
    assert err.value.kind == kind


def test_clob_unknown_event_type_is_ignored_not_an_error() -> None:
    assert clob.parse_event({"event_type": "something_new", "x": 1}) == clob.IgnoredMsg("something_new")


def test_clob_rest_book_and_market() -> None:
    book = clob.parse_book(load("clob_book_rest.json"))
    assert (book.min_order_size, book.neg_risk, book.last_trade_price) == (Decimal(5), False, None)
    infos = market_infos(99, market=parse_market(load("clob_market_rest.json")), default_tick=DEFAULT_TICK)
    assert [(i.asset_id, i.tick_size, i.min_order_size, i.neg_risk, i.extra["outcome"], i.outcome_index)
            for i in infos] == [(T1, Decimal("0.01"), Decimal(5), True, "Yes", 0),
                                (T2, Decimal("0.01"), Decimal(5), True, "No", 1)]  # outcome index: REST's order
    assert all(i.condition_id == C1 and i.updated_ms == 99 for i in infos)
