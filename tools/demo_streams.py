"""Watching the stack's gRPC event streams from a script: router decisions, order events, trigger events.

A :class:`StreamTap` reads one resumable server stream in a background thread, from a cursor ("0" =
the oldest event kept), keeps the items a predicate selects, resumes from its last cursor when the
server goes away (a killed and restarted service), and lets the caller wait for a condition on what
it has seen. The demo prints from taps; the end-to-end tests assert on them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import grpc

from common.routed import expand
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.execution.v1 import execution_pb2_grpc as egrpc
from tradingtools.guard.v1 import guard_pb2 as gpb
from tradingtools.guard.v1 import guard_pb2_grpc as ggrpc

T = TypeVar("T")
Opener = Callable[[str], Any]  # cursor -> a server-streaming call (iterable of responses, cancellable)


class StreamTap(Generic[T]):
    """One stream read in the background (see the module docstring)."""

    def __init__(self, name: str, opener: Opener, unpack: Callable[[Any], tuple[str, T]], *,
                 keep: Callable[[T], bool] = lambda _item: True, start_cursor: str = "0",
                 on_item: Callable[[T], None] | None = None, retry_s: float = 0.2) -> None:
        self.name = name
        self.opener = opener
        self.unpack = unpack
        self.keep = keep
        self.cursor = start_cursor
        self.on_item = on_item
        self.retry_s = retry_s
        self.reconnects = 0
        self._items: list[T] = []
        self._cond = threading.Condition()
        self._stopped = threading.Event()
        self._call: Any = None
        self._thread = threading.Thread(target=self._run, name=f"tap-{name}", daemon=True)

    def start(self) -> StreamTap[T]:
        """Start reading."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop reading (safe to repeat)."""
        self._stopped.set()
        call = self._call
        if call is not None:
            call.cancel()
        if self._thread.is_alive():
            self._thread.join(5.0)

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self._call = self.opener(self.cursor)
                for response in self._call:
                    cursor, item = self.unpack(response)
                    self.cursor = cursor
                    if not self.keep(item):
                        continue
                    if self.on_item is not None:
                        self.on_item(item)
                    with self._cond:
                        self._items.append(item)
                        self._cond.notify_all()
            except grpc.RpcError:
                pass  # the server went away (restart): resume from the last cursor
            if self._stopped.wait(self.retry_s):
                return
            self.reconnects += 1

    def items(self) -> list[T]:
        """What has been kept so far, in stream order."""
        with self._cond:
            return list(self._items)

    def wait(self, predicate: Callable[[list[T]], bool], timeout_s: float, what: str) -> list[T]:
        """Block until ``predicate(items)`` holds; AssertionError naming ``what`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not predicate(self._items):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.name}: {what} not seen within {timeout_s:g}s "
                                         f"({len(self._items)} items kept)")
                self._cond.wait(min(left, 0.5))
            return list(self._items)


def routed_tap(channel: grpc.Channel, keep: Callable[[epb.RoutedTrade], bool],
               **kw: Any) -> StreamTap[epb.RoutedTrade]:
    """The router's decisions (one RoutedTrade per leader trade)."""
    stub = egrpc.RouterServiceStub(channel)
    return StreamTap("routed", lambda c: stub.StreamRoutedTrades(
        epb.StreamRoutedTradesRequest(after_cursor=c, consumer="tap")), lambda r: (r.cursor, expand(r.routed)),
        keep=keep, **kw)


def order_tap(channel: grpc.Channel, keep: Callable[[epb.OrderEvent], bool], **kw: Any) -> StreamTap[epb.OrderEvent]:
    """The executor's order events."""
    stub = egrpc.ExecutorServiceStub(channel)
    return StreamTap("orders", lambda c: stub.StreamOrderEvents(
        epb.StreamOrderEventsRequest(after_cursor=c, consumer="tap")), lambda r: (r.cursor, r.event), keep=keep, **kw)


def redemption_tap(channel: grpc.Channel, keep: Callable[[epb.RedemptionEvent], bool],
                   **kw: Any) -> StreamTap[epb.RedemptionEvent]:
    """The executor's redemption events."""
    stub = egrpc.ExecutorServiceStub(channel)
    return StreamTap("redemptions", lambda c: stub.StreamRedemptionEvents(
        epb.StreamRedemptionEventsRequest(after_cursor=c, consumer="tap")), lambda r: (r.cursor, r.event), keep=keep,
        **kw)


def trigger_tap(channel: grpc.Channel, keep: Callable[[gpb.TriggerEvent], bool],
                **kw: Any) -> StreamTap[gpb.TriggerEvent]:
    """Guard's trigger events."""
    stub = ggrpc.GuardServiceStub(channel)
    return StreamTap("triggers", lambda c: stub.StreamTriggerEvents(
        gpb.StreamTriggerEventsRequest(after_cursor=c, consumer="tap")), lambda r: (r.cursor, r.event), keep=keep, **kw)


TERMINAL_ORDER_EVENTS = frozenset({
    epb.ORDER_EVENT_TYPE_FILLED, epb.ORDER_EVENT_TYPE_CANCELLED, epb.ORDER_EVENT_TYPE_REJECTED,
    epb.ORDER_EVENT_TYPE_LOST, epb.ORDER_EVENT_TYPE_FAILED,
})


def terminal_events(events: list[epb.OrderEvent]) -> dict[str, epb.OrderEvent]:
    """The terminal event of each client order id that has one (the first seen)."""
    out: dict[str, epb.OrderEvent] = {}
    for e in events:
        if e.type in TERMINAL_ORDER_EVENTS and e.client_order_id not in out:
            out[e.client_order_id] = e
    return out


def iter_orders(routed: list[epb.RoutedTrade]) -> Iterator[tuple[epb.RoutedTrade, epb.Order]]:
    """Every (routed trade, order) pair."""
    for r in routed:
        for order in r.orders:
            yield r, order
