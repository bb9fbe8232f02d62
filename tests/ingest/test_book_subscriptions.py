"""The book feed with many watched assets and assets that stop being watched (a real websocket venue on loopback):
subscriptions go in chunks, so the venue's answer of snapshots stays within a frame; a book no longer watched is
deleted from Redis, so no beat of the session vouches for it frozen."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.server import serve

from common.resp import RespConnection
from common.retry import Backoff
from services.executor.adapters.book_reader import FreshBooks
from services.ingest.bookpub import BookPublisher
from services.ingest.books import BookState
from services.ingest.clob_feed import SUBSCRIBE_CHUNK, ClobFeed, ClobHandler
from services.ingest.metrics import IngestMetrics
from tests.helpers import eventually

pytestmark = pytest.mark.integration

MARKET = "0x" + "c" * 64


def _asset(i: int) -> str:
    return str(10**76 + i)  # a 77-digit token id, like the venue's


def _book(asset: str, levels: int, ask: str = "0.990") -> dict[str, Any]:
    """A book of ``levels`` a side in wire order (bids ascending, asks descending: the best is the last)."""
    bids = [{"price": f"{0.01 + i * 0.001:.3f}", "size": f"{1000 + i}.25"} for i in range(levels)]
    asks = [{"price": f"{float(ask) + (levels - 1 - i) * 0.001:.3f}", "size": f"{1000 + i}.75"} for i in range(levels)]
    return {"market": MARKET, "asset_id": asset, "timestamp": str(int(time.time() * 1000)), "hash": "h",
            "bids": bids, "asks": asks, "tick_size": "0.001", "event_type": "book"}


class Venue:
    """Answers every subscription with the snapshots of its assets in one array frame, as the venue does."""

    def __init__(self, levels: int) -> None:
        self.levels = levels
        self.asks: dict[str, str] = {}
        self.subscriptions: list[list[str]] = []
        self.frames: list[int] = []

    async def __call__(self, ws: Any) -> None:
        async for message in ws:
            if message == "PING":
                await ws.send("PONG")
                continue
            msg = orjson.loads(message)
            if msg.get("operation") == "unsubscribe":
                continue
            self.subscriptions.append(msg["assets_ids"])
            frame = orjson.dumps([_book(a, self.levels, self.asks.get(a, "0.52")) for a in msg["assets_ids"]])
            self.frames.append(len(frame))
            await ws.send(frame.decode())


async def test_every_book_of_a_large_watched_set_gets_its_snapshot() -> None:
    """500 assets of 50 levels a side: one subscription's answer would be 1.9 MB, past the 1-MiB frame limit, and
    no book would get its snapshot over the socket (each resynced from REST, 20 a second, at every reconnect)."""
    venue = Venue(levels=50)
    server = await serve(venue, "127.0.0.1", 0, max_size=None)
    books, metrics = BookState(), IngestMetrics()
    feed = ClobFeed(f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}",
                    ClobHandler(books, lambda _t, _ns: None, metrics), metrics, stall_s=30.0,
                    backoff=Backoff(0.05, 0.1))
    assets = {_asset(i) for i in range(500)}
    await feed.set_assets(assets)
    task = asyncio.create_task(feed.run())
    try:
        await eventually(lambda: len(books.books) == 500 and all(b.synced for b in books.books.values()),
                         timeout_s=10)
        assert {a for sub in venue.subscriptions for a in sub} == assets
        assert max(len(sub) for sub in venue.subscriptions) == SUBSCRIBE_CHUNK
        assert metrics.count("parse_errors", "clob", "TOO_LARGE") == 0
        # assets added later go in chunks too
        more = {_asset(1000 + i) for i in range(2 * SUBSCRIBE_CHUNK + 1)}
        await feed.change_assets(more, set())
        await eventually(lambda: all(books.books[a].synced for a in more), timeout_s=10)
        assert [len(sub) for sub in venue.subscriptions[-3:]] == [SUBSCRIBE_CHUNK, SUBSCRIBE_CHUNK, 1]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        server.close()


async def test_a_book_no_longer_watched_is_deleted_not_served_frozen(redis_url: str) -> None:
    a = _asset(1)
    venue = Venue(levels=1)
    venue.asks[a] = "0.52"
    server = await serve(venue, "127.0.0.1", 0)
    books, metrics = BookState(), IngestMetrics()
    publisher = BookPublisher(lambda: RespConnection.open(redis_url), books, metrics)
    feed = ClobFeed(f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}", ClobHandler(books, publisher.mark, metrics),
                    metrics, ping_interval_s=0.1, stall_s=5.0, backoff=Backoff(0.05, 0.1), on_beat=publisher.beat,
                    beat_interval_s=0.1)
    r = aioredis.from_url(redis_url)
    reader = FreshBooks(r, max_age_s=1.0, wait_s=0.0)  # the executor's reader
    tasks = [asyncio.create_task(publisher.run()), asyncio.create_task(feed.run())]

    async def stored_gone() -> bool:
        return await r.exists(f"tt:book:{a}") == 0

    async def best_ask() -> str | None:
        b = await reader.read(a)
        return None if b is None else str(b.best_ask)

    try:
        await feed.change_assets({a}, set())
        assert await eventually(best_ask) == "0.52"
        # no longer watched (its hour of recent trades is over, the position closed): unsubscribed and deleted
        await feed.change_assets(set(), {a})
        publisher.forget({a})
        venue.asks[a] = "0.80"  # the market moves; nothing comes for it any more
        await eventually(stored_gone)
        assert await best_ask() is None
        # watched again: the new snapshot is what is read
        await feed.change_assets({a}, set())
        assert await eventually(best_ask) == "0.8"
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await r.aclose()
        server.close()
