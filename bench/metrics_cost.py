"""What metric collection costs: ``bench pipeline``'s scenario (a) with the metrics off and on, in one run.

``python -m bench metrics_cost [--rate 200] [--duration 30] [--rounds 2] [--scrape-s 5] [--quick] [--no-save]``
starts one stack (:func:`bench.pipeline.start_pipeline`) and plays rounds of two phases, metrics off then on:
before each phase every service is restarted (SIGTERM; the supervisor starts it again), with
``TT_METRICS_ENABLED=false`` for the off phase (no endpoint, no reader: the instruments record into nothing)
and as configured for the on phase, while a thread scrapes the five ``/metrics`` endpoints every ``--scrape-s``
(Prometheus scrapes every 15 to 60 s: this is harsher). Each phase runs scenario (a) (one follower, leader
trades at ``--rate`` for ``--duration`` after a warm-up) and records the p50/p99 of ingest → POST and the CPU
per trade of each service. The phases alternate so that the machine's drift (other work on a shared host) falls
on both (each phase also waits, up to a minute, for the host's load average to drop under ``--max-load``); the
summary compares the medians over the rounds. Target: at most 5 % more on p50 and on the services' CPU per trade.
At the end, each service's CPU per scrape is measured alone (``--scrapes`` back to back), the part of the cost
that does not depend on the traffic; and, in this process, the recording a trade costs on its way (the router's
instruments, ingest's feed-lag histogram, the executor's journal observer for its two events) with a meter
provider without and with the Prometheus reader: the part that does, free of the host's noise.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench import save_results
from bench._pipeline_harness import Bench
from bench.pipeline import scenario_a, start_pipeline
from common.metrics import prometheus_reader
from tools.pipeline import Pipeline

SERVICES = ("control", "ingest", "router", "executor", "guard")
TARGET_PCT = 5.0


def restart_services(p: Pipeline, metrics_on: bool) -> None:
    """Restart every service, with its metrics on or off; back once each answers its health check."""
    for name in SERVICES:
        if not metrics_on:
            p.once_env(name, {"TT_METRICS_ENABLED": "false"})
        old = p.kill(name, signal.SIGTERM)
        p.wait_restarted(name, old, timeout_s=120)
    for name in SERVICES:
        serving = _serves_metrics(p, name)
        if serving != metrics_on:
            raise RuntimeError(f"{name} {'does not serve' if metrics_on else 'still serves'} /metrics")


def _serves_metrics(p: Pipeline, name: str) -> bool:
    try:
        return httpx.get(p.metrics_url(name), timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


class Scraper:
    """Scrapes every service's /metrics every ``interval_s`` on a thread, as Prometheus would."""

    def __init__(self, p: Pipeline, interval_s: float) -> None:
        self.urls = [p.metrics_url(name) for name in SERVICES]
        self.interval_s = interval_s
        self.scrapes = 0
        self.bytes = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with httpx.Client(timeout=5.0) as client:
            while not self._stop.wait(self.interval_s):
                for url in self.urls:
                    try:
                        reply = client.get(url)
                        reply.raise_for_status()
                        self.scrapes += 1
                        self.bytes += len(reply.content)
                    except httpx.HTTPError:
                        self.failures += 1


def wait_load(max_load: float, timeout_s: float = 60.0) -> float:
    """Until the host's 1-minute load average is under ``max_load`` (or ``timeout_s``); returns it."""
    deadline = time.monotonic() + timeout_s
    while os.getloadavg()[0] >= max_load and time.monotonic() < deadline:
        time.sleep(1.0)
    return round(os.getloadavg()[0], 2)


def scrape_cost(b: Bench, n: int) -> dict[str, float]:
    """Each service's CPU ms per scrape of its /metrics, ``n`` scrapes back to back."""
    meter = b.cpu_meter()
    meter.start()
    with httpx.Client(timeout=5.0) as client:
        for _ in range(n):
            for name in SERVICES:
                client.get(b.p.metrics_url(name)).raise_for_status()
    cpu = meter.stop()
    return {name: round(cpu[name] * 1000 / n, 2) for name in SERVICES}


