"""The executor's metrics and alerts: orders counted once by final state with the copy's stages timed, the
ORDER_LOST alert, and the breaker's alerts on opening and closing (not on a failed probe's re-opening)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from common.alerts import OUTBOX, Alert
from services.executor.adapters.breaker_gate import BreakerGate
from services.executor.adapters.order_store import Change
from services.executor.domain import breaker as br
from services.executor.domain.fill_math import Booking
from services.executor.domain.order_lifecycle import OrderLife, State
from services.executor.domain.ticket import INSIDERS, Ticket
from services.executor.metrics import ExecutorMetrics, observe_all
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

MS = 1_000_000
FRAME_NS = 1_790_000_000_000 * MS


def change(coid: str, state: State, event: int | None, *, booking: bool = False, reason: str = "",
           posted: bool = True) -> Change:
    order = epb.Order(client_order_id=coid, side=cpb.SIDE_BUY, origin=epb.ORDER_ORIGIN_COPY,
                      follower_wallet_id="w_1", received_time_ns=FRAME_NS, routed_time_ns=FRAME_NS + 1 * MS)
    t = Ticket(order, INSIDERS, None, FRAME_NS, post_sent_ns=FRAME_NS + 3 * MS if posted else 0)
    ev = None if event is None else epb.OrderEvent(type=event, received_time_ns=FRAME_NS + 10 * MS)
    fill = Booking("f1", Decimal(1), Decimal("0.5"), Decimal("0.5"), Decimal(0), True, 0) if booking else None
    return Change(t, OrderLife(coid, state, reason=reason), ev, fill)


def points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    return {m.name: list(m.data.data_points) for rm in data.resource_metrics for sm in rm.scope_metrics
            for m in sm.metrics}


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture(autouse=True)
def no_alerts_before() -> None:
    OUTBOX.take(len(OUTBOX.items))


def alerts() -> list[Alert]:
    return OUTBOX.take(len(OUTBOX.items))


def test_orders_are_counted_once_at_their_end_with_the_copy_stages(reader: InMemoryMetricReader) -> None:
    m = ExecutorMetrics(MeterProvider(metric_readers=[reader]).get_meter("t"))
    m.observe([change("co_1", State.PLACED, epb.ORDER_EVENT_TYPE_PLACED),
               change("co_1", State.FILLED, epb.ORDER_EVENT_TYPE_FILLED, booking=True),
               change("co_2", State.REJECTED, epb.ORDER_EVENT_TYPE_REJECTED, reason="STALE_ORDER", posted=False),
               change("co_3", State.SUBMITTING, None)])
    got = points(reader)
    orders = {(p.attributes["state"], p.attributes["reason"]): p.value for p in got["executor.orders"]}
    assert orders == {("FILLED", ""): 1, ("REJECTED", "STALE_ORDER"): 1}
    assert {p.attributes["origin"]: p.value for p in got["executor.first_fills"]} == {"COPY": 1}
    for name, ms in (("executor.routed_to_post", 2.0), ("executor.copy_latency", 3.0),
                     ("executor.post_to_fill", 7.0), ("executor.frame_to_fill", 10.0)):
        [p] = got[name]
        assert (p.attributes, p.sum, p.count) == ({"venue": INSIDERS}, ms, 1), name
    assert not alerts()


def test_a_batch_counts_every_order_of_a_label_set(reader: InMemoryMetricReader) -> None:
    m = ExecutorMetrics(MeterProvider(metric_readers=[reader]).get_meter("t"))
    m.observe([change(f"co_{i}", State.FILLED, epb.ORDER_EVENT_TYPE_FILLED, booking=True) for i in range(3)]
              + [change("co_9", State.REJECTED, epb.ORDER_EVENT_TYPE_REJECTED, reason="STALE_ORDER", posted=False)])
    m.observe([change("co_5", State.FILLED, epb.ORDER_EVENT_TYPE_FILLED, booking=True)])
    got = points(reader)
    assert {(p.attributes["state"], p.attributes["reason"]): p.value for p in got["executor.orders"]} == {
        ("FILLED", ""): 4, ("REJECTED", "STALE_ORDER"): 1}
    assert {p.attributes["origin"]: p.value for p in got["executor.first_fills"]} == {"COPY": 4}
    [p] = got["executor.copy_latency"]
    assert p.count == 4  # a histogram still takes every order's own value


def test_a_lost_order_raises_one_critical_alert() -> None:
    lost = change("co_9", State.LOST, epb.ORDER_EVENT_TYPE_LOST, reason="NOT_FOUND")
    observe_all([ExecutorMetrics().observe, None])([lost, change("co_9", State.LOST, None)])
    [alert] = alerts()
    assert (alert.kind, alert.key, alert.dedupe_id, alert.severity) == (
        "ORDER_LOST", "order_lost:INSIDERS", "order_lost:co_9", "CRITICAL")
    assert alert.fields["reason"] == "NOT_FOUND" and alert.fields["follower_wallet_id"] == "w_1"


class _Redis:
    def __init__(self) -> None:
        self.h: dict[str, dict[str, str]] = {}

    async def hgetall(self, key: str) -> dict[str, str]:
        return self.h.get(key, {})

    async def hset(self, key: str, mapping: dict[str, str]) -> None:
        self.h[key] = dict(mapping)


def test_the_breaker_alerts_when_it_opens_and_when_it_closes_not_on_a_failed_probe() -> None:
    now = [1_000]
    gate = BreakerGate("insiders", _Redis(), br.BreakerConfig(threshold=2, open_ms=100), lambda: now[0])
    gate.record(True)
    assert not alerts()
    gate.record(True)  # OPEN
    [opened] = alerts()
    assert (opened.kind, opened.key, opened.severity, opened.fields["failures"]) == (
        "BREAKER_OPENED", "breaker:insiders", "CRITICAL", "2")
    now[0] += 100
    assert gate.admit().probe  # HALF_OPEN
    gate.record(True)  # the probe failed: OPEN again, no new alert
    assert not alerts()
    now[0] += 100
    assert gate.admit().probe
    gate.record(False)  # CLOSED
    [closed] = alerts()
    assert (closed.kind, closed.key, closed.severity) == ("BREAKER_CLOSED", "breaker:insiders", "INFO")
