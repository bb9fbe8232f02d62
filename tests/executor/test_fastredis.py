"""The executor's use of the pipelined Redis client against a real Redis: book reads, cursors and
reservation releases in redis-py's forms, OrderEvent appends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal as D

import pytest
import redis.asyncio as aioredis

from common import reservations
from common.fastredis import FastCursorStore, FastRedis, append_events
from common.livefeed import LiveFeed
from common.marketstate import BookSnapshot, read_book, write_book
from common.streams import ORDER_EVENTS, DurableLog, create_stream_redis

pytestmark = pytest.mark.integration


@pytest.fixture
async def fast(redis_url: str) -> AsyncIterator[FastRedis]:
    client = FastRedis(redis_url, timeout_s=2.0)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def plain(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


async def test_book_reads_and_cursors_match_the_redis_py_forms(fast: FastRedis, plain: aioredis.Redis) -> None:
    book = BookSnapshot("a1", "0xc", ((D("0.49"), D("10")),), ((D("0.51"), D("5")),), D("0.01"), 1, 2)
    await write_book(plain, book)
    assert await read_book(fast, "a1") == await read_book(plain, "a1") == book
    assert await read_book(fast, "missing") is None
    cursors = FastCursorStore(fast)
    assert await cursors.get("executor") is None
    await cursors.set("executor", "1700000000000-5")
    assert await plain.get("tt:cursor:executor") == b"1700000000000-5"
    assert await cursors.get("executor") == "1700000000000-5"


async def test_scripts_run_by_sha_and_are_reloaded_after_a_flush(fast: FastRedis, plain: aioredis.Redis) -> None:
    await plain.set(f"{reservations.WALLET_PREFIX}x", "1")  # an unrelated key: releases of unknown orders are 0
    assert await reservations.release_many(fast, ["co_unknown_1", "co_unknown_2"]) == [0, 0]
    await plain.script_flush()
    assert await reservations.release_many(fast, ["co_unknown_3"]) == [0]
    assert await fast.eval("return ARGV[1]", 0, "hello") == b"hello"


async def test_appended_events_are_in_the_stream_and_the_live_feed_in_order(fast: FastRedis, redis_url: str) -> None:
    sredis = create_stream_redis(redis_url)
    live = LiveFeed()
    log_ = DurableLog(sredis, ORDER_EVENTS, live=live)
    try:
        await log_.prime()
        payloads = [f"event-{i}".encode() for i in range(25)]
        cursors = await append_events(fast, log_, payloads)
        assert await append_events(fast, log_, []) == []
        assert [(c, p) for c, p in await log_.read("0-0", count=100, block_ms=0)] == list(
            zip(cursors, payloads, strict=True))
        assert live.published == 25
        one = await append_events(fast, log_, [b"last"])
        assert await log_.last_cursor() == one[0] and live.published == 26
    finally:
        await sredis.aclose()