def instrument_cost(n: int) -> dict[str, float]:
    """µs of recording per copied trade (router, ingest's lag, the executor's observer of a PLACED and a FILLED
    event), without and with the Prometheus reader; the best of three runs of ``n`` each."""
    from decimal import Decimal

    from opentelemetry.sdk.metrics import Histogram, MeterProvider
    from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

    from common.metrics import LATENCY_BOUNDS_MS
    from services.executor.adapters.order_store import Change
    from services.executor.domain.fill_math import Booking
    from services.executor.domain.order_lifecycle import OrderLife, State
    from services.executor.domain.ticket import INSIDERS, Ticket
    from services.executor.metrics import ExecutorMetrics
    from services.ingest.metrics import IngestMetrics
    from services.router.metrics import RouterMetrics
    from tradingtools.execution.v1 import execution_pb2 as epb

    now = time.time_ns()
    order = epb.Order(client_order_id="co", origin=epb.ORDER_ORIGIN_COPY, received_time_ns=now, routed_time_ns=now)
    ticket = Ticket(order, INSIDERS, None, now, post_sent_ns=now + 2_000_000)
    placed = Change(ticket, OrderLife("co", State.PLACED), epb.OrderEvent(type=epb.ORDER_EVENT_TYPE_PLACED))
    filled = Change(ticket, OrderLife("co", State.FILLED), epb.OrderEvent(type=epb.ORDER_EVENT_TYPE_FILLED,
                                                                           received_time_ns=now + 9_000_000),
                    Booking("f", Decimal(1), Decimal(1), Decimal(1), Decimal(0), True, 0))
    out: dict[str, float] = {}
    for label, readers in (("off", []), ("on", [prometheus_reader("bench")[0]])):
        provider = MeterProvider(metric_readers=readers, views=[View(
            instrument_type=Histogram, instrument_unit="ms",
            aggregation=ExplicitBucketHistogramAggregation(LATENCY_BOUNDS_MS))])
        meter = provider.get_meter("bench")
        router, ingest, executor = RouterMetrics(meter), IngestMetrics(meter), ExecutorMetrics(meter)
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            for _ in range(n):
                ingest.lag("RTDS_TRADES", 80.0)
                router.batch(1)
                router.routed(1, [], 0.4, 1.2)
                executor.observe([placed])
                executor.observe([filled])
            best = min(best, (time.perf_counter() - started) / n * 1e6)
        out[label] = round(best, 2)
        provider.shutdown()
    return out


def phase(b: Bench, metrics_on: bool, args: argparse.Namespace) -> dict[str, Any]:
    """One scenario (a) with the metrics on or off."""
    restart_services(b.p, metrics_on)
    time.sleep(2.0)  # the restarted services' start-up work settles
    wait_load(args.max_load)
    if not metrics_on:
        result = scenario_a(b, args.rate, args.duration, args.warmup)
        return {"metrics": "off", **_figures(result)}
    with Scraper(b.p, args.scrape_s) as scraper:
        result = scenario_a(b, args.rate, args.duration, args.warmup)
    return {"metrics": "on", **_figures(result), "scrapes": scraper.scrapes, "scrape_failures": scraper.failures,
            "scrape_kb_each": round(scraper.bytes / 1024 / max(1, scraper.scrapes), 1)}


