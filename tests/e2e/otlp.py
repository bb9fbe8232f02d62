"""An in-memory OpenTelemetry collector: the OTLP/gRPC trace (and metrics) services on 127.0.0.1:0, keeping the
spans the services export so a test can follow one trace across processes."""

from __future__ import annotations

import threading
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


@dataclass(frozen=True, slots=True)
class Span:
    """One exported span, ids in hex."""

    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, sink: Collector) -> None:
        self.sink = sink

    def Export(self, request: Any, context: Any) -> Any:
        for rs in request.resource_spans:
            attrs = {a.key: _value(a.value) for a in rs.resource.attributes}
            service = str(attrs.get("service.name", ""))
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.sink.add(Span(service, s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(),
                                       {a.key: _value(a.value) for a in s.attributes}))
        return trace_service_pb2.ExportTraceServiceResponse()


class _Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def Export(self, request: Any, context: Any) -> Any:
        return metrics_service_pb2.ExportMetricsServiceResponse()


class Collector:
    """Start with :meth:`start`; ``spans`` grows as the services export."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Traces(self), self._server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_Metrics(), self._server)
        self.port = 0

    def start(self) -> Collector:
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(1.0)

    @property
    def endpoint(self) -> str:
        """``OTEL_EXPORTER_OTLP_ENDPOINT`` for the services."""
        return f"http://127.0.0.1:{self.port}"

    def add(self, span: Span) -> None:
        with self._lock:
            self.spans.append(span)

    def by_id(self) -> dict[str, Span]:
        """The spans so far by span id."""
        with self._lock:
            return {s.span_id: s for s in self.spans}
