"""Prometheus metrics of a service: its OpenTelemetry instruments and its process, served at ``/metrics``.

The services record through OpenTelemetry instruments (``opentelemetry.metrics.get_meter(...)``); when the
endpoint is on, :func:`common.telemetry.setup_telemetry` adds the OpenTelemetry Prometheus reader to the meter
provider and :func:`serve` starts the Prometheus client's HTTP server on a thread of its own. A scrape collects
there: the event loop only records. Every series carries ``component`` (ingest, router, executor, guard, control),
whatever labels the scraper adds; OpenTelemetry's dots become underscores, counters end in ``_total`` and
histograms in their unit (``router.skips`` → ``router_skips_total``, ``executor.copy_latency`` in ms →
``executor_copy_latency_milliseconds_bucket``). Process CPU, memory, file descriptors and start time come from
the Prometheus client's process collector (``process_cpu_seconds_total``, ``process_resident_memory_bytes``...).

Labels are of bounded cardinality: reasons, states, feeds, venues, streams, consumers; never a wallet,
subscription, asset or order id.

| variable | default | meaning |
|---|---|---|
| ``TT_METRICS_ENABLED`` | true | false: no endpoint and nothing collected (the instruments record into nothing) |
| ``TT_<SERVICE>_METRICS_HOST`` | 127.0.0.1 | bind address of ``/metrics`` (plain HTTP, no token: for Prometheus only) |
| ``TT_<SERVICE>_METRICS_PORT`` | 9161 ingest, 9162 router, 9163 executor, 9164 guard, 9165 control | (0: any port) |
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from common.config import env_bool, env_port, env_str

log = logging.getLogger(__name__)

METRICS_PORTS = {"ingest": 9161, "router": 9162, "executor": 9163, "guard": 9164, "control": 9165}
COMPONENT_LABEL = "component"

# Bucket bounds (ms) of every histogram recorded in ms: copy hops of a fraction of a millisecond up to the
# minutes a feed can lag or an order can wait at an open breaker.
LATENCY_BOUNDS_MS = (0.25, 0.5, 1, 2, 3, 4, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 250, 500, 1000, 2500, 5000,
                     10_000, 30_000, 60_000, 300_000)


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """Whether and where a service serves ``/metrics`` (off unless read from the environment)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None, service: str) -> MetricsSettings:
        """``TT_METRICS_ENABLED``, ``TT_<SERVICE>_METRICS_HOST`` and ``TT_<SERVICE>_METRICS_PORT``."""
        env = os.environ if env is None else env
        upper = service.upper()
        return cls(enabled=env_bool(env, "TT_METRICS_ENABLED", True),
                   host=env_str(env, f"TT_{upper}_METRICS_HOST", "127.0.0.1"),
                   port=metrics_port(env, service))


def metrics_port(env: Mapping[str, str], service: str) -> int:
    """``TT_<SERVICE>_METRICS_PORT`` (default :data:`METRICS_PORTS`)."""
    return env_port(env, f"TT_{service.upper()}_METRICS_PORT", METRICS_PORTS.get(service, 0))


METRICS_OFF = MetricsSettings()


@dataclass
class MetricsEndpoint:
    """A running ``/metrics`` server."""

    host: str
    port: int
    server: Any

    @property
    def url(self) -> str:
        """Where to scrape."""
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


class _Labelled:
    """A Prometheus collector whose samples all get one more constant label."""

    def __init__(self, inner: Any, name: str, value: str) -> None:
        self.inner, self.name, self.value = inner, name, value

    def collect(self) -> Iterable[Any]:
        for family in self.inner.collect():
            family.samples = [s._replace(labels={**s.labels, self.name: self.value}) for s in family.samples]
            yield family


def prometheus_reader(service: str) -> tuple[Any, Any]:
    """The OpenTelemetry reader exporting into a new Prometheus registry (with the process and GC collectors),
    every series labelled ``component=service``: ``(reader, registry)``."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import CollectorRegistry, gc_collector, process_collector

    registry = CollectorRegistry(auto_describe=False)
    for collector in (process_collector.ProcessCollector(registry=None),
                      gc_collector.GCCollector(registry=CollectorRegistry())):  # (it cannot go unregistered)
        registry.register(_Labelled(collector, COMPONENT_LABEL, service))
    reader = PrometheusMetricReader(disable_target_info=True, scope_info_enabled=False, registry=registry,
                                    resource_attribute_filter=lambda key: key == COMPONENT_LABEL)
    return reader, registry


def serve(registry: Any, settings: MetricsSettings, service: str) -> MetricsEndpoint | None:
    """Serve ``registry`` at ``http://host:port/metrics`` on a daemon thread; None (logged) when the port
    cannot be bound: the service runs on without its metrics rather than not at all."""
    from prometheus_client import start_http_server

    try:
        server, _thread = start_http_server(settings.port, addr=settings.host, registry=registry)
    except OSError as exc:
        log.error("metrics endpoint not started", extra={"service": service, "host": settings.host,
                                                           "port": settings.port, "error": str(exc)})
        return None
    endpoint = MetricsEndpoint(settings.host, int(server.server_port), server)
    log.info("metrics endpoint started", extra={"service": service, "url": endpoint.url})
    return endpoint
