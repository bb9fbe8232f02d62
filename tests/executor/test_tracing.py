"""Order spans: children of the routed trade's context when spans are exported, skipped otherwise."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from common import telemetry
from services.executor import tracing
from services.executor.domain.ticket import INSIDERS, Ticket
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


def ticket(coid: str) -> Ticket:
    order = epb.Order(client_order_id=coid, asset_id="123", side=cpb.SIDE_BUY,
                      trace=cpb.TraceContext(traceparent=TRACEPARENT))
    return Ticket(order, INSIDERS, None, 0)


def test_without_exported_spans_the_post_carries_the_routed_trade_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telemetry, "_exporting", False)
    t = ticket("co_1")
    span = tracing.order_span(t)
    assert not span.is_recording()
    assert tracing.post_traceparent(span, t) == TRACEPARENT


def test_exported_order_spans_share_the_routed_trade_parent(monkeypatch: pytest.MonkeyPatch) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(telemetry, "_exporting", True)
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    monkeypatch.setattr(tracing, "_PARENTS", {})
    tickets = [ticket("co_1"), ticket("co_2")]
    spans = [tracing.order_span(t) for t in tickets]
    for s in spans:
        s.end()
    assert len(tracing._PARENTS) == 1  # the parent was extracted once for the fan-out
    finished = exporter.get_finished_spans()
    assert [s.attributes["order.client_order_id"] for s in finished if s.attributes] == ["co_1", "co_2"]
    for done in finished:
        assert done.parent is not None and done.context is not None
        assert f"{done.context.trace_id:032x}" == TRACE_ID and f"{done.parent.span_id:016x}" == PARENT_ID
    own = tracing.post_traceparent(spans[0], tickets[0])
    assert own.split("-")[1] == TRACE_ID and own.split("-")[2] == f"{spans[0].get_span_context().span_id:016x}"
    assert trace.INVALID_SPAN is not spans[0]
