"""An answer reporting more shares filled than the order could fill (a SELL's or a GTC BUY's size; a USD BUY's amount
at the lowest price any market trades at), or fewer than none, is not booked: it is read as an unreadable answer (the
order is settled by status query), counted and logged, and the order ends as a plausible answer says."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from services.executor import screening
from services.executor.domain import order_lifecycle as lc
from services.executor.domain import venue_orders as v
from services.executor.domain.answer_policy import IMPLAUSIBLE_FILL, classify, fill_bound, implausible_fill
from tests.executor.scripted_venue import ScriptedVenue, final_life, prepared, runner
from tests.helpers import eventually
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

D = Decimal
COID = "co_test00001"


class Counted:
    """Stands in for the screening's counter."""

    def __init__(self) -> None:
        self.adds: list[dict[str, str]] = []

    def add(self, n: int, labels: dict[str, str]) -> None:
        self.adds.extend([labels] * n)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Counted:
    c = Counted()
    monkeypatch.setattr(screening, "_IMPLAUSIBLE", c)
    return c


def _order(status: str, filled: str, avg: str, making: str = "0", taking: str = "0") -> v.VenueOrder:
    return v.VenueOrder("io_1", COID, status, D(filled), D(avg), D(making), D(taking))


def _booked(journal: Any) -> Decimal:
    return sum((c.booking.size for c in journal.written if c.booking is not None), D(0))


SELL: dict[str, Any] = {"side": cpb.SIDE_SELL, "size": "10", "amount_usd": ""}
# the venue's answer in base units (10^6 a share), then the real one
CASES = [
    pytest.param(SELL, _order("confirmed", "10000000", "0.49"), _order("confirmed", "10", "0.49"), id="SELL-10M"),
    pytest.param({}, _order("confirmed", "20000000", "0.5", "10", "20000000"), _order("confirmed", "20", "0.5", "10",
                                                                                      "20"), id="BUY-20M"),
    pytest.param(SELL, _order("confirmed", "-5", "0.49"), _order("confirmed", "10", "0.49"), id="SELL-negative"),
]


@pytest.mark.parametrize(("kw", "absurd", "real"), CASES)
async def test_an_implausible_answer_to_the_post_is_not_booked_and_the_order_ends_as_the_venue_says(
        counted: Counted, kw: dict[str, Any], absurd: v.VenueOrder, real: v.VenueOrder) -> None:
    venue = ScriptedVenue([absurd], [absurd, absurd, absurd, real])
    r, journal = runner(venue)
    p = prepared(**kw)
    r.start(p.ticket, p.life)
    last = await final_life(journal, p.ticket.client_order_id)
    assert (last.state, last.filled_size, _booked(journal)) == (lc.State.FILLED, real.filled_size, real.filled_size)
    unknown = [c.life for c in journal.written if c.life.state is lc.State.UNKNOWN]
    assert unknown and unknown[0].detail == IMPLAUSIBLE_FILL
    assert [a["call"] for a in counted.adds] == ["post", "query", "query", "query"]


async def test_an_implausible_status_of_a_placed_order_is_not_booked(counted: Counted) -> None:
    absurd, real = _order("confirmed", "10000000", "0.49"), _order("confirmed", "10", "0.49")
    venue = ScriptedVenue([_order("live", "0", "0")], [absurd, absurd, real])
    r, journal = runner(venue)
    p = prepared(**SELL)
    r.start(p.ticket, p.life)
    last = await final_life(journal, p.ticket.client_order_id)
    assert (last.state, last.filled_size, _booked(journal)) == (lc.State.FILLED, D("10"), D("10"))
    assert [a["call"] for a in counted.adds] == ["query", "query"]


async def test_an_order_answered_only_implausibly_is_never_booked(counted: Counted) -> None:
    absurd = _order("confirmed", "10000000", "0.49")
    gets: list[v.VenueResult] = [absurd] * 10_000
    venue = ScriptedVenue([absurd], gets)
    r, journal = runner(venue)
    p = prepared(**SELL)
    r.start(p.ticket, p.life)
    try:
        # the post and three polls answered implausibly: nothing booked, still asked, reservation held
        await eventually(lambda: len(counted.adds) > 3, message="the venue was not asked again")
        assert [c.life.state for c in journal.written] == [lc.State.UNKNOWN]
        assert _booked(journal) == 0
    finally:
        await r.close()


def _request(side: str, order_type: str = "FAK", *, amount: str | None = None,
             size: str | None = None) -> v.PlaceRequest:
    return v.PlaceRequest(COID, "u", "w", "0x0", "1", side, order_type, None if amount is None else D(amount),
                          None if size is None else D(size), D("0.5"))


@pytest.mark.parametrize(("request_", "bound"), [
    (_request("SELL", size="10"), D("10")),
    (_request("BUY", "GTC", size="40"), D("40")),
    (_request("BUY", amount="10"), D("100000")),  # 10 USD at 0.0001, the finest tick of any market
    (_request("BUY", "FOK", amount="2.5"), D("25000")),
    (None, None),
])
def test_fill_bound(request_: v.PlaceRequest | None, bound: Decimal | None) -> None:
    assert fill_bound(request_) == bound


@pytest.mark.parametrize(("request_", "filled", "implausible"), [
    (_request("SELL", size="10"), "10", False),
    (_request("SELL", size="10"), "10.000001", True),
    (_request("SELL", size="10"), "0", False),
    (_request("SELL", size="10"), "-0.01", True),
    (_request("BUY", "GTC", size="40"), "40", False),
    (_request("BUY", "GTC", size="40"), "41", True),
    (_request("BUY", amount="10"), "100000", False),
    (_request("BUY", amount="10"), "100000.01", True),
    (_request("BUY", amount="10"), "1e30", True),
    (None, "1e30", False),  # no request: nothing to bound it by (never an order the venue was sent)
])
def test_implausible_fill(request_: v.PlaceRequest | None, filled: str, implausible: bool) -> None:
    why = implausible_fill(request_, _order("confirmed", filled, "0.5"))
    assert bool(why) is implausible


def test_an_implausible_answer_reads_as_an_unreadable_one(counted: Counted) -> None:
    p = prepared(order_type=epb.ORDER_TYPE_FAK)
    screened = screening.screened(p.ticket, _order("confirmed", "1e9", "0.5"), "post")
    assert isinstance(screened, v.VenueError)
    c = classify(screened)
    assert (c.reason, c.uncertain) == (IMPLAUSIBLE_FILL, True)
    assert counted.adds == [{"venue": "INSIDERS", "call": "post"}]
    plausible = _order("confirmed", "20", "0.5")
    assert screening.screened(p.ticket, plausible, "post") is plausible
