"""An order answered many times with cumulative amounts (pure, property based): the fills booked add up to the
venue's last reading exactly — shares, USD (makingAmount for a BUY, takingAmount for a SELL) and fee shares —
however many partial readings came before and however the rounded average price moved between them."""

from __future__ import annotations

from decimal import Decimal as D

from hypothesis import given, settings
from hypothesis import strategies as st

from services.executor.domain import venue_orders as v
from services.executor.domain.fill_math import fill_booking
from services.executor.domain.order_lifecycle import OrderLife, State
from services.executor.domain.ticket import INSIDERS, Ticket
from tests.executor.conftest import make_order
from tradingtools.common.v1 import common_pb2 as cpb

MICRO = D("0.000001")  # USDC base unit


def _ticket(buying: bool) -> Ticket:
    o = make_order(1, side=cpb.SIDE_BUY if buying else cpb.SIDE_SELL)
    req = v.PlaceRequest(o.client_order_id, "u", "w", "0x", "a", "BUY" if buying else "SELL", "GTC", None, D(1000),
                         D("0.99") if buying else D("0.01"))
    return Ticket(o, INSIDERS, req, 0)


READINGS = st.lists(st.tuples(st.integers(1, 500_000), st.integers(1, 99), st.integers(0, 300)),
                    min_size=1, max_size=100)


@settings(max_examples=200)
@given(st.booleans(), READINGS)
def test_fills_booked_add_up_to_the_last_cumulative_reading(buying: bool,
                                                             readings: list[tuple[int, int, int]]) -> None:
    t = _ticket(buying)
    life = OrderLife(t.client_order_id, State.PLACED)
    filled = usd = fee = D(0)
    booked_size = booked_usd = booked_fee = D(0)
    for hundredths, cents, fee_bps in readings:
        inc = D(hundredths) / 100
        filled += inc
        usd += (inc * cents / 100).quantize(MICRO)
        if buying:
            fee += (inc * fee_bps / 10_000).quantize(MICRO)
        avg = (usd / filled).quantize(D("0.0001"))
        order = v.VenueOrder("io", t.client_order_id, v.LIVE, filled, avg, usd if buying else filled,
                             filled - fee if buying else usd)
        new = OrderLife(t.client_order_id, State.PARTIALLY_FILLED, filled_size=filled, avg_price=avg)
        b = fill_booking(t, life, new, order, 0)
        life = new
        assert b is not None and b.size == inc and 0 <= b.price <= 1
        booked_size, booked_usd, booked_fee = booked_size + b.size, booked_usd + b.notional, booked_fee + b.fee_shares
    assert (booked_size, booked_usd, booked_fee) == (filled, usd, fee)
