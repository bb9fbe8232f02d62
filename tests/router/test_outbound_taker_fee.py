"""The router hands the market's taker fee to the executor with each copy (``Order.taker_fee_rate`` /
``taker_fee_exponent``): the executor checks the market minimum at its own limit, net of the fee."""

from __future__ import annotations

from decimal import Decimal

import pytest

from common.routed import expand
from common.takerfee import TakerFee
from services.router.domain.model import OrderIntent, Side
from services.router.outbound import build_routed, order_template
from tests.router.factories import ASSET, follower, market
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.market.v1 import market_pb2 as mpb

D = Decimal


@pytest.mark.parametrize(("fee", "rate", "exponent"), [
    (TakerFee(D("0.1"), D(1)), "0.1", "1"),
    (TakerFee(D("0.25"), D(2)), "0.25", "2"),
    (TakerFee(D(0), D(1)), "0", "1"),  # a fee-free market: known to charge nothing
    (None, "", ""),  # no fee known
])
def test_copies_carry_the_markets_taker_fee(fee: TakerFee | None, rate: str, exponent: str) -> None:
    ev = mpb.LeaderTradeEvent(id="lt_1", asset_id=ASSET, condition_id="0x" + "ab" * 32, side=cpb.SIDE_BUY,
                              price="0.5", size="10", outcome="Yes")
    f = follower()
    intent = OrderIntent(f.subscription_id, f.follower_wallet_id, "co_1", Side.BUY, D("2.69"), None, 200)
    routed = build_routed(ev, [intent], {f.subscription_id: f},
                          order_template(ev, market(taker_fee=fee), 1, cpb.TraceContext()))
    [o] = expand(routed).orders
    assert (o.taker_fee_rate, o.taker_fee_exponent, o.min_order_size) == (rate, exponent, "5")


def test_an_unknown_market_carries_no_fee() -> None:
    ev = mpb.LeaderTradeEvent(id="lt_1", asset_id=ASSET, side=cpb.SIDE_BUY, price="0.5")
    o = order_template(ev, None, 1, cpb.TraceContext())
    assert (o.taker_fee_rate, o.taker_fee_exponent, o.min_order_size) == ("", "", "")
