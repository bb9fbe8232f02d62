"""Every sample in ../shared/polymarket/fixtures/ through the parsers (skipped when the folder is absent)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from common.clob_rest import DEFAULT_TICK, market_infos, parse_market
from services.ingest import clob, dataapi, rtds
from services.ingest.frames import decode, require_object
from services.ingest.identity import identify_batch
from services.ingest.normalize_cli import Normalizer

SHARED = Path(__file__).parents[2] / ".." / "shared" / "polymarket" / "fixtures"
FILES = sorted(p.name for p in SHARED.glob("*.json")) if SHARED.is_dir() else []
NOT_INGEST_INPUT = ("clob_user_", "clob_order_", "clob_rest_data_trade", "gamma_", "clob_ws_subscribe_user")
CLOB_WS = ("clob_book_ws", "clob_price_change", "clob_last_trade_price", "clob_tick_size_change",
           "clob_best_bid_ask", "clob_market_resolved", "clob_new_market", "clob_ws_array_frame")


def load(name: str) -> Any:
    return orjson.loads((SHARED / name).read_bytes())


def check_rtds(name: str, data: Any) -> None:
    if name.startswith(("rtds_subscribe", "rtds_unsubscribe")):
        assert data["action"] in ("subscribe", "unsubscribe") and all("type" in s for s in data["subscriptions"])
        if name == "rtds_subscribe_activity.json":
            assert rtds.subscribe_message() == data  # our subscribe frame is exactly the documented one
        return
    frames = data if name.endswith("_5msgs.json") or isinstance(data, list) else [data]
    for frame in frames:
        route, source = rtds.route(frame)
        if name.startswith("rtds_activity"):
            assert route == rtds.ROUTE_TRADE
            fill = rtds.parse_trade(rtds.payload_of(frame), source, time.time_ns())
            assert fill.wallet == frame["payload"]["proxyWallet"].lower() and fill.price > 0
            assert fill.venue_time_ms == frame["payload"]["timestamp"] * 1000
        elif name.startswith("rtds_error"):
            assert route == rtds.ROUTE_SERVER_ERROR
        else:
            assert route == rtds.ROUTE_OTHER


def check_data_api(data: Any) -> None:
    rows = dataapi.rows_of(data if isinstance(data, list | dict) and ("data" in data or isinstance(data, list))
                           else [data])
    fills = [dataapi.parse_row(require_object(r), time.time_ns()) for r in rows]
    assert fills
    for row, fill in zip(rows, fills, strict=True):
        assert fill.wallet == str(row.get("proxyWallet") or row.get("proxy_wallet")).lower()
        assert fill.is_trade == (row.get("type", "TRADE") == "TRADE")
    trades = [f for f in fills if f.is_trade]
    assert len({i.id for i in identify_batch(trades, 0)}) == len(trades)  # same-tx fills stay distinct


def check_clob_ws(name: str) -> None:
    if name.startswith("clob_ws_subscribe_market_dynamic"):
        data = load(name)
        assert data["operation"] in ("subscribe", "unsubscribe") and isinstance(data["assets_ids"], list)
        return
    messages = decode((SHARED / name).read_bytes())
    assert messages
    parsed = [clob.parse_event(require_object(m)) for m in messages]
    if name.startswith("clob_book_ws"):
        [book] = parsed
        assert isinstance(book, clob.BookMsg)
        bids = [p for p, _ in book.bids]
        assert bids == sorted(bids)  # ascending on the wire: best is last
    if name.startswith("clob_new_market"):
        assert isinstance(parsed[0], clob.IgnoredMsg)


@pytest.mark.skipif(not FILES, reason="../shared/polymarket/fixtures is absent")
@pytest.mark.parametrize("name", FILES or ["none"])
def test_shared_fixture(name: str) -> None:
    if name.startswith(NOT_INGEST_INPUT):
        pytest.skip("not an ingest input (user channel, order API, gamma)")
    data = load(name)
    if name.startswith("rtds_"):
        check_rtds(name, data)
    elif name.startswith("data_api"):
        check_data_api(data)
    elif name.startswith("clob_ws_subscribe_market"):
        if name == "clob_ws_subscribe_market.json":
            assert set(data) == {"assets_ids", "type", "custom_feature_enabled"} and data["type"] == "market"
        else:
            check_clob_ws(name)
    elif name.startswith(CLOB_WS):
        check_clob_ws(name)
    elif name.startswith("clob_book_rest"):
        book = clob.parse_book(data)
        assert book.asset_id == data["asset_id"]
    elif name.startswith("clob_market_rest"):
        infos = market_infos(0, market=parse_market(data), default_tick=DEFAULT_TICK)
        assert [i.asset_id for i in infos] == [t["token_id"] for t in data["tokens"]]
    else:
        pytest.fail(f"no parser is mapped to {name}")


@pytest.mark.skipif(not FILES, reason="../shared/polymarket/fixtures is absent")
def test_normalize_prints_one_line_per_trade_in_input_order() -> None:
    names = [n for n in FILES if n.startswith(("rtds_activity", "data_api"))]
    normalizer = Normalizer()
    expected = 0
    for name in names:
        data = load(name)
        normalizer.feed(data)
        if name.startswith("rtds_activity"):
            expected += len(data) if isinstance(data, list) else 1
        else:
            rows = dataapi.rows_of(data if isinstance(data, list) or "data" in data else [data])
            expected += sum(1 for r in rows if r.get("type", "TRADE") == "TRADE")
    assert len(normalizer.events) == expected
    assert normalizer.metrics.total("parse_errors") == 0
