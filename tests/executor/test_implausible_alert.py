"""A venue answer reporting a fill its order cannot have made raises VENUE_ANSWER_IMPLAUSIBLE: the order then waits
UNKNOWN, asked again about once a second and holding its reservation, until the venue answers plausibly, so a
person must look. Once per order: a stuck order does not alert at every answer."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from common.alerts import OUTBOX, Alert, AlertKind
from services.executor import screening
from services.executor.domain import venue_orders as v
from tests.executor.scripted_venue import ScriptedVenue, prepared, runner
from tests.helpers import eventually
from tradingtools.common.v1 import common_pb2 as cpb

D = Decimal


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(screening, "_ALERTED", screening.OncePer(screening.ALERTED_MAX))
    OUTBOX.take(len(OUTBOX.items))


def _alerts() -> list[Alert]:
    return [a for a in OUTBOX.take(len(OUTBOX.items)) if a.kind == AlertKind.VENUE_ANSWER_IMPLAUSIBLE]


def _absurd(coid: str) -> v.VenueOrder:
    return v.VenueOrder("io_1", coid, "confirmed", D("10000000"), D("0.49"), D(0), D(0))


def test_an_implausible_answer_raises_one_critical_alert_per_order() -> None:
    first, second = prepared(1, side=cpb.SIDE_SELL, size="10", amount_usd="").ticket, prepared(2).ticket
    for _ in range(3):
        screening.screened(first, _absurd(first.client_order_id), "query")
    screening.screened(second, _absurd(second.client_order_id), "post")
    a, b = _alerts()
    assert (a.key, a.dedupe_id, a.severity) == ("venue_answer_implausible:INSIDERS",
                                                f"venue_answer_implausible:{first.client_order_id}", "CRITICAL")
    assert a.fields["client_order_id"] == first.client_order_id and a.fields["call"] == "query"
    assert a.fields["venue_order_id"] == "io_1" and "filledSize" in a.fields["detail"]
    assert b.fields["client_order_id"] == second.client_order_id and b.fields["call"] == "post"


def test_a_plausible_answer_raises_nothing() -> None:
    t = prepared(3).ticket
    screening.screened(t, v.VenueOrder("io_1", t.client_order_id, "confirmed", D("20"), D("0.5"), D(10), D(20)),
                       "post")
    assert _alerts() == []


def test_the_orders_asked_about_most_recently_are_remembered() -> None:
    once = screening.OncePer(2)
    assert [once.first(k) for k in ("a", "b", "a", "c", "b", "a")] == [True, True, False, True, True, True]


async def test_an_order_stuck_on_implausible_answers_alerts_once() -> None:
    p = prepared(4)
    absurd = _absurd(p.ticket.client_order_id)
    venue = ScriptedVenue([absurd], [absurd] * 10_000)
    r, _journal = runner(venue)
    r.start(p.ticket, p.life)
    try:
        await eventually(lambda: venue.gets > 3, message="asked again and again")
        await asyncio.sleep(0.1)
        [alert] = _alerts()
        assert alert.fields["client_order_id"] == p.ticket.client_order_id
    finally:
        await r.close()
