"""The books orders are priced on (real Redis, through the executor's pipelined client): fresh ones only; a stale
one is waited for a bounded time while the book feed is alive, then the order goes without it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from common.fastredis import FastRedis
from common.marketstate import BOOK_FEED_KEY, BookSnapshot, FeedBeat, book_key
from services.executor.adapters.book_reader import FreshBooks

pytestmark = pytest.mark.integration
D = Decimal
ASSET = "7"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def book(*, updated_ms: int, session: str = "", snapshot: bool = True, ask: str = "0.5") -> BookSnapshot:
    asks = ((D(ask), D("10")),) if snapshot else ()
    return BookSnapshot(ASSET, "0xc", (), asks, D("0.01"), 1, updated_ms, None, snapshot, session)


@pytest.fixture
async def fast(redis_url: str) -> AsyncIterator[FastRedis]:
    client = FastRedis(redis_url)
    yield client
    await client.aclose()


async def store(fast: FastRedis, b: BookSnapshot, beat: FeedBeat | None = None) -> None:
    await fast.set(book_key(ASSET), b.to_json())
    if beat is not None:
        await fast.set(BOOK_FEED_KEY, beat.to_json())


async def test_fresh_books_are_read_as_they_are(fast: FastRedis) -> None:
    books = FreshBooks(fast, max_age_s=5.0, wait_s=1.0)
    rest = book(updated_ms=now_ms())
    await store(fast, rest)
    got = await books.read(ASSET)
    assert got == rest and await books.read(ASSET) is got  # parsed once while the stored form is the same
    quiet = book(updated_ms=now_ms() - 60_000, session="p.1")  # not changed for a minute, the feed is alive
    await store(fast, quiet, FeedBeat("p.1", now_ms()))
    assert await books.read(ASSET) == quiet and books.waited == 0
    assert await books.read("nothing stored") is None


async def test_a_stale_book_is_waited_for_and_the_resynced_one_is_used(fast: FastRedis) -> None:
    books = FreshBooks(fast, max_age_s=5.0, wait_s=5.0, poll_s=0.02)
    await store(fast, book(updated_ms=now_ms(), session="p.1", ask="0.9"), FeedBeat("p.2", now_ms()))
    reading = asyncio.ensure_future(books.read(ASSET))  # the book of the last session: waited for
    await asyncio.sleep(0.1)
    assert not reading.done()
    resynced = book(updated_ms=now_ms(), session="p.2", ask="0.6")
    await store(fast, resynced)
    assert await asyncio.wait_for(reading, 5.0) == resynced and books.waited == 1


@pytest.mark.parametrize("stored", [
    book(updated_ms=0, session="p.1"),  # the feed moved on
    book(updated_ms=0, session="p.2", snapshot=False),  # never snapshotted: no levels known
    book(updated_ms=0),  # a REST snapshot of long ago
])
async def test_a_book_that_stays_stale_is_not_used_after_the_wait(fast: FastRedis, stored: BookSnapshot) -> None:
    books = FreshBooks(fast, max_age_s=5.0, wait_s=0.2, poll_s=0.02, cool_down_s=60.0)
    await store(fast, stored, FeedBeat("p.2", now_ms()))
    started = time.monotonic()
    assert await books.read(ASSET) is None
    assert time.monotonic() - started >= 0.2 and books.waited == 1
    started = time.monotonic()
    assert await books.read(ASSET) is None  # not waited for again right away
    assert time.monotonic() - started < 0.2 and books.waited == 1


async def test_no_wait_without_a_live_book_feed(fast: FastRedis) -> None:
    books = FreshBooks(fast, max_age_s=5.0, wait_s=5.0)
    await store(fast, book(updated_ms=0))  # no beat at all: nothing would resync it
    started = time.monotonic()
    assert await books.read(ASSET) is None
    await store(fast, book(updated_ms=0, session="p.1"), FeedBeat("p.1", now_ms() - 60_000))  # the feed is gone
    assert await books.read(ASSET) is None
    assert time.monotonic() - started < 1.0 and books.waited == 0


async def test_a_stale_book_is_not_priced_on_but_still_names_its_market(fast: FastRedis) -> None:
    """Intake takes the condition id of the market a token's book names; a book too old to price on names it too."""
    books = FreshBooks(fast, max_age_s=5.0, wait_s=0.0)
    market = "0x" + "5e" * 32
    await store(fast, BookSnapshot(ASSET, market, (), ((D("0.5"), D("10")),), D("0.01"), 1, now_ms() - 60_000))
    assert await books.read(ASSET) is None and books.unfresh == 1
    assert books.market(ASSET) == market
    await fast.call("DEL", book_key(ASSET))
    assert await books.read(ASSET) is None and books.market(ASSET) == ""
    assert books.market("never read") == ""
