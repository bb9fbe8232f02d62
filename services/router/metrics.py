"""Router metrics: OpenTelemetry instruments plus plain counts (read by tests and logs)."""

from __future__ import annotations

from collections import Counter

from opentelemetry import metrics


class RouterMetrics:
    """Counters of routed trades, orders, skips by reason and duplicates; routing time histogram."""

    def __init__(self, meter: metrics.Meter | None = None) -> None:
        meter = meter or metrics.get_meter("tradingtools.router")
        self._trades = meter.create_counter("router.trades", description="leader trades routed")
        self._orders = meter.create_counter("router.orders", description="copy orders emitted")
        self._skips = meter.create_counter("router.skips", description="followers skipped, by reason")
        self._cut = meter.create_counter("router.orders_cut", description="copy orders cut, by reason")
        self._duplicates = meter.create_counter("router.duplicates", description="leader trades seen again")
        self._ignored = meter.create_counter("router.ignored", description="non-trade activity ignored")
        self._route_ms = meter.create_histogram("router.route_duration", unit="ms",
                                                description="leader trade received by router -> appended")
        self._batch = meter.create_histogram("router.batch_size", unit="{trade}",
                                             description="leader trades decided from one read")
        self._copy_ms = meter.create_histogram("router.received_to_routed", unit="ms",
                                               description="frame received by ingest -> routed")
        self.counts: Counter[str] = Counter()
        self.skip_reasons: Counter[str] = Counter()

    def routed(self, orders: int, skip_reasons: list[str], route_ms: float, copy_ms: float | None, *,
               cut: int = 0) -> None:
        """One leader trade routed (``cut`` of its orders cut to the operator ceiling, reason MAX_ORDER_USD)."""
        self._trades.add(1)
        self.counts["trades"] += 1
        if orders:
            self._orders.add(orders)
            self.counts["orders"] += orders
        if cut:
            self._cut.add(cut, {"reason": "MAX_ORDER_USD"})
            self.counts["cut_MAX_ORDER_USD"] += cut
        for reason in skip_reasons:
            self._skips.add(1, {"reason": reason})
            self.skip_reasons[reason] += 1
        self._route_ms.record(route_ms)
        if copy_ms is not None:
            self._copy_ms.record(copy_ms)

    def batch(self, trades: int) -> None:
        """One read of state (one Redis script, one PostgreSQL statement) for ``trades`` leader trades."""
        self._batch.record(trades)
        self.counts["batches"] += 1

    def duplicate(self, where: str) -> None:
        """A leader trade already routed (``where``: redis marker, postgres row, re-emitted)."""
        self._duplicates.add(1, {"where": where})
        self.counts[f"duplicate_{where}"] += 1

    def ignored(self) -> None:
        """A non-trade activity row."""
        self._ignored.add(1)
        self.counts["ignored"] += 1
