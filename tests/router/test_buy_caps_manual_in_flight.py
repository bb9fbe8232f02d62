"""A BUY in flight the router did not send counts against the follower wallet's exposure caps.

Manual BUYs (SubmitOrder: the trading terminal) and copies of an id not of the router's form reserve nothing in
Redis, where the router counts its own copies in flight. Its batch read adds, per wallet, what each such BUY open at
the executor may still spend (``amount_usd`` less the notional its fills booked, which the position already holds; a
GTC sized in shares: shares left × limit) to the market of the order (its condition id), the wallet's total and its
open markets: the in-flight side of maxMarketExposureUsd, maxTotalExposureUsd and maxOpenPositions."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from common.reservations import NOTHING_RESERVED
from services.executor.adapters.order_sql import UNCLAIMED_SELL
from services.router.adapters.store import PgBatch, PositionAgg, RouterStore
from services.router.domain.decide import client_order_id, decide
from services.router.domain.model import Decision, OrderIntent, Reason, RiskRules, Skip
from services.router.read_model import follower_state
from tests.router.factories import ASSET, CONDITION, follower, market, policy, trade
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration

D = Decimal
OTHER_CONDITION = "0x" + "cd" * 32
SIBLING = "5034" + "2" * 70  # the other outcome of CONDITION


def _order(db_url: str, coid: str, *, side: str = "BUY", amount: str | None = "500", state: str = "PLACED",
           origin: str = "MANUAL", filled_notional: str = "0", condition: str = CONDITION, wallet: str = "w_1",
           asset: str = ASSET, size: str | None = None, filled: str = "0", limit: str | None = None,
           ended: bool = False, raw_proto: bytes | None = None) -> None:
    """An order as the executor keeps it: its row (the intent's proto carries its market), pending, marked as the
    executor marks it."""
    proto = raw_proto if raw_proto is not None else epb.Order(client_order_id=coid, condition_id=condition,
                                                              asset_id=asset).SerializeToString()
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO orders (client_order_id, state, venue, origin, follower_wallet_id, asset_id, side,"
                     " order_type, amount_usd, size, limit_price, filled_size, filled_notional, order_proto)"
                     " VALUES (%s, %s, 'INSIDERS', %s, %s, %s, %s, 'FAK', %s, %s, %s, %s, %s, %s)",
                     (coid, state, origin, wallet, asset, side, amount, size, limit, filled, filled_notional, proto))
        conn.execute("INSERT INTO order_pending (client_order_id, follower_wallet_id, asset_id, terminal_at,"
                     " unclaimed_sell) SELECT client_order_id, follower_wallet_id, asset_id,"
                     f" CASE WHEN %s THEN now() END, {UNCLAIMED_SELL} FROM orders WHERE client_order_id = %s",
                     (ended, coid))


async def _load(store: RouterStore, *, sell_assets: list[str] | None = None) -> PgBatch:
    return await store.load_batch(leader_trade_ids=["lt_x"], wallets=["w_1"], markets=[CONDITION], assets=[ASSET],
                                  leader_assets=[], pnl_day_ms=None, funding_wallets=[], sell_assets=sell_assets)


def _decide(b: PgBatch, risk: RiskRules) -> Decision:
    now_ms = time.time_ns() // 1_000_000
    st = follower_state(b.position("w_1", CONDITION, ASSET), NOTHING_RESERVED, D(0), None)
    return decide(trade(venue_time_ms=now_ms - 1000), follower(risk=risk), market(), st, D(0),
                  policy(now_ms=now_ms))


async def test_a_manual_buy_in_flight_counts_against_the_market_exposure_cap(store: RouterStore,
                                                                             db_url: str) -> None:
    _order(db_url, "man_1")  # the terminal's $500 BUY of the market, posted, not answered yet
    d = _decide(await _load(store), RiskRules(max_market_exposure_usd=D("500")))
    assert isinstance(d, Skip) and d.reason is Reason.MARKET_EXPOSURE_LIMIT, d
    assert d.detail == "market exposure $0 + in-flight $500 vs maxMarketExposureUsd $500: no headroom"


async def test_a_manual_buy_in_flight_counts_against_the_total_exposure_cap(store: RouterStore,
                                                                            db_url: str) -> None:
    _order(db_url, "man_1", amount="490", condition=OTHER_CONDITION, asset="9")
    d = _decide(await _load(store), RiskRules(max_total_exposure_usd=D("500"), max_market_exposure_usd=D("500")))
    assert isinstance(d, OrderIntent) and d.amount_usd == D("10"), d


async def test_a_manual_buy_in_flight_opens_its_market(store: RouterStore, db_url: str) -> None:
    _order(db_url, "man_1", amount="30", condition=OTHER_CONDITION, asset="9")
    d = _decide(await _load(store), RiskRules(max_open_positions=1))
    assert isinstance(d, Skip) and d.reason is Reason.MAX_OPEN_POSITIONS, d
    _order(db_url, "man_2", amount="30", asset=SIBLING)  # the trade's own market: no new position
    d = _decide(await _load(store), RiskRules(max_open_positions=1))
    assert isinstance(d, OrderIntent), d


# (orders of the wallet: coid, _order's keywords) -> what the batch read counts in flight for the trade's market,
# the wallet's total, and its open markets
CASES = [
    pytest.param([("man_1", {})], "500", "500", {CONDITION}, id="a manual BUY placed"),
    pytest.param([("man_1", {"state": "SUBMITTING"}), ("man_2", {"state": "UNKNOWN", "amount": "20"}),
                  ("man_3", {"state": "NEW", "amount": "5"})], "525", "525", {CONDITION},
                 id="being posted, unanswered, not sent yet"),
    pytest.param([("man_1", {"state": "PARTIALLY_FILLED", "filled_notional": "200"})], "300", "300", {CONDITION},
                 id="what its fills booked is in the position already"),
    pytest.param([("man_1", {"filled_notional": "500"})], "0", "0", set(), id="all of it filled"),
    pytest.param([("man_1", {"amount": None, "size": "100", "filled": "40", "limit": "0.5"})], "30", "30",
                 {CONDITION}, id="a GTC sized in shares: shares left at its limit"),
    pytest.param([("man_1", {"state": "FILLED"}), ("man_2", {"state": "CANCELLED"}), ("man_3", {"ended": True})],
                 "0", "0", set(), id="terminal orders count nothing"),
    pytest.param([(client_order_id("lt_1", "w_1", ASSET), {"origin": "COPY"})], "0", "0", set(),
                 id="the router's own copy: counted from Redis only"),
    pytest.param([("tt_copy_1", {"origin": "COPY"})], "500", "500", {CONDITION},
                 id="a copy the router did not send (SubmitOrder)"),
    pytest.param([("ex_1", {"side": "SELL", "origin": "TRIGGER", "amount": None, "size": "100"}),
                  ("man_1", {"side": "SELL", "amount": None, "size": "100"})], "0", "0", set(),
                 id="exits and manual SELLs are not BUYs"),
    pytest.param([("man_1", {"asset": SIBLING})], "500", "500", {CONDITION},
                 id="the other outcome of the market: its market by condition id"),
    pytest.param([("man_1", {"condition": OTHER_CONDITION, "asset": "9"}), ("man_2", {"amount": "7"})], "7", "507",
                 {CONDITION, OTHER_CONDITION}, id="another market: the total and the open markets"),
    pytest.param([("man_1", {"condition": "", "asset": ASSET})], "500", "500", {CONDITION},
                 id="no condition id: the trade's own asset is its market"),
    pytest.param([("man_1", {"condition": "", "asset": "9"})], "0", "500", {"9"},
                 id="no condition id: another asset is a market of its own"),
    pytest.param([("man_1", {"raw_proto": b"\xff\xff"})], "500", "500", {CONDITION},
                 id="an unreadable proto: as one of no condition id"),
    pytest.param([("man_1", {"wallet": "w_2"})], "0", "0", set(), id="another wallet's"),
]


@pytest.mark.parametrize(("orders", "market_usd", "total_usd", "markets"), CASES)
async def test_load_batch_counts_the_buys_in_flight_the_router_did_not_send(
        store: RouterStore, db_url: str, orders: list[tuple[str, dict[str, Any]]], market_usd: str, total_usd: str,
        markets: set[str]) -> None:
    for coid, kw in orders:
        _order(db_url, coid, **kw)
    no_sells: list[str] = []
    for sell_assets in (None, no_sells):  # whatever the batch sells
        pos = (await _load(store, sell_assets=sell_assets)).position("w_1", CONDITION, ASSET)
        assert (pos.buying_market_usd, pos.buying_total_usd, set(pos.buying_markets)) == (
            D(market_usd), D(total_usd), markets)


async def test_a_buy_in_flight_adds_to_the_positions_held(store: RouterStore, db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, cost_usd)"
                     " VALUES ('w_1', %s, %s, '0xa', 100, 40)", (ASSET, CONDITION))
    _order(db_url, "man_1", state="PARTIALLY_FILLED", filled_notional="200")
    b = await _load(store)
    assert b.position("w_1", CONDITION, ASSET) == PositionAgg(D(40), D(40), D(100), frozenset({CONDITION}),
                                                             buying_total_usd=D(300), buying_market_usd=D(300),
                                                             buying_markets=frozenset({CONDITION}))
    st = follower_state(b.position("w_1", CONDITION, ASSET), NOTHING_RESERVED, D(0), None)
    assert (st.market_exposure_usd, st.reserved_market_usd, st.reserved_total_usd) == (D(40), D(300), D(300))
