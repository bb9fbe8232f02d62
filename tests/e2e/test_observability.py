"""Operating the running stack: one trace from a leader frame to its fill across ingest, router and executor (an
in-memory OTLP collector), the breaker's alerts delivered to a webhook by control, and every metric the Grafana
dashboard and the Prometheus rules read present in a scrape of the five services after that traffic."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from common.alerts import verify
from common.config import StorageSettings
from common.streams import ORDER_EVENTS
from sim.webhook import Received
from tests.e2e.otlp import Collector, Span
from tests.e2e.support import Follower, add_market, address, created, subscribe, trade, wait_followed
from tests.helpers import eventually_sync, redis_db, template_database
from tests.promql import metric_names
from tools.deploy import monitoring
from tools.pipeline import Pipeline, free_port_env, isolated_env
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration

OBS_REDIS_DB = 13
SERVICES = ("ingest", "router", "executor", "guard", "control")
FIXED_20 = {"mode": "SIZING_MODE_FIXED_USD", "fixedUsd": "20"}
# label names that would carry an id (unbounded): never on a metric
ID_LABELS = ("wallet", "subscription", "asset", "order", "client", "leader", "follower", "trade", "market",
             "condition", "proxy", "id")


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    c = Collector().start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def stack(pg_server_url: str, pg_template: str, redis_server_url: str, collector: Collector) -> Iterator[Pipeline]:
    """The whole stack exporting spans to ``collector``, its alerts going to the simulator's webhook receiver."""
    rurl = redis_db(redis_server_url, OBS_REDIS_DB)
    client = redis.Redis.from_url(rurl)
    client.flushdb()
    client.close()
    env = isolated_env()
    env.update(free_port_env())
    env.update({"REDIS_URL": rurl, "TT_STACK_READY_TIMEOUT_S": "90", "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
                "OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_BSP_SCHEDULE_DELAY": "100",
                "OTEL_METRIC_EXPORT_INTERVAL": "600000"})
    with template_database(pg_server_url, pg_template, f"tt_obs_{os.getpid()}") as db, \
            tempfile.TemporaryDirectory(prefix="tt-obs-") as tmp:
        env["DATABASE_URL"] = db
        p = Pipeline.start(Path(tmp) / "run", env=env, seed=None, out=lambda _line: None)
        try:
            yield p
        finally:
            p.stop(quiet=True)


@dataclass(frozen=True)
class Traffic:
    """What the module's traffic left behind."""

    follower: Follower
    filled: epb.OrderEvent  # the first copy's FILLED event


def received(p: Pipeline) -> list[Received]:
    return list(p.sim.call(lambda: list(p.sim.webhook.received)))


def order_events(p: Pipeline, coid: str) -> list[epb.OrderEvent]:
    client = redis.Redis.from_url(StorageSettings.from_env(p.env).redis_url.value)
    try:
        events = [epb.OrderEvent.FromString(f[b"p"]) for _id, f in client.xrange(ORDER_EVENTS)]
    finally:
        client.close()
    return [e for e in events if e.client_order_id == coid]


@pytest.fixture(scope="module")
def traffic(stack: Pipeline) -> Traffic:
    """A copy filled (and one skipped), then an Insiders 5xx storm that opens the breaker, and its recovery."""
    p = stack
    leader, market = address(), add_market(p)
    with p.rest() as rest:
        follower = subscribe(rest, leader, sizing=FIXED_20)
        subscribe(rest, leader, sizing=FIXED_20, filters={"maxPrice": "0.10"})  # skipped: the price is above
    wait_followed(p, leader)
    trade(p, leader, market)
    [coid] = eventually_sync(lambda: list(created(p, follower.wallet_id)), timeout_s=30, message="the copy's POST")
    [filled] = eventually_sync(lambda: [e for e in order_events(p, coid) if e.type == epb.ORDER_EVENT_TYPE_FILLED],
                               timeout_s=30, message="the copy's fill")

    def arm(n: int) -> None:
        p.sim.insiders.faults.fail_posts = n
        p.sim.insiders.faults.fail_status = 503

    p.sim.call(arm, 5)  # the breaker's threshold: its fifth consecutive failure opens it
    for price in ("0.52", "0.53", "0.54"):
        trade(p, leader, market, price=price)
    eventually_sync(lambda: {"BREAKER_OPENED", "BREAKER_CLOSED"} <= {r.alert.get("kind") for r in received(p)},
                    timeout_s=60, message="the breaker's alerts at the webhook")
    return Traffic(follower, filled)


