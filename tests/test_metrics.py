"""The metrics endpoint: settings from the environment, OpenTelemetry instruments and the process served at
/metrics in Prometheus' text format, every series labelled with its component."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from prometheus_client.parser import text_string_to_metric_families

from common.config import ConfigError
from common.metrics import LATENCY_BOUNDS_MS, MetricsEndpoint, MetricsSettings, prometheus_reader, serve
from common.telemetry import exemplar_filter


@pytest.mark.parametrize(("env", "expected"), [
    ({}, MetricsSettings(True, "127.0.0.1", 9162)),
    ({"TT_METRICS_ENABLED": "false"}, MetricsSettings(False, "127.0.0.1", 9162)),
    ({"TT_ROUTER_METRICS_HOST": "0.0.0.0", "TT_ROUTER_METRICS_PORT": "0"}, MetricsSettings(True, "0.0.0.0", 0)),
    ({"TT_INGEST_METRICS_PORT": "1"}, MetricsSettings(True, "127.0.0.1", 9162)),  # another service's
])
def test_settings_from_the_environment(env: dict[str, str], expected: MetricsSettings) -> None:
    assert MetricsSettings.from_env(env, "router") == expected


@pytest.mark.parametrize(("exporting", "env", "off"), [
    (False, {}, True),  # Prometheus only: nothing reads exemplars, none is sampled
    (True, {}, False),  # OTLP: the SDK's trace-based default
    (False, {"OTEL_METRICS_EXEMPLAR_FILTER": "always_on"}, False),  # the operator's choice stands
])
def test_exemplars_are_off_unless_exported_or_asked_for(exporting: bool, env: dict[str, str], off: bool) -> None:
    chosen = exemplar_filter(exporting, env)
    assert isinstance(chosen, AlwaysOffExemplarFilter) if off else chosen is None


@pytest.mark.parametrize(("service", "port"), [("ingest", 9161), ("router", 9162), ("executor", 9163),
                                                ("guard", 9164), ("control", 9165)])
def test_default_ports(service: str, port: int) -> None:
    assert MetricsSettings.from_env({}, service).port == port


@pytest.mark.parametrize("env", [{"TT_ROUTER_METRICS_PORT": "70000"}, {"TT_ROUTER_METRICS_PORT": "x"},
                                 {"TT_METRICS_ENABLED": "maybe"}])
def test_invalid_settings_name_the_variable(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=next(iter(env))):
        MetricsSettings.from_env(env, "router")


@pytest.fixture
def endpoint() -> Iterator[tuple[MeterProvider, MetricsEndpoint]]:
    reader, registry = prometheus_reader("router")
    provider = MeterProvider(resource=Resource.create({"component": "router", "service.name": "x"}),
                             metric_readers=[reader], views=[View(
                                 instrument_type=Histogram, instrument_unit="ms",
                                 aggregation=ExplicitBucketHistogramAggregation(LATENCY_BOUNDS_MS))])
    served = serve(registry, MetricsSettings(True, "127.0.0.1", 0), "router")
    assert served is not None
    yield provider, served
    served.close()
    provider.shutdown()


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name → [(labels, value)]."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(httpx.get(url, timeout=5).text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


@pytest.mark.integration
def test_instruments_and_the_process_are_served_with_the_component(
        endpoint: tuple[MeterProvider, MetricsEndpoint]) -> None:
    provider, served = endpoint
    meter = provider.get_meter("tradingtools.router")
    meter.create_counter("router.skips").add(2, {"reason": "MARKET_DENIED"})
    meter.create_histogram("router.received_to_routed", unit="ms").record(1.5)
    samples = scrape(served.url)
    assert samples["router_skips_total"] == [({"component": "router", "reason": "MARKET_DENIED"}, 2.0)]
    buckets = {float(labels["le"]): v for labels, v in samples["router_received_to_routed_milliseconds_bucket"]}
    assert buckets[1] == 0 and buckets[2] == 1  # the latency bounds, not OpenTelemetry's 0, 5, 10...
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_start_time_seconds"):
        [(labels, value)] = samples[name]
        assert labels == {"component": "router"} and value > 0
    assert all(labels.get("component") == "router" for rows in samples.values() for labels, _ in rows)


@pytest.mark.integration
def test_a_taken_port_leaves_the_service_without_metrics_not_down() -> None:
    _reader, registry = prometheus_reader("guard")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert serve(registry, MetricsSettings(True, "127.0.0.1", port), "guard") is None
