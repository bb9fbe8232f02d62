"""JSON log lines carry the trace id of the work they log (a container's stdout joins them to traces)."""

from __future__ import annotations

import io
import logging
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider

from common.logs import JsonFormatter, setup_logging

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


def _line(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    record = logging.getLogger("t").makeRecord("t", logging.INFO, __file__, 1, "copied %s", ("x",), None,
                                               extra=extra)
    out: dict[str, Any] = orjson.loads(JsonFormatter("router").format(record))
    return out


@pytest.mark.parametrize(("extra", "expected"), [
    (None, {}),
    ({"traceparent": f"00-{TRACE}-{SPAN}-01"}, {"trace_id": TRACE, "span_id": SPAN}),
    ({"traceparent": f"00-{'0' * 32}-{SPAN}-01"}, {}),  # the invalid all-zero trace id
    ({"traceparent": "not-a-traceparent"}, {}),
    ({"traceparent": ""}, {}),
    ({"trace_id": "given", "traceparent": f"00-{TRACE}-{SPAN}-01"}, {"trace_id": "given"}),
])
def test_a_line_names_the_trace_its_event_carries(extra: dict[str, Any] | None, expected: dict[str, str]) -> None:
    line = _line(extra)
    assert {k: line[k] for k in ("trace_id", "span_id") if k in line} == expected
    assert line["msg"] == "copied x" and line["service"] == "router" and line["level"] == "info"


def test_a_line_logged_inside_a_span_names_that_span() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("submit") as span:
        line = _line()
    ctx = span.get_span_context()
    assert line["trace_id"] == f"{ctx.trace_id:032x}" and line["span_id"] == f"{ctx.span_id:016x}"
    assert "trace_id" not in _line()  # outside the span: none


def test_setup_logging_writes_json_lines_to_the_stream_it_is_given() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    out = io.StringIO()
    try:
        setup_logging("mcp", stream=out)
        logging.getLogger("x").warning("hello", extra={"traceparent": f"00-{TRACE}-{SPAN}-01"})
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    line = orjson.loads(out.getvalue().splitlines()[-1])
    assert line["service"] == "mcp" and line["msg"] == "hello" and line["trace_id"] == TRACE
