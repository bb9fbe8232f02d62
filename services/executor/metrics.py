"""Executor metrics and the ORDER_LOST alert, from the journal's committed changes (``Journal.observe``).

Per order, once: ``executor.orders`` (state, reason, venue, origin) at its terminal event, with the copy's
stages from the times it carries — ``executor.routed_to_post`` (routed by the router → first POST sent) and
``executor.copy_latency`` (leader frame received by ingest → first POST sent, copies only); at its first fill
``executor.first_fills`` (venue, origin), ``executor.post_to_fill`` (first POST → the fill learnt) and
``executor.frame_to_fill`` (leader frame → fill, copies only). Histograms in ms, labelled by venue. An order
that ends LOST raises the ORDER_LOST alert (key ``order_lost:<venue>``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from weakref import WeakKeyDictionary

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from services.executor.adapters.order_store import Change
from services.executor.alerting import order_lost
from tradingtools.execution.v1 import execution_pb2 as epb

_TERMINAL_EVENTS = frozenset({epb.ORDER_EVENT_TYPE_FILLED, epb.ORDER_EVENT_TYPE_CANCELLED,
                              epb.ORDER_EVENT_TYPE_REJECTED, epb.ORDER_EVENT_TYPE_LOST, epb.ORDER_EVENT_TYPE_FAILED})
_NS_PER_MS = 1_000_000

Observer = Callable[[list[Change]], None]


class _Exported:
    """What a meter's executor counters export: the sums over every :class:`ExecutorMetrics` made with it (an
    observable instrument is registered once per meter, with the callbacks of its first registration)."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.orders: Counter[tuple[str, str, str, str]] = Counter()  # (state, reason, venue, origin)
        self.first_fills: Counter[tuple[str, str]] = Counter()  # (venue, origin)

        def orders(_options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(n, {"state": state, "reason": reason, "venue": venue, "origin": origin})
                    for (state, reason, venue, origin), n in list(self.orders.items())]

        def first_fills(_options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(n, {"venue": venue, "origin": origin})
                    for (venue, origin), n in list(self.first_fills.items())]

        meter.create_observable_counter("executor.orders", [orders],
                                        description="Orders ended, by final state, reason, venue and origin")
        meter.create_observable_counter("executor.first_fills", [first_fills],
                                        description="Orders filled at least in part (copies made), by venue "
                                                    "and origin")


_EXPORTED: WeakKeyDictionary[metrics.Meter, _Exported] = WeakKeyDictionary()


class ExecutorMetrics:
    """The journal's observer that counts orders and records their copy stages."""

    def __init__(self, meter: metrics.Meter | None = None) -> None:
        meter = meter or metrics.get_meter("tradingtools.executor")
        exported = _EXPORTED.get(meter)
        if exported is None:
            exported = _EXPORTED[meter] = _Exported(meter)
        self._exported = exported
        self._venues: dict[str, dict[str, str]] = {}  # venue -> the histograms' attributes
        self._routed_to_post = meter.create_histogram("executor.routed_to_post", unit="ms",
                                                      description="Routed by the router → first POST sent")
        self._copy_latency = meter.create_histogram("executor.copy_latency", unit="ms",
                                                    description="Leader frame received by ingest → first POST sent")
        self._post_to_fill = meter.create_histogram("executor.post_to_fill", unit="ms",
                                                    description="First POST sent → its first fill learnt")
        self._frame_to_fill = meter.create_histogram("executor.frame_to_fill", unit="ms",
                                                     description="Leader frame received by ingest → first fill learnt")

    def observe(self, changes: list[Change]) -> None:
        """Count and time the committed changes (quick, never raises for a well-formed change). The counters are
        plain counts, exported when the metrics are collected; a histogram takes each order's own value."""
        ended = self._exported.orders
        filled = self._exported.first_fills
        for c in changes:
            ev = c.event
            if ev is None:
                continue
            t = c.ticket
            order = t.order
            venue = self._venues.get(t.venue)
            if venue is None:
                venue = self._venues[t.venue] = {"venue": t.venue}
            if c.booking is not None and c.booking.first_fill:
                filled[t.venue, t.origin] += 1
                if t.post_sent_ns:
                    self._post_to_fill.record((ev.received_time_ns - t.post_sent_ns) / _NS_PER_MS, venue)
                if order.received_time_ns and t.origin == "COPY":
                    self._frame_to_fill.record((ev.received_time_ns - order.received_time_ns) / _NS_PER_MS, venue)
            if ev.type not in _TERMINAL_EVENTS:
                continue
            state = c.life.state.value
            ended[state, c.life.reason, t.venue, t.origin] += 1
            if t.post_sent_ns:
                if order.routed_time_ns:
                    self._routed_to_post.record((t.post_sent_ns - order.routed_time_ns) / _NS_PER_MS, venue)
                if order.received_time_ns and t.origin == "COPY":
                    self._copy_latency.record((t.post_sent_ns - order.received_time_ns) / _NS_PER_MS, venue)
            if state == "LOST":
                order_lost(c)


def observe_all(observers: Iterable[Observer | None]) -> Observer:
    """One observer calling each of ``observers`` (None ones left out) in turn."""
    chosen = [o for o in observers if o is not None]

    def observe(changes: list[Change]) -> None:
        for o in chosen:
            o(changes)
    return observe
