"""The executor's order counters, kept as plain counts, export as counters added to per batch export."""

from __future__ import annotations

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from services.executor.domain.order_lifecycle import State
from services.executor.metrics import ExecutorMetrics
from tests.executor.test_observability import change
from tests.helpers import counter_sums
from tradingtools.execution.v1 import execution_pb2 as epb


def test_the_counters_export_as_counters_added_to_and_add_up_over_instances() -> None:
    expected, got = InMemoryMetricReader(), InMemoryMetricReader()
    reference = MeterProvider(metric_readers=[expected]).get_meter("tradingtools.executor")
    reference.create_counter("executor.orders", description="Orders ended, by final state, reason, venue and origin"
                             ).add(3, {"state": "FILLED", "reason": "", "venue": "INSIDERS", "origin": "COPY"})
    reference.create_counter("executor.first_fills", description="Orders filled at least in part (copies made), by "
                                                                 "venue and origin"
                             ).add(3, {"venue": "INSIDERS", "origin": "COPY"})
    meter = MeterProvider(metric_readers=[got]).get_meter("tradingtools.executor")
    first, second = ExecutorMetrics(meter), ExecutorMetrics(meter)
    first.observe([change("co_0", State.PLACED, epb.ORDER_EVENT_TYPE_PLACED)])
    assert counter_sums(got) == {}  # nothing ended or filled yet: no series
    first.observe([change(f"co_{i}", State.FILLED, epb.ORDER_EVENT_TYPE_FILLED, booking=True) for i in range(2)])
    second.observe([change("co_2", State.FILLED, epb.ORDER_EVENT_TYPE_FILLED, booking=True)])
    assert counter_sums(got) == counter_sums(expected)
