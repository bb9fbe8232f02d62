"""Adapters behind guard's ports: the executor and control over gRPC, market state in Redis, upstream streams."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable
from decimal import Decimal
from typing import Any

import grpc

from common.decimals import fmt
from common.marketstate import (
    BOOK_FEED_KEY,
    BookSnapshot,
    FeedBeat,
    MarketInfo,
    book_key,
    market_key,
    read_market,
)
from services.guard.ports import PerfActionRefused, SubmitRejected
from services.guard.tickread import OpenTicks, TickBatch
from tradingtools.control.v1 import control_pb2 as cpb
from tradingtools.control.v1 import control_pb2_grpc as cgrpc
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.execution.v1 import execution_pb2_grpc as egrpc
from tradingtools.market.v1 import market_pb2 as mpb
from tradingtools.market.v1 import market_pb2_grpc as mgrpc

# Codes after which the same request would fail the same way. UNAUTHENTICATED is not one: a refused internal
# token is a deployment fault (a rotation done in the wrong order), fixed without touching the request, and a
# stop-loss must not be given up for it; the call is retried like an outage.
PERMANENT = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
                       grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED,
                       grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNIMPLEMENTED,
                       grpc.StatusCode.ALREADY_EXISTS})


class GrpcExecutor:
    """``ExecutorService.SubmitOrder`` with a deadline."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout_s: float) -> None:
        self.stub = egrpc.ExecutorServiceStub(channel)
        self.timeout_s = timeout_s

    async def submit(self, order: epb.Order) -> epb.SubmitOrderResponse:
        """Place the order; permanent refusals raise SubmitRejected."""
        try:
            return await self.stub.SubmitOrder(epb.SubmitOrderRequest(order=order), timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in PERMANENT:
                raise SubmitRejected(exc.code().name, exc.details() or "") from exc
            raise


class GrpcControl:
    """``InternalControlService.ApplyPerfAction`` (the channel carries the internal token)."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout_s: float) -> None:
        self.stub = cgrpc.InternalControlServiceStub(channel)
        self.timeout_s = timeout_s

    async def apply_perf_action(self, *, subscription_id: str, action: str, multiplier: Decimal | None,
                                reason: str, decision_id: str) -> bool:
        """Apply a decision; True when applied now."""
        request = cpb.ApplyPerfActionRequest(
            id=subscription_id, action=cpb.PERF_ACTION_PAUSE if action == "PAUSE" else cpb.PERF_ACTION_SCALE,
            multiplier=fmt(multiplier) if multiplier is not None else "", reason=reason, decision_id=decision_id)
        try:
            resp = await self.stub.ApplyPerfAction(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in PERMANENT:
                raise PerfActionRefused(f"{exc.code().name}: {exc.details()}") from exc
            raise
        return bool(resp.applied)


class RedisMarkets:
    """Market info (cached for ``cache_s``) and marks from ingest's Redis state."""

    def __init__(self, redis: Any, *, cache_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.redis = redis
        self.cache_s = cache_s
        self.clock = clock
        self._cache: dict[str, tuple[float, MarketInfo]] = {}

    async def market(self, asset_id: str) -> MarketInfo | None:
        """Market info, from the cache when fresh (an unknown market is asked again every time)."""
        now = self.clock()
        hit = self._cache.get(asset_id)
        if hit is not None and now - hit[0] < self.cache_s:
            return hit[1]
        info = await read_market(self.redis, asset_id)
        if info is not None:
            self._cache[asset_id] = (now, info)
        return info

    async def prefetch(self, asset_ids: Iterable[str]) -> int:
        """Cache the market info of many assets in pipelined round trips (start-up); returns how many exist."""
        ids = list(asset_ids)
        found = 0
        now = self.clock()
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            pipe = self.redis.pipeline(transaction=False)
            for asset_id in chunk:
                pipe.hgetall(market_key(asset_id))
            for asset_id, raw in zip(chunk, await pipe.execute(), strict=True):
                if raw:
                    self._cache[asset_id] = (now, MarketInfo.from_hash(raw))
                    found += 1
        return found

    def forget(self, asset_id: str) -> None:
        """Drop a cached entry (the tick size changed)."""
        self._cache.pop(asset_id, None)

    async def books(self, asset_ids: Iterable[str]) -> dict[str, BookSnapshot]:
        """Stored books of the assets that have one."""
        return (await self.books_and_feed(asset_ids))[0]

    async def books_and_feed(self, asset_ids: Iterable[str]) -> tuple[dict[str, BookSnapshot], FeedBeat | None]:
        """Stored books of the assets that have one, and the book feed's beat read with the first of them (to
        judge each book with :meth:`BookSnapshot.fresh`)."""
        ids = list(asset_ids)
        out: dict[str, BookSnapshot] = {}
        beat: FeedBeat | None = None
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            raws = await self.redis.mget([book_key(a) for a in chunk] + ([BOOK_FEED_KEY] if start == 0 else []))
            if start == 0:
                beat = FeedBeat.from_json(raws.pop())
            for asset_id, raw in zip(chunk, raws, strict=True):
                if raw:
                    out[asset_id] = BookSnapshot.from_json(raw)
        return out, beat

    async def marks(self, asset_ids: Iterable[str]) -> dict[str, Decimal]:
        """Marks of the assets with a book."""
        out = {}
        for asset_id, book in (await self.books(asset_ids)).items():
            mark = book.mark
            if mark is not None:
                out[asset_id] = mark
        return out


def tick_stream(channel: grpc.aio.Channel, consumer: str) -> OpenTicks:
    """``IngestService.StreamPriceTicks`` as an ``open_stream(after_cursor)`` (batches of one tick)."""
    stub = mgrpc.IngestServiceStub(channel)

    async def open_stream(after: str) -> AsyncIterator[TickBatch]:
        async for resp in stub.StreamPriceTicks(mpb.StreamPriceTicksRequest(after_cursor=after, consumer=consumer)):
            yield resp.cursor, [resp.tick]

    return open_stream


def order_event_stream(channel: grpc.aio.Channel,
                       consumer: str) -> Callable[[str], AsyncIterator[tuple[str, epb.OrderEvent]]]:
    """``ExecutorService.StreamOrderEventBatches`` as an ``open_stream(after_cursor)`` of single events (a
    gRPC message per batch costs a fraction of one per event: the consumer re-batches them anyway). An
    executor without that RPC (older than this guard, during a rolling upgrade) is read event by event
    through ``StreamOrderEvents`` instead."""
    stub = egrpc.ExecutorServiceStub(channel)
    batched = True

    async def open_stream(after: str) -> AsyncIterator[tuple[str, epb.OrderEvent]]:
        nonlocal batched
        if batched:
            request = epb.StreamOrderEventBatchesRequest(after_cursor=after, consumer=consumer)
            try:
                async for resp in stub.StreamOrderEventBatches(request):
                    for entry in resp.entries:
                        yield entry.cursor, entry.event
            except grpc.aio.AioRpcError as exc:
                if exc.code() is not grpc.StatusCode.UNIMPLEMENTED:
                    raise
                batched = False
            else:
                return
        async for one in stub.StreamOrderEvents(epb.StreamOrderEventsRequest(after_cursor=after, consumer=consumer)):
            yield one.cursor, one.event

    return open_stream
