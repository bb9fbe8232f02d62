"""A status word the contract does not list (``expired``, ``RETRYING``, ``canceled``...) never ends an order on a
guess: it implies no event, and the order is asked again. Such answers are counted from the start, and an order
answered only so for long enough (the placed orders' LOST window) raises VENUE_ANSWER_IMPLAUSIBLE once: before, it was
polled for ever, holding its reservation (and maybe a fill nobody booked), and no one heard of it."""

from __future__ import annotations

from decimal import Decimal

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from common.alerts import OUTBOX, Alert, AlertKind
from services.executor.adapters.insiders_api import parse_order
from services.executor.domain import order_lifecycle as lc
from services.executor.domain import venue_orders as v
from services.executor.domain.answer_policy import Unlisted, decide_status, unlisted_since, unlisted_too_long
from services.executor.unlisted_statuses import DEFAULT_ALERT_AFTER_S, UnlistedStatuses
from tests.executor.scripted_venue import prepared
from tests.helpers import counter_sums

D = Decimal
PLACED = lc.OrderLife("co_1", lc.State.PLACED, "io_1")
PARTIAL = lc.OrderLife("co_1", lc.State.PARTIALLY_FILLED, "io_1", filled_size=D("4"), avg_price=D("0.5"))
UNLISTED = ["canceled", "expired", "retrying", "RETRYING", "canceled_market_resolved", "", "live ", "unknown"]


def _o(status: str, size: str = "10", avg: str = "0.5") -> v.VenueOrder:
    return v.VenueOrder("io_1", "co_1", status, D(size), D(avg))


@pytest.mark.parametrize("word", UNLISTED)
@pytest.mark.parametrize("life", [PLACED, PARTIAL], ids=["placed", "partial"])
def test_an_unlisted_status_implies_nothing(life: lc.OrderLife, word: str) -> None:
    assert decide_status(life, _o(word)) == []


def test_only_an_unambiguous_spelling_is_read_as_a_listed_word() -> None:
    assert [v.canonical_status(w) for w in ("Canceled", " CANCELLED ", "LIVE", "expired", "RETRYING")] == [
        "cancelled", "cancelled", "live", "expired", "retrying"]
    assert all(v.canonical_status(w) == w for w in v.LISTED)


def test_a_streak_of_unlisted_words_keeps_its_start_and_ends_at_a_listed_word() -> None:
    first = unlisted_since(None, "expired", 1_000)
    assert first == Unlisted(1_000, "expired")
    second = unlisted_since(first, "retrying", 2_000)
    assert second == Unlisted(1_000, "retrying")
    assert unlisted_since(second, "live", 3_000) is None
    assert unlisted_since(None, "matched", 3_000) is None
    assert not unlisted_too_long(Unlisted(1_000, "x"), 1_999, after_s=1.0)
    assert unlisted_too_long(Unlisted(1_000, "x"), 2_000, after_s=1.0)


class Clock:
    def __init__(self) -> None:
        self.ms = 0

    def __call__(self) -> int:
        return self.ms


@pytest.fixture(autouse=True)
def empty_outbox() -> None:
    OUTBOX.take(len(OUTBOX.items))


def _alerts() -> list[Alert]:
    return [a for a in OUTBOX.take(len(OUTBOX.items)) if a.kind == AlertKind.VENUE_ANSWER_IMPLAUSIBLE]


def _counts(reader: InMemoryMetricReader) -> dict[tuple[tuple[str, str], ...], int]:
    return counter_sums(reader)["executor.unlisted_statuses"][4]


def test_unlisted_answers_are_counted_from_the_start_and_alert_once_an_order_waited_long_enough() -> None:
    reader, clock = InMemoryMetricReader(), Clock()
    meter = MeterProvider(metric_readers=[reader]).get_meter("tradingtools.executor")
    watch = UnlistedStatuses(["INSIDERS"], alert_after_s=300, clock_ms=clock, meter=meter)
    assert set(_counts(reader).values()) == {0} and len(_counts(reader)) == 3  # post, query, cancel: exported at 0
    t = prepared(1).ticket
    watch.seen(t, _o("matched"), "query")
    assert len(watch) == 0
    for ms in (1_000, 100_000, 300_999):  # unlisted from 1 s: not yet 300 s
        clock.ms = ms
        watch.seen(t, _o("expired"), "query")
    assert _alerts() == []
    clock.ms = 301_000
    watch.seen(t, _o("retrying", "7"), "query")
    [alert] = _alerts()
    assert (alert.key, alert.dedupe_id, alert.severity) == ("venue_answer_implausible:INSIDERS",
                                                            f"venue_status_unlisted:{t.client_order_id}", "CRITICAL")
    assert (alert.fields["status"], alert.fields["filled_size"], alert.fields["waited_s"]) == ("retrying", "7", "300")
    assert alert.fields["client_order_id"] == t.client_order_id and alert.fields["call"] == "query"
    clock.ms = 900_000
    watch.seen(t, _o("retrying"), "query")
    assert _alerts() == []  # once per order
    assert _counts(reader)[(("call", "query"), ("venue", "INSIDERS"))] == 5
    watch.forget(t.client_order_id)
    assert len(watch) == 0


def test_a_listed_word_in_between_starts_the_wait_again() -> None:
    clock = Clock()
    meter = MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("tradingtools.executor")
    watch = UnlistedStatuses(["INSIDERS"], alert_after_s=10, clock_ms=clock, meter=meter)
    t = prepared(2).ticket
    for ms, word in ((0, "expired"), (9_000, "live"), (10_000, "expired"), (19_999, "expired")):
        clock.ms = ms
        watch.seen(t, _o(word), "query")
    assert _alerts() == []
    clock.ms = 20_000
    watch.seen(t, _o("expired"), "cancel")
    [alert] = _alerts()
    assert alert.fields["call"] == "cancel"


def test_a_lost_window_of_zero_still_alerts_after_the_default() -> None:
    meter = MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("tradingtools.executor")
    assert UnlistedStatuses([], alert_after_s=0, meter=meter).alert_after_s == DEFAULT_ALERT_AFTER_S




def test_the_adapter_reads_canceled_as_cancelled_with_its_fill() -> None:
    order = parse_order(b'{"orderId": "io_1", "clientOrderId": "co_1", "status": "CANCELED", "filledSize": "4",'
                        b' "avgPrice": "0.5"}')
    assert isinstance(order, v.VenueOrder) and order.status == v.CANCELLED
    assert decide_status(PLACED, order) == [lc.OrderCancelled("VENUE_CANCELLED", D("4"), D("0.5"))]


@pytest.mark.parametrize("tail", [b'"status": "canceled"}', b'"status": "confirmed"}',
                                  b'"status": "cancelled", "filledSize": ""}'])
def test_the_adapter_reads_a_final_answer_without_filled_size_as_an_unlisted_word(tail: bytes) -> None:
    # read as filled 0 it would end a filled order unfilled: an unlisted word, so the order is asked again, counted,
    # and alerted after the LOST window (unlisted_statuses)
    order = parse_order(b'{"orderId": "io_1", "clientOrderId": "co_1", ' + tail)
    assert isinstance(order, v.VenueOrder) and order.status not in v.LISTED
    assert decide_status(PLACED, order) == []
