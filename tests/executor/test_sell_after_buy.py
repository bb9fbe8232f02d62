"""A SELL sent with the fraction of the position to sell (the leader bought and sold before the copy BUY was
answered) waits until the wallet's earlier orders on the asset are answered, then sells that fraction of
what is held: the BUY's shares included, never sent when nothing is held."""

from __future__ import annotations

import time
from decimal import Decimal

import psycopg
import pytest

from common import reservations
from services.executor.sellsize import fraction_size
from tests.executor.conftest import ASSET, CONDITION, Harness, make_order
from tests.helpers import eventually
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration
D = Decimal
BIDS = [("0.49", "500"), ("0.48", "1000")]
ASKS = [("0.50", "100"), ("0.51", "1000")]


def _held(db_url: str, wallet: str) -> Decimal:
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT size FROM positions WHERE follower_wallet_id = %s AND asset_id = %s",
                           (wallet, ASSET)).fetchone()
    return row[0] if row else D(0)


def _sell(i: int, fraction: str, **kw: object) -> epb.Order:
    return make_order(i, side=cpb.SIDE_SELL, amount_usd="", sell_fraction=fraction, leader_trade_id=f"lt_s{i}",
                      routed_time_ns=time.time_ns(), **kw)


@pytest.mark.parametrize(("held", "fraction", "expected"), [
    (D("19.6"), D(1), D("19.6")),
    (D("20"), D("0.5"), D(10)),
    (D("100.257"), D("0.3333"), D("33.41")),  # rounded down to the share step
    (D(8), D("0.5"), D(8)),  # 4 would leave 4 < min 5: everything
    (D(3), D(1), ("SELL_BELOW_MARKET_MINIMUM",)),
    (D(100), D("0.01"), ("SELL_BELOW_MARKET_MINIMUM",)),
    (D("0.004"), D(1), ("NOTHING_HELD",)),  # dust
    (D(0), D("0.5"), ("NOTHING_HELD",)),
])
def test_fraction_size(held: Decimal, fraction: Decimal, expected: object) -> None:
    got = fraction_size(held, fraction, D(5))
    if isinstance(expected, tuple):
        assert isinstance(got, tuple) and got[0] == expected[0] and got[1]
    else:
        assert got == expected


async def test_a_sell_routed_while_the_buy_is_in_flight_sells_what_the_buy_bought(
        harness: Harness, db_url: str) -> None:
    await harness.set_book(ASSET, BIDS, ASKS)
    harness.fake.faults.post_delay_s = 0.3  # the BUY's answer takes a while: the SELL arrives meanwhile
    await harness.start_executor()
    buy = make_order(1, follower_wallet_id="w_flip", routed_time_ns=time.time_ns())
    sell = _sell(2, "1", follower_wallet_id="w_flip")
    # the router's claim of the SELL reserves no shares (its size is not known yet)
    assert await reservations.reserve(harness.redis, [reservations.Reservation(
        sell.client_order_id, "w_flip", reservations.SHARES, ASSET, 0, "lt_s2")]) == [True]
    await harness.route(buy)
    await harness.route(sell)
    done = await eventually(lambda: harness.terminal(sell.client_order_id), timeout_s=15)
    assert done.type == epb.ORDER_EVENT_TYPE_FILLED, (done.reason, done.detail)
    [buy_post] = harness.fake.posts_for(buy.client_order_id)
    [sell_post] = harness.fake.posts_for(sell.client_order_id)
    assert sell_post.arrival_ns >= buy_post.arrival_ns + 250_000_000  # sent after the BUY's answer
    bought = D(str((await harness.terminal(buy.client_order_id)).filled_size))  # type: ignore[union-attr]
    assert bought > 0
    assert sell_post.body is not None and D(sell_post.body["size"]) == bought  # the leader closed: all of it
    await eventually(lambda: _held(db_url, "w_flip") == 0)
    # sized, it reserved its shares (so the router's next SELL did not count them), then released them
    record = await harness.redis.get(reservations.ORDER_PREFIX + sell.client_order_id)
    assert record == f"-w_flip|sh:{ASSET}|{reservations.to_micro(bought)}|lt_s2"
    with psycopg.connect(db_url) as conn:
        size, limit, proto = conn.execute("SELECT size, limit_price, order_proto FROM orders"
                                          " WHERE client_order_id = %s", (sell.client_order_id,)).fetchone()
    assert size == bought and limit is not None and epb.Order.FromString(proto).size == sell_post.body["size"]