def test_one_trace_from_a_leader_frame_to_its_fill(traffic: Traffic, collector: Collector) -> None:
    trace_id = traffic.filled.trace.traceparent.split("-")[1]  # the fill carries the copy's trace

    def chain() -> list[Span]:
        spans = collector.by_id()
        [order] = [s for s in spans.values() if s.name == "executor.order"
                   and s.attributes.get("order.client_order_id") == traffic.filled.client_order_id]
        route = spans[order.parent_id]
        frame = spans[route.parent_id]
        return [frame, route, order]

    frame, route, order = eventually_sync(chain, timeout_s=20, message="the copy's spans at the collector")
    assert [(s.service, s.name) for s in (frame, route, order)] == [
        ("tradingtools-ingest", "ingest.leader_trade"), ("tradingtools-router", "router.route"),
        ("tradingtools-executor", "executor.order")]
    assert {s.trace_id for s in (frame, route, order)} == {trace_id}
    assert frame.parent_id == ""  # the trace starts at the leader's frame
    assert traffic.filled.trace.traceparent.split("-")[2] == route.span_id  # the fill hangs off the routed trade


def test_the_breaker_alerts_reach_the_webhook_signed(stack: Pipeline, traffic: Traffic) -> None:
    alerts = {r.alert["kind"]: r for r in received(stack) if r.alert.get("kind", "").startswith("BREAKER_")}
    opened, closed = alerts["BREAKER_OPENED"], alerts["BREAKER_CLOSED"]
    secret = stack.env["TT_ALERT_WEBHOOK_SECRET"]
    for got in (opened, closed):
        assert got.signed and verify(secret, got.headers["x-tt-timestamp"], got.raw, got.headers["x-tt-signature"])
        assert got.alert["service"] == "executor" and got.alert["key"] == "breaker:insiders"
    assert "*CRITICAL* circuit breaker insiders OPEN after 5 consecutive venue failures" in opened.text
    assert opened.received_ns < closed.received_ns


def scrape(p: Pipeline, service: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name → [(labels, value)] of one service's /metrics."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(httpx.get(p.metrics_url(service), timeout=10).text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def _all_routed(p: Pipeline) -> bool:
    """The traffic's four trades were kept by ingest and routed (the breaker's alerts may come before the last)."""
    router, ingest = scrape(p, "router"), scrape(p, "ingest")
    assert sum(v for _, v in router.get("router_skips_total", [])) >= 4
    assert sum(v for _, v in router.get("router_received_to_routed_milliseconds_count", [])) >= 4
    assert sum(v for _, v in ingest.get("ingest_trades_kept_total", [])) >= 4
    return True


def test_every_metric_of_the_dashboard_and_the_rules_is_scraped(stack: Pipeline, traffic: Traffic) -> None:
    eventually_sync(lambda: _all_routed(stack), timeout_s=30, message="the four trades routed")
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for service in SERVICES:
        for name, rows in scrape(stack, service).items():
            samples.setdefault(name, []).extend(rows)
            assert all(labels.get("component") == service for labels, _ in rows), (service, name)
    wanted = {name for expr in monitoring.expressions() for name in metric_names(expr)}
    assert not wanted - samples.keys(), f"queried, never scraped: {sorted(wanted - samples.keys())}"
    for name, rows in samples.items():
        assert len(rows) < 500, f"{name}: {len(rows)} series"
        for labels, _ in rows:
            bad = [k for k in labels if any(part in k.split("_") for part in ID_LABELS)]
            assert not bad, f"{name} is labelled by {bad}"

    def total(name: str, **match: str) -> float:
        return sum(v for labels, v in samples[name] if all(labels.get(k) == w for k, w in match.items()))

    assert total("executor_orders_total", state="FILLED", origin="COPY") >= 1
    assert total("executor_first_fills_total", origin="COPY") >= 1
    assert total("executor_copy_latency_milliseconds_count", venue="INSIDERS") >= 1
    assert total("executor_breaker_transitions_total", venue="insiders", to="OPEN") >= 1
    assert total("executor_breaker_state", venue="insiders", state="CLOSED") == 1
    assert total("alerts_delivery_total", outcome="SENT") >= 2
    assert total("router_received_to_routed_milliseconds_count") >= 4
    assert total("router_skips_total") >= 4
    assert total("ingest_trades_kept_total") >= 4
    ends = {labels["stream"]: v for labels, v in samples["stream_last_entry_time_seconds"]}
    [router] = [v for labels, v in samples["consumer_position_time_seconds"] if labels["consumer"] == "router"]
    assert 0 <= ends["leader_trades"] - router < 60  # the router's lag behind ingest's log
    assert {"leader_trades", "routed_trades", "order_events", "price_ticks"} <= ends.keys()
    assert {labels["component"] for labels, _ in samples["process_resident_memory_bytes"]} == set(SERVICES)