def _figures(result: dict[str, Any]) -> dict[str, Any]:
    cpu = result["cpu_ms_per_trade"]
    hop = result["latency"]["ingest→POST"]
    return {"trades": result["trades"], "posts": result["posts"], "p50_ms": hop["p50_ms"], "p99_ms": hop["p99_ms"],
            "services_cpu_ms_per_trade": round(sum(cpu.get(name, 0.0) for name in SERVICES), 3),
            "cpu_ms_per_trade": cpu, "load1_max": result.get("load1_max")}


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the rounds, off vs on, and the overhead in %."""
    def median(state: str, key: str) -> float:
        return round(statistics.median(r[key] for r in rounds if r["metrics"] == state), 3)

    out: dict[str, Any] = {}
    for key in ("p50_ms", "p99_ms", "services_cpu_ms_per_trade"):
        off, on = median("off", key), median("on", key)
        out[key] = {"off": off, "on": on, "overhead_pct": round((on - off) / off * 100, 1) if off else None}
    out["within_target"] = all(out[k]["overhead_pct"] is not None and out[k]["overhead_pct"] <= TARGET_PCT
                               for k in ("p50_ms", "services_cpu_ms_per_trade"))
    return out


def main(argv: list[str]) -> int:
    """Run the rounds; print and save the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench metrics_cost")
    parser.add_argument("--rate", type=float, default=200.0, help="leader trades/s (scenario a)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds measured per phase")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of trades before each measure")
    parser.add_argument("--rounds", type=int, default=2, help="off/on pairs")
    parser.add_argument("--scrape-s", type=float, default=5.0, help="scrape interval of the on phases")
    parser.add_argument("--scrapes", type=int, default=50, help="scrapes measured alone at the end")
    parser.add_argument("--max-load", type=float, default=1.5, help="wait for a load average under this")
    parser.add_argument("--quick", action="store_true", help="5 s phases, one round")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.rounds = 5.0, 2.0, 1
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tt-bench-metrics-") as tmp:
        p = start_pipeline(Path(tmp) / "run")
        try:
            b = Bench(p)
            for i in range(args.rounds):
                for on in (False, True):
                    r = {"round": i + 1, **phase(b, on, args)}
                    rounds.append(r)
                    print(f"--- round {i + 1}, metrics {r['metrics']}: p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
                          f"services' CPU {r['services_cpu_ms_per_trade']} ms/trade "
                          f"({', '.join(f'{k} {v}' for k, v in r['cpu_ms_per_trade'].items() if k in SERVICES)}), "
                          f"{r['posts']}/{r['trades']} posts, load1 max {r['load1_max']}"
                          + (f", {r['scrapes']} scrapes of {r['scrape_kb_each']} KB" if on else ""), flush=True)
            per_scrape = scrape_cost(b, args.scrapes)
        finally:
            p.stop(quiet=True)
    recording = instrument_cost(20_000)
    result = {"rate_per_s": args.rate, "duration_s": args.duration, "scrape_s": args.scrape_s, "rounds": rounds,
              "summary": summary(rounds), "target_overhead_pct": TARGET_PCT, "cpu_ms_per_scrape": per_scrape,
              "recording_us_per_trade": recording}
    s = result["summary"]
    for key in ("p50_ms", "p99_ms", "services_cpu_ms_per_trade"):
        print(f"{key:28} off {s[key]['off']:>8}   on {s[key]['on']:>8}   overhead {s[key]['overhead_pct']} %")
    print(f"within the {TARGET_PCT:g} % target (p50 and CPU per trade): {s['within_target']}", flush=True)
    print(f"CPU ms per scrape: {per_scrape} (every 15 s at {args.rate:g} trades/s: "
          f"{sum(per_scrape.values()) / (15 * args.rate):.4f} ms per trade)", flush=True)
    off_cpu = s["services_cpu_ms_per_trade"]["off"]
    print(f"recording per copied trade, µs: {recording} (the reader adds {recording['on'] - recording['off']:.1f} µs"
          + (f" = {(recording['on'] - recording['off']) / 10 / off_cpu:.2f} % of the services' CPU per trade"
             if off_cpu else "") + ")", flush=True)
    if not args.no_save:
        print(f"saved {save_results('metrics_cost', result)}", flush=True)
    return 0
