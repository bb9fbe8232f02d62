"""Resumable consumers on real Redis over a real gRPC stream: resuming, batches, dead letters, outages."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import psycopg
import pytest
import redis.exceptions
from psycopg_pool import PoolTimeout

from common.alerts import OUTBOX, AlertKind
from common.consumer import DeadLetters, RedisCursorStore, ResumableConsumer, storage_unavailable
from common.retry import Backoff
from common.streams import (
    START_OLDEST,
    DurableLog,
    create_stream_redis,
)
from tests.helpers import eventually, internal_channel
from tests.logserver import leader_trades, serve_ingest_log
from tradingtools.market.v1 import market_pb2 as mpb
from tradingtools.market.v1 import market_pb2_grpc as mgrpc


@pytest.mark.integration
async def test_consumer_resumes_after_restart_and_dead_letters(redis_url: str) -> None:
    r = create_stream_redis(redis_url)
    log_ = DurableLog(r, "tt:stream:leader_trades", block_ms=100)
    srv = await serve_ingest_log(log_)
    channel = internal_channel(srv.port)
    open_stream = leader_trades(channel)

    seen: list[str] = []

    async def handle(ev: mpb.LeaderTradeEvent) -> None:
        if ev.id == "poison":
            raise ValueError("bad event")
        seen.append(ev.id)

    def make_consumer() -> ResumableConsumer[mpb.LeaderTradeEvent]:
        return ResumableConsumer("router", open_stream, handle, RedisCursorStore(r), start=START_OLDEST,
                                 dead_letter=DeadLetters(r, "router", lambda e: e.SerializeToString()),
                                 backoff=Backoff(0.001, 0.01), rng=random.Random(1))

    for i in range(3):
        await log_.append(mpb.LeaderTradeEvent(id=f"lt_{i}").SerializeToString())
    consumer = make_consumer()
    task = asyncio.create_task(consumer.run())
    await eventually(lambda: len(seen) == 3)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    for i in (3, 4):
        await log_.append(mpb.LeaderTradeEvent(id=f"lt_{i}").SerializeToString())
    await log_.append(mpb.LeaderTradeEvent(id="poison").SerializeToString())
    await log_.append(mpb.LeaderTradeEvent(id="lt_5").SerializeToString())
    consumer = make_consumer()
    task = asyncio.create_task(consumer.run())
    await eventually(lambda: len(seen) == 6)
    assert seen == [f"lt_{i}" for i in range(6)]
    assert consumer.stats.dead_lettered == 1
    assert await r.xlen("tt:dlq:router") == 1
    dead = [a for a in list(OUTBOX.items) if a.kind == AlertKind.DEAD_LETTERED and a.key == "dead_letter:tt:dlq:router"]
    assert dead and dead[-1].fields["cursor"]  # someone is told that an item went unhandled

    # The upstream server goes away and comes back: the consumer reconnects and resumes.
    await srv.stop(0)
    await log_.append(mpb.LeaderTradeEvent(id="lt_6").SerializeToString())
    srv2 = await serve_ingest_log(log_, srv.port)
    await eventually(lambda: seen[-1:] == ["lt_6"], timeout_s=15)
    assert seen.count("lt_6") == 1 and consumer.stats.reconnects >= 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await channel.close()
    await srv2.stop(0)
    await r.aclose()


@pytest.mark.integration
async def test_batch_consumer_hands_over_what_arrived_in_order_and_resumes(redis_url: str) -> None:
    r = create_stream_redis(redis_url)
    log_ = DurableLog(r, "tt:stream:leader_trades", block_ms=100)
    srv = await serve_ingest_log(log_)
    channel = internal_channel(srv.port)
    stub = mgrpc.IngestServiceStub(channel)

    delivered: list[str] = []

    async def open_stream(after: str) -> AsyncIterator[tuple[str, mpb.LeaderTradeEvent]]:
        async for resp in stub.StreamLeaderTrades(mpb.StreamLeaderTradesRequest(after_cursor=after)):
            delivered.append(resp.event.id)
            yield resp.cursor, resp.event

    batches: list[list[str]] = []
    singles: list[str] = []
    gate = asyncio.Event()

    async def handle(ev: mpb.LeaderTradeEvent) -> None:
        if ev.id == "poison":
            raise ValueError("bad event")
        singles.append(ev.id)

    async def handle_batch(events: list[mpb.LeaderTradeEvent]) -> None:
        if any(e.id == "poison" for e in events):
            raise ValueError("bad batch")
        batches.append([e.id for e in events])
        if len(batches) == 1:
            await gate.wait()  # hold the first batch while more arrive

    def make_consumer() -> ResumableConsumer[mpb.LeaderTradeEvent]:
        return ResumableConsumer("router", open_stream, handle, RedisCursorStore(r), start=START_OLDEST,
                                 dead_letter=DeadLetters(r, "router", lambda e: e.SerializeToString()),
                                 backoff=Backoff(0.001, 0.01), rng=random.Random(1),
                                 handle_batch=handle_batch, max_batch=3)

    consumer = make_consumer()
    task = asyncio.create_task(consumer.run())
    await log_.append(mpb.LeaderTradeEvent(id="lt_0").SerializeToString())
    await eventually(lambda: batches == [["lt_0"]])  # a lone item goes at once
    await log_.append_many([mpb.LeaderTradeEvent(id=f"lt_{i}").SerializeToString() for i in range(1, 6)])
    await eventually(lambda: len(delivered) == 6)  # read ahead while the first batch is held
    assert consumer.stats.handled == 0 and len(batches) == 1
    gate.set()
    await eventually(lambda: consumer.stats.handled == 6)
    assert batches == [["lt_0"], ["lt_1", "lt_2", "lt_3"], ["lt_4", "lt_5"]]  # in order, at most max_batch
    assert singles == [] and consumer.stats.batches == 3

    # A failing batch is handled again item by item: only the poison item is dead-lettered.
    await log_.append_many([mpb.LeaderTradeEvent(id=i).SerializeToString() for i in ("lt_6", "poison", "lt_7")])
    await eventually(lambda: consumer.stats.handled == 9)
    handled = [i for b in batches for i in b] + singles
    assert sorted(handled) == [f"lt_{i}" for i in range(8)]  # each once, whichever way it went
    assert consumer.stats.batch_fallbacks == 1 and consumer.stats.dead_lettered == 1
    assert await r.xlen("tt:dlq:router") == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    # The saved cursor is the last handled item's: a new consumer starts after it.
    batches.clear()
    await log_.append(mpb.LeaderTradeEvent(id="lt_8").SerializeToString())
    consumer = make_consumer()
    task = asyncio.create_task(consumer.run())
    await eventually(lambda: batches == [["lt_8"]])

    # The upstream goes away and comes back: the batch reader reconnects and resumes, nothing twice.
    await eventually(lambda: consumer.stats.handled == 1)
    await srv.stop(0)
    await log_.append(mpb.LeaderTradeEvent(id="lt_9").SerializeToString())
    srv2 = await serve_ingest_log(log_, srv.port)
    await eventually(lambda: batches[-1:] == [["lt_9"]], timeout_s=15)
    assert [i for b in batches for i in b] == ["lt_8", "lt_9"] and consumer.stats.reconnects >= 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await channel.close()
    await srv2.stop(0)
    await r.aclose()


class _NoCursors:
    async def get(self, consumer: str) -> str | None:
        return None

    async def set(self, consumer: str, cursor: str) -> None:
        return None


@pytest.mark.parametrize(("bounds", "named"), [
    ({"max_batch": 0}, "max_batch"),  # an empty batch
    ({"max_batch_bytes": 0}, "max_batch_bytes"),  # a batch byte budget must be positive
])
def test_batch_consumer_rejects_empty_batch_bounds(bounds: dict[str, int], named: str) -> None:
    async def nothing(_: str) -> AsyncIterator[tuple[str, int]]:
        yield "1", 1

    async def handle(_: object) -> None:
        return None

    with pytest.raises(ValueError, match=named):
        ResumableConsumer("x", nothing, handle, _NoCursors(), handle_batch=None, **bounds)


@pytest.mark.parametrize(("error", "transient"), [
    (psycopg.OperationalError("connection to server lost"), True),
    (PoolTimeout("couldn't get a connection after 5.00 sec"), True),
    (redis.exceptions.ConnectionError("Connection refused"), True),
    (ConnectionResetError("reset by peer"), True),
    (psycopg.errors.QueryCanceled("canceling statement due to statement timeout"), False),
    (psycopg.errors.UniqueViolation("duplicate key"), False),
    (ValueError("bad event"), False),
])
def test_storage_unavailable(error: BaseException, transient: bool) -> None:
    assert storage_unavailable(error) is transient


async def test_an_item_failing_on_a_storage_outage_is_retried_until_it_is_over_not_dead_lettered() -> None:
    outage = {"left": 8}  # more failures than max_handler_attempts
    seen: list[str] = []
    dead: list[str] = []

    async def handle(item: str) -> None:
        if outage["left"]:
            outage["left"] -= 1
            raise psycopg.OperationalError("connection to server lost")
        seen.append(item)

    async def open_stream(after: str) -> AsyncIterator[tuple[str, str]]:
        if after < "1-0":
            yield "1-0", "lt_1"
        await asyncio.Event().wait()

    async def dead_letter(cursor: str, _item: str, _exc: BaseException) -> None:
        dead.append(cursor)

    consumer: ResumableConsumer[str] = ResumableConsumer(
        "test", open_stream, handle, _NoCursors(), start="0-0", dead_letter=dead_letter,
        backoff=Backoff(0.001, 0.005), max_handler_attempts=2, rng=random.Random(1))
    task = asyncio.create_task(consumer.run())
    try:
        await eventually(lambda: seen == ["lt_1"])
        assert dead == [] and consumer.stats.transient_errors == 8 and consumer.stats.dead_lettered == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize(("sized", "read_ahead", "largest_batch"), [
    (True, 10, 2),  # 400-byte items, 1,000 bytes a batch: two a batch, ten read ahead (4,000 bytes)
    (False, 400, 100),  # without sizes: only the counts bound them (4 x max_batch read ahead)
])
async def test_batches_and_the_read_ahead_are_bounded_in_bytes_when_items_are_sized(
        sized: bool, read_ahead: int, largest_batch: int) -> None:
    delivered: list[int] = []
    batches: list[list[bytes]] = []
    gate = asyncio.Event()

    async def open_stream(after: str) -> AsyncIterator[tuple[str, bytes]]:
        for i in range(1, 1001):
            delivered.append(i)
            yield f"{i}-0", bytes(400)
        await asyncio.Event().wait()

    async def handle(item: bytes) -> None:
        raise AssertionError("no batch fails here")

    async def handle_batch(items: list[bytes]) -> None:
        batches.append(items)
        await gate.wait()  # the first batch is held while the reader reads ahead

    consumer: ResumableConsumer[bytes] = ResumableConsumer(
        "test", open_stream, handle, _NoCursors(), start="0-0", handle_batch=handle_batch, max_batch=100,
        item_bytes=len if sized else None, max_batch_bytes=1000)
    task = asyncio.create_task(consumer.run())
    try:
        await eventually(lambda: len(batches) == 1 and len(delivered) == len(batches[0]) + read_ahead)
        await asyncio.sleep(0.1)
        assert len(delivered) == len(batches[0]) + read_ahead  # the reader waits for room
        gate.set()
        await eventually(lambda: consumer.stats.handled == 1000)
        assert max(len(b) for b in batches) == largest_batch and sum(len(b) for b in batches) == 1000
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
