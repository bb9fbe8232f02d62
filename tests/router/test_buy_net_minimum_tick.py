"""The router's fee-counting BUY minimum is one the executor takes at its own limit: the leader's price moved by the
slippage tolerance and snapped down to the tick, where the fee takes more of a share (pure)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from common.takerfee import TakerFee
from services.executor.domain.pricing import buy_minimum_refusal, slipped_limit
from services.router.domain.sizing import net_buy_minimum

D = Decimal


@pytest.mark.parametrize(("price", "bps", "tick", "fee"), [
    (D("0.925"), 200, D("0.001"), TakerFee(D("0.07"), D(1))),  # 0.9435 snaps to 0.943: $4.74 kept 4.99997 there
    (D("0.50"), 200, D("0.01"), TakerFee(D("0.1"), D(1))),
    (D("0.31"), 150, D("0.01"), TakerFee(D("0.25"), D(2))),
    (D("0.0421"), 300, D("0.0001"), TakerFee(D("0.1"), D(1))),
])
def test_the_routers_fee_minimum_is_one_the_executor_takes_at_its_own_limit(price: Decimal, bps: int, tick: Decimal,
                                                                            fee: TakerFee) -> None:
    minimum = D(5)
    net = net_buy_minimum(price, minimum, D(1), bps, fee, tick)
    assert net is not None
    limit = slipped_limit(price, bps, tick, True)
    assert net.price == limit
    assert buy_minimum_refusal(net.usd, limit, minimum, fee) is None
