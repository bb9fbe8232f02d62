"""A paper SELL pays the paper fee as a live SELL pays the venue's: taken from the USD it receives (``takingAmount``),
the rate of a BUY's fee in shares, so a round trip costs the fee both ways."""

from __future__ import annotations

from decimal import Decimal

from services.executor.domain import venue_orders as v
from services.executor.domain.fill_math import fill_booking
from services.executor.domain.order_lifecycle import OrderLife, State
from services.executor.domain.paper_book import simulate
from services.executor.domain.ticket import PAPER, Ticket
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

D = Decimal
BIDS = ((D("0.49"), D("10")), (D("0.47"), D("40")))
ASKS = ((D("0.50"), D("100")),)


def _sell(size: str, fee_bps: str) -> v.VenueOrder:
    req = v.PlaceRequest("co_s", "u", "w", "0xp", "tok", "SELL", "FAK", None, D(size), D("0.47"))
    o = simulate(req, BIDS, ASKS, D(fee_bps))[0]
    assert isinstance(o, v.VenueOrder)
    return o


def test_a_paper_sell_receives_its_proceeds_less_the_fee() -> None:
    """30 shares: 10 @ 0.49 + 20 @ 0.47 = $14.30; 1 % fee: $0.143 (before: $14.30 received, no fee)."""
    o = _sell("30", "100")
    assert (o.filled_size, o.making_amount, o.avg_price, o.fee_shares) == (D("30"), D("30"), D("0.47666667"), D(0))
    assert o.taking_amount == D("14.157")


def test_a_paper_sell_without_a_fee_receives_its_proceeds_whole() -> None:
    assert _sell("30", "0").taking_amount == D("14.30")


def test_the_paper_sell_fee_is_booked_off_its_proceeds() -> None:
    """The booking path books a SELL's USD from ``takingAmount``: the net proceeds, as for a live SELL."""
    o = _sell("30", "100")
    req = v.PlaceRequest("co_s", "u", "w", "0xp", "tok", "SELL", "FAK", None, D("30"), D("0.47"))
    t = Ticket(epb.Order(client_order_id="co_s", side=cpb.SIDE_SELL), PAPER, req, 0)
    before = OrderLife("co_s", State.PLACED)
    after = OrderLife("co_s", State.FILLED, filled_size=o.filled_size, avg_price=o.avg_price)
    booking = fill_booking(t, before, after, o, 0)
    assert booking is not None and (booking.size, booking.notional) == (D("30"), D("14.157"))


def test_a_paper_round_trip_pays_the_fee_both_ways() -> None:
    """$10 bought at 0.50 with a 1 % fee: 19.80 shares kept; sold at 0.50: $9.801 back."""
    buy = v.PlaceRequest("co_b", "u", "w", "0xp", "tok", "BUY", "FAK", D("10"), None, D("0.50"))
    bought = simulate(buy, BIDS, ASKS, D("100"))[0]
    assert isinstance(bought, v.VenueOrder) and bought.taking_amount == D("19.80")
    sell = v.PlaceRequest("co_s", "u", "w", "0xp", "tok", "SELL", "FAK", None, bought.taking_amount, D("0.50"))
    sold = simulate(sell, ((D("0.50"), D("100")),), ASKS, D("100"))[0]
    assert isinstance(sold, v.VenueOrder) and sold.taking_amount == D("9.801")
