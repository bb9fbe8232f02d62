"""Router metrics: OpenTelemetry instruments plus plain counts (read by tests and logs).

The counters are kept as plain counts and exported through observable counters, read when the metrics are
collected: an OpenTelemetry ``add`` costs ~15 µs, paid per routed trade. The histograms take each value as it comes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from weakref import WeakKeyDictionary

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation


class _Exported:
    """What a meter's router counters export: the sums over every :class:`RouterMetrics` made with it (an observable
    instrument is registered once per meter, with the callbacks of its first registration)."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.trades = 0
        self.orders = 0
        self.ignored = 0
        self.cut: Counter[str] = Counter()
        self.skips: Counter[str] = Counter()
        self.duplicates: Counter[str] = Counter()
        _observed(meter, "router.trades", "leader trades routed", lambda: _total(self.trades))
        _observed(meter, "router.orders", "copy orders emitted", lambda: _total(self.orders))
        _observed(meter, "router.skips", "followers skipped, by reason", lambda: _by("reason", self.skips))
        _observed(meter, "router.orders_cut", "copy orders cut, by reason", lambda: _by("reason", self.cut))
        _observed(meter, "router.duplicates", "leader trades seen again", lambda: _by("where", self.duplicates))
        _observed(meter, "router.ignored", "non-trade activity ignored", lambda: _total(self.ignored))


def _observed(meter: metrics.Meter, name: str, description: str,
              observe: Callable[[], Iterable[Observation]]) -> None:
    def callback(_options: CallbackOptions) -> Iterable[Observation]:
        return observe()
    meter.create_observable_counter(name, [callback], description=description)


def _total(n: int) -> list[Observation]:
    """A counter without labels: nothing until it was first added to."""
    return [Observation(n)] if n else []


def _by(label: str, counts: Counter[str]) -> list[Observation]:
    return [Observation(n, {label: value}) for value, n in list(counts.items())]


_EXPORTED: WeakKeyDictionary[metrics.Meter, _Exported] = WeakKeyDictionary()


class RouterMetrics:
    """Counters of routed trades, orders, skips by reason and duplicates; routing time histogram."""

    def __init__(self, meter: metrics.Meter | None = None) -> None:
        meter = meter or metrics.get_meter("tradingtools.router")
        exported = _EXPORTED.get(meter)
        if exported is None:
            exported = _EXPORTED[meter] = _Exported(meter)
        self._exported = exported
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
        exported = self._exported
        exported.trades += 1
        self.counts["trades"] += 1
        if orders:
            exported.orders += orders
            self.counts["orders"] += orders
        if cut:
            exported.cut["MAX_ORDER_USD"] += cut
            self.counts["cut_MAX_ORDER_USD"] += cut
        if skip_reasons:
            exported.skips.update(skip_reasons)
            self.skip_reasons.update(skip_reasons)
        self._route_ms.record(route_ms)
        if copy_ms is not None:
            self._copy_ms.record(copy_ms)

    def batch(self, trades: int) -> None:
        """One read of state (one Redis script, one PostgreSQL statement) for ``trades`` leader trades."""
        self._batch.record(trades)
        self.counts["batches"] += 1

    def duplicate(self, where: str) -> None:
        """A leader trade already routed (``where``: redis marker, postgres row, re-emitted)."""
        self._exported.duplicates[where] += 1
        self.counts[f"duplicate_{where}"] += 1

    def ignored(self) -> None:
        """A non-trade activity row."""
        self._exported.ignored += 1
        self.counts["ignored"] += 1


class MarketFeeMetrics:
    """CLOB market answers whose taker fee fields could not be read: their copies are sized with no fee (or the part
    that was usable), so a BUY may end below the market's minimum once the venue takes its fee. Exported from the
    start, 0 included (a rare event, added to as it comes)."""

    def __init__(self, meter: metrics.Meter | None = None) -> None:
        meter = meter or metrics.get_meter("tradingtools.router")
        self._unusable = meter.create_counter("router.market_fee_unusable",
                                              description="CLOB market answers whose taker fee fields could not be "
                                                          "read (routed with no fee known for them)")
        self._unusable.add(0)
        self.unusable = 0

    def fee_unusable(self) -> None:
        """One market answer whose fee fields could not be read."""
        self._unusable.add(1)
        self.unusable += 1
