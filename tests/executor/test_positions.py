"""Position arithmetic for fills."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.executor.domain import venue_orders as v
from services.executor.domain.position_math import Position, apply_fill

D = Decimal


@pytest.mark.parametrize(("pos", "buying", "size", "price", "fee", "after", "realized", "exposure", "opened",
                          "closed"), [
    (Position(), True, D("100"), D("0.5"), D("0"), Position(D("100"), D("0.5"), D("50.0")), D("0"), D("50.0"),
     True, False),
    # Fee in shares: 2 of 100 shares kept by the venue; cost is still 100 × 0.5.
    (Position(), True, D("100"), D("0.5"), D("2"), Position(D("98"), D("0.51020408"), D("50.0")), D("0"),
     D("50.0"), True, False),
    (Position(D("100"), D("0.5"), D("50")), True, D("100"), D("0.7"), D("0"),
     Position(D("200"), D("0.6"), D("120.0")), D("0"), D("70.0"), False, False),
    (Position(D("100"), D("0.5"), D("50")), False, D("40"), D("0.8"), D("0"),
     Position(D("60"), D("0.5"), D("30.0"), D("12.0")), D("12.0"), D("-20.0"), False, False),
    (Position(D("100"), D("0.5"), D("50")), False, D("100"), D("0.3"), D("0"),
     Position(D("0"), D("0"), D("0"), D("-20.0")), D("-20.0"), D("-50"), False, True),
])
def test_apply_fill(pos, buying, size, price, fee, after, realized, exposure, opened, closed) -> None:  # type: ignore[no-untyped-def]
    e = apply_fill(pos, buying=buying, size=size, price=price, fee_shares=fee)
    assert (e.position, e.realized_pnl_usd, e.exposure_delta_usd, e.opened, e.closed) == (
        after, realized, exposure, opened, closed)


def test_selling_more_than_held_never_goes_negative() -> None:
    e = apply_fill(Position(D("10"), D("0.5"), D("5")), buying=False, size=D("15"), price=D("0.6"))
    assert e.position.size == 0 and e.oversold == D("5") and e.realized_pnl_usd == D("1.0")
    e = apply_fill(Position(), buying=False, size=D("5"), price=D("0.6"))
    assert e.position == Position() and e.oversold == D("5") and not e.closed


@given(st.lists(st.tuples(st.booleans(), st.integers(1, 10_000), st.integers(1, 99)), max_size=30))
def test_size_never_negative_and_cost_tracks(fills) -> None:  # type: ignore[no-untyped-def]
    pos = Position()
    for buying, size, cents in fills:
        pos = apply_fill(pos, buying=buying, size=D(size), price=D(cents) / 100).position
        assert pos.size >= 0 and pos.cost_usd >= 0
        if pos.size == 0:
            assert pos.cost_usd == 0


def test_settle_applies_a_batch_in_order_and_aggregates_stats() -> None:
    from services.executor.domain.fill_math import Booking, settle
    from services.executor.domain.ticket import Ticket
    from tradingtools.common.v1 import common_pb2 as cpb
    from tradingtools.execution.v1 import execution_pb2 as epb

    def fill(coid: str, side: int, size: str, price: str, first: bool, sub: str = "sub_1") -> tuple[Ticket, Booking]:
        o = epb.Order(client_order_id=coid, origin=epb.ORDER_ORIGIN_COPY, subscription_id=sub, follower_wallet_id="w",
                      asset_id="a", side=side)
        return Ticket(o, "PAPER", None, 0), Booking(f"f_{coid}_{size}", D(size), D(price), D(size) * D(price), D(0),
                                                    first, 0)

    positions: dict[tuple[str, str], Position] = {}
    booked, stats, opened = settle(positions, [
        fill("c1", cpb.SIDE_BUY, "10", "0.5", True), fill("c1", cpb.SIDE_BUY, "10", "0.7", False),
        fill("c2", cpb.SIDE_SELL, "5", "0.8", True), fill("c3", cpb.SIDE_BUY, "1", "0.1", True, sub="")])
    assert positions[("w", "a")] == Position(D("16"), D("0.56875"), D("9.1"), D("1.0"))
    assert set(opened) == {("w", "a")} and [b.effect.opened for b in booked] == [True, False, False, False]
    assert (opened[("w", "a")].origin, opened[("w", "a")].subscription_id, opened[("w", "a")].venue) == (
        "COPY", "sub_1", "PAPER")
    s = stats["sub_1"]
    assert (s.copied, s.exposure, s.pnl) == (2, D("12") - D("3.0"), D("1.0")) and set(stats) == {"sub_1"}


@pytest.mark.parametrize(("answer", "buying", "fee"), [
    # the contract's answer: 100 shares filled and delivered, no fee
    (v.VenueOrder("io", "co", "matched", D("100"), D("0.5"), D("50"), D("100")), True, D("0")),
    # takingAmount (the shares received on a BUY) short of filledSize: the venue kept 2 shares as the fee
    (v.VenueOrder("io", "co", "matched", D("100"), D("0.5"), D("50"), D("98")), True, D("2")),
    (v.VenueOrder("io", "co", "matched", D("100"), D("0.5"), D("50"), D("98"), D("1.5")), True, D("1.5")),  # said
    (v.VenueOrder("io", "co", "live", D("0"), D("0"), D("0"), D("0")), True, D("0")),
    (v.VenueOrder("io", "co", "matched", D("100"), D("0.5"), D("50"), D("0")), True, D("0")),  # not reported
    # a SELL's takingAmount is the USD received, never a fee in shares
    (v.VenueOrder("io", "co", "matched", D("100"), D("0.5"), D("100"), D("50")), False, D("0")),
])
def test_fee_shares_of_a_venue_answer(answer: v.VenueOrder, buying: bool, fee: Decimal) -> None:
    assert v.fee_shares(answer, buying=buying) == fee
