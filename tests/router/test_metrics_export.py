"""The router's counters, kept as plain counts, export what counters added to as each trade is routed export."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from services.router.metrics import RouterMetrics
from tests.helpers import counter_sums


def _as_added(meter: Any, calls: list[tuple[str, tuple[Any, ...]]]) -> None:
    """The calls as counters added to at once (how the router counted before)."""
    trades = meter.create_counter("router.trades", description="leader trades routed")
    orders = meter.create_counter("router.orders", description="copy orders emitted")
    skips = meter.create_counter("router.skips", description="followers skipped, by reason")
    cut = meter.create_counter("router.orders_cut", description="copy orders cut, by reason")
    duplicates = meter.create_counter("router.duplicates", description="leader trades seen again")
    ignored = meter.create_counter("router.ignored", description="non-trade activity ignored")
    for name, args in calls:
        if name == "routed":
            n_orders, reasons, n_cut = args
            trades.add(1)
            if n_orders:
                orders.add(n_orders)
            if n_cut:
                cut.add(n_cut, {"reason": "MAX_ORDER_USD"})
            for reason in reasons:
                skips.add(1, {"reason": reason})
        elif name == "duplicate":
            duplicates.add(1, {"where": args[0]})
        else:
            ignored.add(1)


def _replay(metrics: RouterMetrics, calls: list[tuple[str, tuple[Any, ...]]]) -> None:
    for name, args in calls:
        if name == "routed":
            metrics.routed(args[0], list(args[1]), 1.0, 2.0, cut=args[2])
        elif name == "duplicate":
            metrics.duplicate(args[0])
        else:
            metrics.ignored()


CALLS: list[tuple[str, tuple[Any, ...]]] = [
    ("routed", (0, ("PRICE_ABOVE_MAX", "NOTHING_HELD"), 0)), ("routed", (3, ("NOTHING_HELD",), 1)),
    ("duplicate", ("redis",)), ("duplicate", ("postgres",)), ("duplicate", ("redis",)), ("ignored", ()),
    ("routed", (1, (), 0))]


def test_the_counters_export_what_counters_added_to_at_once_export() -> None:
    expected, got = InMemoryMetricReader(), InMemoryMetricReader()
    _as_added(MeterProvider(metric_readers=[expected]).get_meter("tradingtools.router"), CALLS)
    metrics = RouterMetrics(MeterProvider(metric_readers=[got]).get_meter("tradingtools.router"))
    assert counter_sums(got) == {}  # nothing counted yet: no series
    _replay(metrics, CALLS[:1])
    assert set(counter_sums(got)) == {"router.trades", "router.skips"}
    _replay(metrics, CALLS[1:])
    assert counter_sums(got) == counter_sums(expected)
    skips = counter_sums(got)["router.skips"][-1]
    assert skips == {(("reason", "NOTHING_HELD"),): 2, (("reason", "PRICE_ABOVE_MAX"),): 1}
    assert metrics.counts["trades"] == 3 and metrics.skip_reasons["NOTHING_HELD"] == 2


def test_two_instances_on_one_meter_add_up() -> None:
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("tradingtools.router")
    first, second = RouterMetrics(meter), RouterMetrics(meter)
    _replay(first, CALLS)
    _replay(second, CALLS[:2])
    sums = counter_sums(reader)
    assert sums["router.trades"][-1] == {(): 5}
    assert sums["router.orders"][-1] == {(): 7}
    assert first.counts["trades"] == 3 and second.counts["trades"] == 2