async def test_a_fraction_counts_the_shares_held_before_and_those_bought_meanwhile(
        harness: Harness, db_url: str) -> None:
    await harness.set_book(ASSET, BIDS, ASKS)
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price,"
                     " cost_usd) VALUES ('w_half', %s, %s, '0xa', 100, 0.4, 40)", (ASSET, CONDITION))
    harness.fake.faults.post_delay_s = 0.3
    await harness.start_executor()
    buy = make_order(3, follower_wallet_id="w_half", routed_time_ns=time.time_ns())
    sell = _sell(4, "0.5", follower_wallet_id="w_half")
    await harness.route(buy, sell)  # one routed batch: the BUY is started first
    done = await eventually(lambda: harness.terminal(sell.client_order_id), timeout_s=15)
    assert done.type == epb.ORDER_EVENT_TYPE_FILLED, (done.reason, done.detail)
    bought = D(str((await harness.terminal(buy.client_order_id)).filled_size))  # type: ignore[union-attr]
    [sell_post] = harness.fake.posts_for(sell.client_order_id)
    assert sell_post.body is not None
    assert D(sell_post.body["size"]) == ((100 + bought) / 2).quantize(D("0.01"), rounding="ROUND_DOWN")


async def test_nothing_bought_nothing_sold(harness: Harness) -> None:
    """The BUY was refused by the venue: the SELL finds nothing held and is refused without a POST."""
    await harness.set_book(ASSET, BIDS, ASKS)
    harness.fake.faults.reject_queue.append("INSUFFICIENT_BALANCE")
    harness.fake.faults.post_delay_s = 0.2
    await harness.start_executor()
    buy = make_order(5, follower_wallet_id="w_none", routed_time_ns=time.time_ns())
    sell = _sell(6, "1", follower_wallet_id="w_none")
    await harness.route(buy)
    await harness.route(sell)
    done = await eventually(lambda: harness.terminal(sell.client_order_id), timeout_s=15)
    assert (done.type, done.reason) == (epb.ORDER_EVENT_TYPE_REJECTED, "NOTHING_HELD")
    assert harness.fake.posts_for(sell.client_order_id) == []
    refused = await harness.terminal(buy.client_order_id)
    assert refused is not None and refused.type == epb.ORDER_EVENT_TYPE_REJECTED


async def test_a_sell_waiting_its_turn_survives_a_restart(harness: Harness, db_url: str) -> None:
    """Stopped while the SELL waits (its intent stored without a size): the next start sizes and sends it."""
    await harness.set_book(ASSET, BIDS, ASKS)
    harness.fake.faults.post_delay_s = 5.0  # the BUY stays unanswered while the executor stops
    running = await harness.start_executor()
    buy = make_order(7, follower_wallet_id="w_restart", routed_time_ns=time.time_ns())
    sell = _sell(8, "1", follower_wallet_id="w_restart")
    await harness.route(buy, sell)

    def stored(coid: str) -> str | None:
        with psycopg.connect(db_url) as conn:
            row = conn.execute("SELECT state FROM orders WHERE client_order_id = %s", (coid,)).fetchone()
        return row[0] if row else None

    await eventually(lambda: stored(sell.client_order_id) == "NEW" and harness.fake.posts_for(buy.client_order_id))
    await running.stop(0)
    harness.fake.faults.post_delay_s = 0.0
    await harness.start_executor()
    done = await eventually(lambda: harness.terminal(sell.client_order_id), timeout_s=20)
    assert done.type == epb.ORDER_EVENT_TYPE_FILLED, (done.reason, done.detail)
    bought = D(str((await harness.terminal(buy.client_order_id)).filled_size))  # type: ignore[union-attr]
    assert [D(p.body["size"]) for p in harness.fake.posts_for(sell.client_order_id) if p.body] == [bought]
