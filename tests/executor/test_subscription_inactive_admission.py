"""A copy BUY whose subscription was paused or deleted after it was routed (or routed by a router whose copy of the
index was behind) is refused at its intent insert: REJECTED ``SUBSCRIPTION_INACTIVE``, never sent, its reservation
released. Exits go through: a copy SELL (the leader's exit, decided while the subscription was ACTIVE; a SELL never
adds exposure), a trigger's SELL and a manual order. Real PostgreSQL, both paths of the insert."""

from __future__ import annotations

import psycopg
import pytest

from services.executor.adapters.order_store import OrderStore
from tests.executor.conftest import ASSET, Harness, make_order, rows
from tests.executor.test_wallet_mode_admission import subscription_row
from tests.executor.test_wallet_mode_lock import _items
from tests.executor.test_wallet_mode_lock import store as store  # the intent store on both paths (a fixture)
from tests.helpers import eventually
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration
INACTIVE = "SUBSCRIPTION_INACTIVE"
LIVE = cpb.EXECUTION_MODE_LIVE
BIDS = [("0.49", "500"), ("0.48", "1000")]
ASKS = [("0.50", "100"), ("0.51", "1000")]


def _order(i: int, sub: str, **kw: object) -> epb.Order:
    return make_order(i, subscription_id=sub, follower_wallet_id="w_1", mode=LIVE, **kw)


def _sell(i: int, sub: str, **kw: object) -> epb.Order:
    return _order(i, sub, side=cpb.SIDE_SELL, amount_usd="", size="10", **kw)


async def test_copy_buys_of_a_paused_or_stopped_subscription_are_refused_exits_are_not(
        store: OrderStore, db_url: str) -> None:
    subscription_row(db_url, "sub_p", "w_1", "LIVE", state="PAUSED")
    subscription_row(db_url, "sub_s", "w_1", "LIVE", state="STOPPED")
    subscription_row(db_url, "sub_a", "w_1", "LIVE")
    got = await store.insert_intents(_items(
        _order(1, "sub_p"), _order(2, "sub_s"), _order(3, "sub_a"),
        _sell(4, "sub_p"), _sell(5, "sub_s"),  # the leader's exits, mirrored
        _sell(6, "sub_p", origin=epb.ORDER_ORIGIN_TRIGGER, trigger_id="trg_1"),  # a stop-loss of the position
        _order(7, "", origin=epb.ORDER_ORIGIN_MANUAL),  # the trading terminal's
        _order(8, "sub_unknown")))  # no row to go by: not this check's to refuse
    assert got == {"co_test00003", "co_test00004", "co_test00005", "co_test00006", "co_test00007", "co_test00008"}
    assert {k: r for k, (r, _) in got.refused.items()} == {"co_test00001": INACTIVE, "co_test00002": INACTIVE}
    assert "subscription sub_p is PAUSED" in got.refused["co_test00001"][1]
    assert "subscription sub_s is STOPPED" in got.refused["co_test00002"][1]
    assert rows(db_url, "SELECT count(*) FROM orders WHERE client_order_id IN ('co_test00001', 'co_test00002')"
                ) == [(0,)]


async def test_a_mode_change_still_comes_first(store: OrderStore, db_url: str) -> None:
    subscription_row(db_url, "sub_p", "w_1", "PAPER", state="PAUSED")  # the wallet copies in PAPER now
    got = await store.insert_intents(_items(_order(1, "sub_p")))
    assert got == set() and got.refused["co_test00001"][0] == "MODE_CHANGED"


async def test_a_copy_routed_before_a_pause_is_rejected_unsent_and_released(harness: Harness, db_url: str) -> None:
    subscription_row(db_url, "sub_a", "w_1", "LIVE")
    await harness.set_book(ASSET, BIDS, ASKS)
    await harness.start_executor()
    with psycopg.connect(db_url) as conn:  # paused after the router routed the copy below
        conn.execute("UPDATE subscriptions SET state = 'PAUSED', paused_reason = 'vacation' WHERE id = 'sub_a'")
    order = _order(1, "sub_a")
    await harness.route(order)
    end = await eventually(lambda: harness.terminal(order.client_order_id), timeout_s=15)
    assert (end.type, end.reason) == (epb.ORDER_EVENT_TYPE_REJECTED, INACTIVE), end
    assert order.client_order_id not in harness.fake.post_counts()
    assert rows(db_url, "SELECT state, reason FROM orders WHERE client_order_id = %s", order.client_order_id) == [
        ("REJECTED", INACTIVE)]
    await eventually(lambda: rows(db_url, "SELECT 1 FROM order_pending WHERE client_order_id = %s",
                                  order.client_order_id) == [], timeout_s=15)
    # resumed, the next copy is sent
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE subscriptions SET state = 'ACTIVE', paused_reason = '' WHERE id = 'sub_a'")
    again = _order(2, "sub_a", leader_trade_id="lt_2")
    await harness.route(again)
    await eventually(lambda: harness.all_terminal([again]), timeout_s=15)
    assert harness.fake.post_counts().get(again.client_order_id) == 1
