"""Trace context of orders: each order's span (a child of the routed trade's context, made only when
spans are exported) and the ``traceparent`` its venue calls carry."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace

from common import telemetry
from services.executor.domain.ticket import Ticket

_tracer = trace.get_tracer("tradingtools.executor")

_PARENTS: dict[tuple[str, str], Any] = {}  # the orders of one fan-out share their parent: extract it once
_PARENTS_MAX = 256


def order_span(t: Ticket) -> trace.Span:
    """The order's span (a child of the routed trade's), or a non-recording one when spans are not exported."""
    if not telemetry.tracing_enabled():
        return trace.INVALID_SPAN
    tc = t.order.trace
    key = (tc.traceparent, tc.tracestate)
    parent = _PARENTS.get(key)
    if parent is None:
        if len(_PARENTS) >= _PARENTS_MAX:
            _PARENTS.clear()
        parent = _PARENTS[key] = telemetry.extract(tc)
    return _tracer.start_span("executor.order", context=parent, attributes={
        "order.client_order_id": t.client_order_id, "order.venue": t.venue, "order.side": t.side,
        "order.asset_id": t.order.asset_id})


def post_traceparent(span: trace.Span, t: Ticket) -> str:
    """The ``traceparent`` a venue call carries: the order's span, else the routed trade's context."""
    return _traceparent(span) or t.order.trace.traceparent


def _traceparent(span: trace.Span) -> str:
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return ""
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"
