"""A venue answer whose average price is no price (negative, above 1, huge, tiny; it still parses) books its fill all
the same: at the answer's own USD amount when it gives a plausible one, else at the order's limit price (a BUY's
dearest, a SELL's cheapest), never a crash of the booking that would leave the order given up and taken up again
for ever."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.decimals import parse_decimal
from services.executor import order_runner
from services.executor.domain import order_lifecycle as lc
from services.executor.domain import venue_orders as v
from services.executor.domain.fill_math import fill_booking, fill_increment
from tests.executor.scripted_venue import ScriptedVenue, final_life, prepared, runner
from tradingtools.common.v1 import common_pb2 as cpb

D = Decimal
SELL_100: dict[str, Any] = {"size": "100", "amount_usd": ""}
ABSURD = ["1e25", "-1e25", "1E+30", "-0.5", "1.5", "9.99e29", "1e-30", "-1e-30", "123456789012345678901234567890"]


@pytest.mark.parametrize("avg", ["1e25", "-3", "1e-30"])
async def test_a_filled_answer_with_an_absurd_avg_price_is_booked(monkeypatch: pytest.MonkeyPatch, avg: str) -> None:
    monkeypatch.setattr(order_runner, "ERROR_BACKOFF_S", 0.001)  # the runner's pauses after an error, shortened
    answer = v.VenueOrder("io_1", "co_test00001", "confirmed", D("20"), parse_decimal(avg))
    venue = ScriptedVenue([answer], [answer] * 50)
    r, journal = runner(venue)
    given_up: list[str] = []
    r.on_give_up = given_up.append
    p = prepared()
    r.start(p.ticket, p.life)
    last = await final_life(journal, p.ticket.client_order_id, timeout_s=3.0)
    await asyncio.sleep(0)
    assert (last.state, last.filled_size, given_up) == (lc.State.FILLED, D("20"), [])
    [booking] = [c.booking for c in journal.written if c.booking is not None]
    assert p.ticket.request is not None
    assert (booking.size, booking.price) == (D("20"), p.ticket.request.limit_price)


def _booked(side: int, avg: Decimal, *, before: tuple[str, str] = ("0", "0"), filled: str = "20",
            making: str = "0", taking: str = "0") -> tuple[Decimal, Decimal, Decimal]:
    p = prepared(side=side, **(SELL_100 if side == cpb.SIDE_SELL else {}))
    old = lc.OrderLife(p.ticket.client_order_id, lc.State.PLACED, "io_1", filled_size=D(before[0]),
                       avg_price=D(before[1]))
    new = lc.OrderLife(p.ticket.client_order_id, lc.State.FILLED, "io_1", filled_size=D(filled), avg_price=avg)
    order = v.VenueOrder("io_1", p.ticket.client_order_id, "confirmed", D(filled), avg, D(making), D(taking))
    booking = fill_booking(p.ticket, old, new, order, 0)
    assert booking is not None and p.ticket.request is not None
    return booking.price, booking.notional, p.ticket.request.limit_price


@pytest.mark.parametrize("side", [cpb.SIDE_BUY, cpb.SIDE_SELL], ids=["BUY", "SELL"])
@pytest.mark.parametrize("avg", ABSURD)
def test_an_absurd_avg_price_books_the_limit_price(side: int, avg: str) -> None:
    price, notional, limit = _booked(side, parse_decimal(avg))
    assert (price, notional) == (limit, 20 * limit)


@pytest.mark.parametrize("avg", ABSURD)
def test_an_absurd_avg_price_books_the_answers_own_usd_amount_when_plausible(avg: str) -> None:
    price, notional, _ = _booked(cpb.SIDE_BUY, parse_decimal(avg), making="9.8")
    assert (price, notional) == (D("0.49"), D("9.8"))


@pytest.mark.parametrize("avg", ABSURD)
def test_an_absurd_earlier_reading_does_not_price_the_next_fill(avg: str) -> None:
    price, _, limit = _booked(cpb.SIDE_BUY, D("0.5"), before=("10", avg))
    assert price == limit


@pytest.mark.parametrize(("old", "new", "expected"), [
    ((D("10"), D("0.5")), (D("10.00000001"), D("0.5000001")), (D("0.00000001"), D("1"))),  # rounding above 1
    ((D("10"), D("0.5")), (D("10.00000001"), D("0.4999999")), (D("0.00000001"), D("0"))),  # and below 0
    ((D("0"), D("0")), (D("20"), D("1e25")), (D("20"), D("0.51"))),  # no price: the fallback
    ((D("10"), D("-1")), (D("20"), D("0.5")), (D("10"), D("0.51"))),
])
def test_fill_increment_clamps_rounding_and_falls_back_when_an_average_is_no_price(
        old: tuple[Decimal, Decimal], new: tuple[Decimal, Decimal], expected: tuple[Decimal, Decimal]) -> None:
    assert fill_increment(*old, *new, fallback=D("0.51")) == expected


@pytest.mark.parametrize("text", ["NaN", "-NaN", "sNaN", "Infinity", "-Infinity", "inf", "1e31", "1e-31", "1e999"])
def test_what_parse_decimal_refuses_never_reaches_a_booking(text: str) -> None:
    with pytest.raises(ValueError):
        parse_decimal(text)


def _parseable(mantissa: int, exponent: int) -> Decimal | None:
    try:
        return parse_decimal(f"{mantissa}e{exponent}")
    except ValueError:
        return None


PARSEABLE = st.builds(_parseable, st.integers(-(10 ** 30), 10 ** 30), st.integers(-62, 32)).filter(
    lambda d: d is not None)


@settings(max_examples=300, deadline=None)
@given(side=st.sampled_from([cpb.SIDE_BUY, cpb.SIDE_SELL]), old_avg=PARSEABLE, new_avg=PARSEABLE,
       old_size=PARSEABLE, inc=PARSEABLE, making=PARSEABLE)
def test_any_parseable_answer_books_a_price_in_0_1(side: int, old_avg: Decimal, new_avg: Decimal, old_size: Decimal,
                                                   inc: Decimal, making: Decimal) -> None:
    old_size, inc = abs(old_size), abs(inc)
    if inc == 0:
        return
    p = prepared(side=side, **(SELL_100 if side == cpb.SIDE_SELL else {}))
    coid = p.ticket.client_order_id
    old = lc.OrderLife(coid, lc.State.PARTIALLY_FILLED, "io_1", filled_size=old_size, avg_price=old_avg)
    new = lc.OrderLife(coid, lc.State.FILLED, "io_1", filled_size=old_size + inc, avg_price=new_avg)
    order = v.VenueOrder("io_1", coid, "confirmed", old_size + inc, new_avg, making, making)
    booking = fill_booking(p.ticket, old, new, order, time.time_ns() // 1_000_000)
    if new.filled_size <= old_size:  # the increment is under the sum's precision: nothing more filled
        assert booking is None or booking.size == 0
        return
    assert booking is not None
    assert D(0) <= booking.price <= D(1)
    assert D(0) <= booking.notional <= booking.size
