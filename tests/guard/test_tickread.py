"""The tick log reader on real Redis: batches in log order, cursors, resume, bad entries, failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, cast

import pytest
import uvloop

from common.consumer import RedisCursorStore
from common.fastredis import FastCursorStore, FastRedis
from common.resp import RespClosed, RespConnection, RespError
from common.streams import PRICE_TICKS, DurableLog, create_stream_redis
from services.guard.adapters.tick_reader import TickBatch, log_tick_stream, parse_entries
from tradingtools.market.v1 import market_pb2 as mpb


@pytest.fixture
async def ticks_log(redis_url: str) -> AsyncIterator[DurableLog]:
    client = create_stream_redis(redis_url)
    yield DurableLog(client, PRICE_TICKS)
    await client.aclose()


def _tick(i: int) -> bytes:
    return mpb.PriceTick(asset_id=f"a{i}", best_bid="0.5", received_time_ns=i + 1).SerializeToString()


def _open(log_: DurableLog, after: str, **kw: Any) -> AsyncGenerator[TickBatch, None]:
    return cast(AsyncGenerator[TickBatch, None], log_tick_stream(log_, **kw)(after))


async def _take(stream: AsyncIterator[TickBatch], n: int) -> tuple[str, list[str]]:
    """Read batches until ``n`` ticks: (last cursor, asset ids)."""
    got: list[str] = []
    cursor = ""
    while len(got) < n:
        cursor, batch = await asyncio.wait_for(anext(stream), 5)
        got.extend(t.asset_id for t in batch)
    return cursor, got


@pytest.mark.integration
async def test_reads_everything_after_the_cursor_in_batches_and_resumes(ticks_log: DurableLog) -> None:
    cursors = [await ticks_log.append(_tick(i)) for i in range(5)]
    stream = _open(ticks_log, cursors[1], batch=2, block_ms=200)
    cursor, got = await _take(stream, 3)
    assert got == ["a2", "a3", "a4"]
    assert cursor == cursors[4]
    waiting = asyncio.ensure_future(_take(stream, 2))  # caught up: a blocking read wakes on the next append
    await asyncio.sleep(0.3)  # longer than block_ms: an empty block must not end the stream
    later = [await ticks_log.append(_tick(i)) for i in (5, 6)]
    cursor, got = await waiting
    assert got == ["a5", "a6"] and cursor == later[1]
    await stream.aclose()
    resumed = _open(ticks_log, cursors[3])
    assert (await _take(resumed, 3))[1] == ["a4", "a5", "a6"]
    await resumed.aclose()


@pytest.mark.integration
async def test_an_unparsable_entry_is_skipped_and_the_cursor_moves_past_it(ticks_log: DurableLog) -> None:
    start = await ticks_log.last_cursor()
    await ticks_log.append(b"\xff\xff\xff")
    await ticks_log.redis.xadd(ticks_log.name, {"other": b"x"})
    last = await ticks_log.append(_tick(7))
    stream = _open(ticks_log, start)
    cursor, batch = await asyncio.wait_for(anext(stream), 5)
    assert [t.asset_id for t in batch] == ["a7"] and cursor == last
    await stream.aclose()


def test_parse_entries_finds_the_payload_field_anywhere() -> None:
    entries: list[Any] = [[b"1-0", [b"x", b"1", b"p", _tick(1)]], [b"2-0", [b"p", _tick(2)]]]
    assert parse_entries(entries) == ("2-0", [mpb.PriceTick.FromString(_tick(1)), mpb.PriceTick.FromString(_tick(2))])


@pytest.mark.integration
async def test_works_on_uvloop(ticks_log: DurableLog) -> None:
    """The service runs on uvloop, whose transports are not asyncio's classes."""
    kw = ticks_log.redis.connection_pool.connection_kwargs

    async def ping() -> Any:
        conn = await RespConnection.open_tcp(kw["host"], kw["port"])
        try:
            return await conn.call(b"PING", timeout_s=5)
        finally:
            conn.close()

    assert await asyncio.to_thread(uvloop.run, ping()) == b"PONG"


@pytest.mark.integration
async def test_error_replies_and_a_lost_connection_raise(ticks_log: DurableLog) -> None:
    kw = ticks_log.redis.connection_pool.connection_kwargs
    conn = await RespConnection.open_tcp(kw["host"], kw["port"], db=int(kw.get("db") or 0))
    with pytest.raises(RespError, match="unknown command"):
        await conn.call(b"NOSUCHCOMMAND", timeout_s=5)
    assert await conn.call(b"PING", timeout_s=5) == b"PONG"
    pending = asyncio.ensure_future(conn.call(b"BLPOP", b"tt:test:never", b"10", timeout_s=5))
    await asyncio.sleep(0.05)
    conn.close()
    with pytest.raises(RespClosed, match="closed"):
        await pending
    with pytest.raises(RespClosed):
        await conn.call(b"PING", timeout_s=5)


@pytest.mark.integration
async def test_a_reply_that_never_comes_times_out(ticks_log: DurableLog) -> None:
    kw = ticks_log.redis.connection_pool.connection_kwargs
    conn = await RespConnection.open_tcp(kw["host"], kw["port"])
    with pytest.raises(RespClosed, match="timed out"):
        await conn.call(b"BLPOP", b"tt:test:never", b"10", timeout_s=0.2)
    assert conn.closed


@pytest.mark.integration
async def test_the_fast_cursor_store_shares_redis_cursor_store_keys_and_reconnects(redis_url: str) -> None:
    client = create_stream_redis(redis_url)
    fast = FastRedis(redis_url)
    store = FastCursorStore(fast)
    try:
        old = RedisCursorStore(client)
        await old.set("guard-orders", "5-0")  # saved by an older guard
        assert await store.get("guard-orders") == "5-0"
        assert await store.get("nobody") is None
        await store.set("guard-orders", "6-1")
        assert await old.get("guard-orders") == "6-1"
        (await fast.connection()).close()  # the connection drops: the next command reconnects
        await store.set("guard-orders", "7-0")
        assert await old.get("guard-orders") == "7-0"
    finally:
        fast.close()
        await client.aclose()


@pytest.mark.integration
async def test_a_least_interval_between_reads_gathers_entries_under_load(ticks_log: DurableLog) -> None:
    first = await ticks_log.append(_tick(0))
    stream = _open(ticks_log, "0-0", block_ms=2000, min_interval_s=0.3)
    assert (await asyncio.wait_for(anext(stream), 5))[0] == first  # the first read is not held back
    waiting = asyncio.ensure_future(anext(stream))  # started within 0.3 s of the last read: waits, then reads
    for i in (1, 2, 3):
        await ticks_log.append(_tick(i))
    _cursor, batch = await asyncio.wait_for(waiting, 5)
    assert [t.asset_id for t in batch] == ["a1", "a2", "a3"]
    await asyncio.sleep(0.35)  # quiet for longer than the interval: the next entry is read at once
    started = asyncio.get_running_loop().time()
    waiting = asyncio.ensure_future(anext(stream))
    await ticks_log.append(_tick(4))
    _cursor, batch = await asyncio.wait_for(waiting, 5)
    assert [t.asset_id for t in batch] == ["a4"] and asyncio.get_running_loop().time() - started < 0.25
    await stream.aclose()
