"""The in-memory tail of a durable log: pure buffer rules, and serving a real Redis log without loss."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from common.livefeed import LiveFeed, entry_key
from common.streams import DurableLog, create_stream_redis


@pytest.mark.parametrize(("cursor", "key"), [("0-0", (0, 0)), ("1700000000000-5", (1700000000000, 5)),
                                             ("12", (12, 0))])
def test_entry_key(cursor: str, key: tuple[int, int]) -> None:
    assert entry_key(cursor) == key


def test_unprimed_feed_covers_nothing() -> None:
    feed = LiveFeed()
    feed.publish("5-0", b"a")
    assert not feed.covers("0-0")
    assert not feed.covers("5-0")


@pytest.mark.parametrize(
    ("primed", "cursor", "covered", "expected"),
    [
        ("3-0", "3-0", True, [b"a", b"b"]),
        ("3-0", "4-0", True, [b"a", b"b"]),
        ("3-0", "5-0", True, [b"b"]),
        ("3-0", "6-0", True, []),
        ("3-0", "2-9", False, None),
        ("5-0", "5-0", True, [b"b"]),  # priming after a publish drops what the log end already covers
    ],
)
def test_after_and_covers(primed: str, cursor: str, covered: bool, expected: list[bytes] | None) -> None:
    feed = LiveFeed()
    feed.publish("5-0", b"a")
    feed.prime(primed)
    feed.publish("6-0", b"b")
    assert feed.covers(cursor) is covered
    if expected is not None:
        assert [p for _, p in feed.after(cursor)] == expected


def test_trimming_moves_coverage_forward() -> None:
    feed = LiveFeed(max_entries=2)
    feed.prime("0-0")
    for i in range(1, 5):
        feed.publish(f"{i}-0", bytes([i]))
    assert not feed.covers("1-0")  # entry 2 was dropped: a reader at 1 must read Redis
    assert feed.covers("2-0")
    assert [c for c, _ in feed.after("2-0")] == ["3-0", "4-0"]


def test_byte_bound_keeps_the_newest_entry() -> None:
    feed = LiveFeed(max_bytes=10)
    feed.prime("0-0")
    feed.publish("1-0", b"x" * 8)
    feed.publish("2-0", b"y" * 8)
    assert [c for c, _ in feed.after("1-0")] == ["2-0"]
    assert not feed.covers("0-0")


def test_out_of_order_publish_sends_readers_back_to_redis() -> None:
    feed = LiveFeed()
    feed.prime("0-0")
    feed.publish("5-0", b"a")
    feed.publish("4-0", b"late")
    assert feed.out_of_order == 1
    assert not feed.covers("3-0")
    assert feed.after("4-0") == []


async def _take(it: AsyncIterator[tuple[str, bytes]], n: int) -> list[bytes]:
    out = []
    async for _cursor, payload in it:
        out.append(payload)
        if len(out) == n:
            return out
    return out


@pytest.mark.integration
async def test_live_tail_catches_up_from_redis_then_serves_memory(redis_url: str) -> None:
    r = create_stream_redis(redis_url)
    old = DurableLog(r, "tt:stream:live")
    first = await old.append(b"before-1")
    await old.append(b"before-2")  # written by an earlier incarnation: only in Redis
    log_ = DurableLog(r, "tt:stream:live", block_ms=200, live=LiveFeed())
    await log_.prime()
    reader = log_.tail("0-0")
    taker = asyncio.create_task(_take(reader, 5))
    await log_.append(b"new-1")
    cursor = await r.xadd("tt:stream:live", {b"p": b"script"})  # appended by a script, then published
    log_.published(cursor.decode(), b"script")
    await log_.append_many([b"new-2"])
    assert await asyncio.wait_for(taker, 5) == [b"before-1", b"before-2", b"new-1", b"script", b"new-2"]
    # a reader resuming from an old cursor gets the rest once, in order
    assert await asyncio.wait_for(_take(log_.tail(first), 4), 5) == [b"before-2", b"new-1", b"script", b"new-2"]
    assert log_.live is not None and log_.live.published == 3
    await r.aclose()


@pytest.mark.integration
async def test_reader_outrun_by_the_buffer_reads_redis_without_loss(redis_url: str) -> None:
    r = create_stream_redis(redis_url)
    log_ = DurableLog(r, "tt:stream:live2", block_ms=200, live=LiveFeed(max_entries=3))
    await log_.prime()
    start = await log_.last_cursor()
    await log_.append_many([str(i).encode() for i in range(10)])
    got = await asyncio.wait_for(_take(log_.tail(start), 10), 5)
    assert got == [str(i).encode() for i in range(10)]
    await r.aclose()
