"""Emitting RoutedTrades: the atomic Redis emit, conflict handling, and the outbox that re-emits
anything persisted in PostgreSQL but never appended (rows an earlier version persisted first)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

from common.cancel import reraise_if_cancelling
from services.router.adapters.redis_state import BatchEmitResult, EmitResult, RedisState
from services.router.adapters.store import ExistingRouted, RouterStore
from services.router.outbound import drop_orders, join_parts, reservation_lines, sell_subscriptions, split_routed
from tradingtools.execution.v1 import execution_pb2 as epb

log = logging.getLogger(__name__)


class Emitted(NamedTuple):
    """An appended RoutedTrade: its cursor, whether this call appended it, and what was appended (orders
    whose client order id was already claimed are dropped as skips)."""

    cursor: str
    appended_now: bool
    routed: epb.RoutedTrade
    payload: bytes


class Emitter:
    """Appends RoutedTrades exactly once per leader trade and records their cursors."""

    def __init__(self, redis_state: RedisState, store: RouterStore, *,
                 on_appended: Callable[[str, bytes], None] | None = None,
                 on_lost: Callable[[], None] | None = None,
                 on_regained: Callable[[], Awaitable[None]] | None = None,
                 fetch: Callable[[str, int], Awaitable[list[bytes]]] | None = None) -> None:
        """``on_appended`` learns each entry this process appended (in log order); ``on_lost`` is told when an
        emit's outcome is unknown (its script may have appended without a reply), and ``on_regained`` is
        awaited before the next reported append, once the log's end is known again. ``fetch(cursor, n)`` reads
        the payloads of up to ``n`` log entries from ``cursor`` on (the parts of a split RoutedTrade)."""
        self.redis_state = redis_state
        self.store = store
        self.on_appended = on_appended
        self.on_lost = on_lost
        self.on_regained = on_regained
        self.fetch = fetch
        self.lost_track = 0  # emits whose outcome was unknown
        self._unsure = False
        self._appended: list[tuple[str, str]] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # the consumer and the outbox sweep both emit: appends stay in log order

    async def emit(self, leader_trade_id: str, routed: epb.RoutedTrade, payload: bytes, *,
                   mark: bool = True) -> Emitted:
        """Append (or find appended) a leader trade's RoutedTrade. ``mark`` records the cursor in
        PostgreSQL later (for rows persisted before; a row persisted after the emit carries its cursor)."""
        for _ in range(3):
            async with self._lock:
                parts = split_routed(routed, payload)
                with self._tracking():
                    done = await self.redis_state.emit_batch([(leader_trade_id, parts, reservation_lines(routed))],
                                                             [sell_subscriptions(routed)])
                await self._regain()
                self._published(done.entries, [parts])
            result = done.stopped or EmitResult("ok", cursor=done.cursors[0])
            if result.status in ("ok", "dup"):
                if mark:
                    self._appended.append((leader_trade_id, result.cursor))
                    self._wake.set()
                return Emitted(result.cursor, result.status == "ok", routed, payload)
            log.error("client order ids already claimed; dropping those orders",
                      extra={"leader_trade_id": leader_trade_id, "orders": list(result.conflicts)})
            routed = drop_orders(routed, result.conflicts, "client order id already claimed in Redis")
            payload = routed.SerializeToString()
        raise RuntimeError(f"could not emit routed trade {leader_trade_id}")

    async def emit_batch(self, items: list[tuple[str, epb.RoutedTrade, bytes]]) -> BatchEmitResult:
        """Append several ``(leader trade id, RoutedTrade, its payload)`` in order in one script call (each split
        into parts when too big for one message); it stops at the first trade appended before or with a client
        order id already claimed (see ``RedisState.emit_batch``). The caller persists the rows with the cursors."""
        parts = [split_routed(routed, payload) for _lt, routed, payload in items]
        lines = [(lt, p, reservation_lines(routed)) for (lt, routed, _), p in zip(items, parts, strict=True)]
        subs = [sell_subscriptions(routed) for _lt, routed, _ in items]
        async with self._lock:
            with self._tracking():
                done = await self.redis_state.emit_batch(lines, subs)
            await self._regain()
            self._published(done.entries, parts)
        return done

    def _published(self, entries: list[list[str]], parts: list[list[bytes]]) -> None:
        """Tell ``on_appended`` every entry appended now, in log order."""
        if self.on_appended is not None:
            for cursors, payloads in zip(entries, parts, strict=False):
                for cursor, payload in zip(cursors, payloads, strict=True):
                    self.on_appended(cursor, payload)

    @contextmanager
    def _tracking(self) -> Iterator[None]:
        """Around an emit script: when no reply comes (timeout, dropped connection, cancel), it may have
        appended anyway, so this process no longer knows the log's end: readers must read Redis."""
        try:
            yield
        except BaseException:
            self.lost_track += 1
            self._unsure = True
            if self.on_lost is not None:
                self.on_lost()
            raise

    async def _regain(self) -> None:
        """After an unknown outcome, learn the log's end again before reporting new appends (under the lock)."""
        if self._unsure:
            if self.on_regained is not None:
                await self.on_regained()
            self._unsure = False

    async def re_emit(self, leader_trade_id: str, existing: ExistingRouted) -> tuple[str, bool]:
        """Finish a leader trade persisted before: append its stored RoutedTrade unless already done."""
        if existing.cursor is not None:
            return existing.cursor, False
        routed = epb.RoutedTrade.FromString(existing.payload)
        done = await self.emit(leader_trade_id, routed, existing.payload)
        return done.cursor, done.appended_now

    async def appended_payload(self, cursor: str) -> bytes | None:
        """The whole RoutedTrade appended at ``cursor`` (its parts joined), as bytes; None when unknown or gone
        from the log."""
        if self.fetch is None:
            return None
        first = await self.fetch(cursor, 1)
        if not first:
            return None
        head = epb.RoutedTrade.FromString(first[0])
        if head.parts <= 1:
            return first[0]
        payloads = await self.fetch(cursor, head.parts)
        parts = [epb.RoutedTrade.FromString(p) for p in payloads]
        if [p.part for p in parts] != list(range(head.parts)) or any(p.trade.id != head.trade.id for p in parts):
            log.error("a split routed trade's parts are incomplete in the log", extra={"cursor": cursor})
            return None
        return join_parts(parts).SerializeToString()

    async def flush(self) -> None:
        """Record appended cursors in PostgreSQL (batched, off the hot path)."""
        if not self._appended:
            return
        batch, self._appended = self._appended, []
        try:
            await self.store.mark_appended(batch)
        except Exception:
            self._appended[:0] = batch
            raise

    async def sweep(self, *, older_than_s: float, limit: int = 200) -> int:
        """Re-emit persisted but unmarked RoutedTrades; returns how many were appended now."""
        appended = 0
        for leader_trade_id, payload in await self.store.unappended(older_than_s=older_than_s, limit=limit):
            now = (await self.emit(leader_trade_id, epb.RoutedTrade.FromString(payload), payload)).appended_now
            appended += int(now)
            if now:
                log.warning("re-emitted a routed trade from the outbox", extra={"leader_trade_id": leader_trade_id})
        await self.flush()
        return appended

    async def run(self, *, interval_s: float, min_age_s: float) -> None:
        """Flush cursors as they come and sweep the outbox every ``interval_s`` until cancelled."""
        loop = asyncio.get_running_loop()
        next_sweep = loop.time()
        while True:
            reraise_if_cancelling()  # a cancel a Redis client turned into a timeout must still end the loop
            self._wake.clear()
            try:
                if loop.time() >= next_sweep:
                    await self.sweep(older_than_s=min_age_s)
                    next_sweep = loop.time() + interval_s
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:  # retried next round
                log.exception("outbox round failed")
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, next_sweep - loop.time()))
                await asyncio.sleep(0.02)  # let a burst of appends batch up
            except TimeoutError:
                pass
