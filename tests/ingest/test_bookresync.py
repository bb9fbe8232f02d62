"""Books the socket does not keep in sync: stored as not snapshotted, resynced from REST ``/book`` with retries,
and never trusted across a restart (the book feed's session and beat)."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from common.marketstate import BOOK_FEED_KEY, WATCH_CHANNEL, WATCH_POSITIONS, BookSnapshot, FeedBeat, read_book
from common.retry import Backoff
from sim.polymarket import PolymarketSim
from tests.helpers import eventually
from tests.ingest.conftest import IngestFactory

pytestmark = pytest.mark.integration
D = Decimal
MAX_AGE_MS = 5_000


async def watch(r: aioredis.Redis, *assets: str) -> None:
    await r.sadd(WATCH_POSITIONS, *assets)
    await r.publish(WATCH_CHANNEL, WATCH_POSITIONS)


async def stored(r: aioredis.Redis, asset: str) -> tuple[BookSnapshot | None, FeedBeat | None]:
    return await read_book(r, asset), FeedBeat.from_json(await r.get(BOOK_FEED_KEY))


def fresh(book: BookSnapshot | None, beat: FeedBeat | None) -> bool:
    return book is not None and book.fresh(time.time_ns() // 1_000_000, MAX_AGE_MS, beat)


def book_requests(sim: PolymarketSim, asset: str) -> int:
    return sum(1 for u in sim.clob.rest_requests if u == f"/book?token_id={asset}")


async def test_a_book_the_venue_has_none_of_is_retried_until_it_has_one(sim: PolymarketSim, run_ingest: IngestFactory,
                                                                       redis_url: str) -> None:
    r = aioredis.from_url(redis_url)
    market = sim.add_market()
    yes = market.tokens[0]
    sim.clob.withhold_book(yes)  # /book answers 404 and the subscription brings no snapshot
    await watch(r, yes)
    app = await run_ingest(book_snapshot_grace_s=0.2)
    app.market_sync.backoff = Backoff(0.05, 0.2)
    await eventually(lambda: book_requests(sim, yes) >= 3, message="/book asked again after each 404")
    book, beat = await stored(r, yes)
    assert beat is not None and beat.session == app.clob.session
    assert book is None or (not book.snapshot and not fresh(book, beat))

    sim.clob.withhold_book(yes, False)  # the market has a book again

    async def resynced() -> bool:
        return fresh(*await stored(r, yes))
    await eventually(resynced, message="the book resynced from REST")
    book, beat = await stored(r, yes)
    assert book is not None and book.snapshot and book.session == app.clob.session
    assert (book.best_bid, book.best_ask) == (D("0.49"), D("0.51"))
    assert yes not in app.market_sync.resyncing
    await r.aclose()


async def test_books_stored_before_a_restart_are_not_trusted_until_resynced(
        sim: PolymarketSim, run_ingest: IngestFactory, redis_url: str) -> None:
    r = aioredis.from_url(redis_url)
    market = sim.add_market()
    yes = market.tokens[0]
    await watch(r, yes)
    first = await run_ingest()

    async def synced() -> bool:
        return fresh(*await stored(r, yes))
    await eventually(synced)
    sim.books.set_book(yes)  # the book empties out: stored as an empty snapshot

    async def empty() -> bool:
        book, beat = await stored(r, yes)
        return fresh(book, beat) and book is not None and not book.asks and not book.bids
    await eventually(empty)
    await first.stop(grace_s=0.1)

    sim.clob.withhold_book(yes)  # no book at the venue while ingest starts again
    second = await run_ingest(book_snapshot_grace_s=0.2)
    second.market_sync.backoff = Backoff(0.05, 0.2)

    async def new_session() -> FeedBeat | None:
        _book, beat = await stored(r, yes)
        return beat if beat is not None and beat.session == second.clob.session else None
    beat = await eventually(new_session)
    assert beat.session != first.clob.session
    book, beat = await stored(r, yes)
    assert book is not None and not fresh(book, beat)  # the empty book of the last run says nothing now
    await eventually(lambda: book_requests(sim, yes) >= 2)

    sim.books.set_book(yes, bids=[("0.40", "10")], asks=[("0.45", "10")], emit=False)  # a book again, no frame
    sim.clob.withhold_book(yes, False)

    async def back() -> BookSnapshot | None:
        book, beat = await stored(r, yes)
        return book if fresh(book, beat) else None
    book = await eventually(back)
    assert (book.best_bid, book.best_ask) == (D("0.40"), D("0.45"))
    await r.aclose()


async def test_a_lost_feed_stores_every_book_as_not_snapshotted(sim: PolymarketSim, run_ingest: IngestFactory,
                                                               redis_url: str) -> None:
    r = aioredis.from_url(redis_url)
    market = sim.add_market()
    yes, no = market.tokens
    await watch(r, yes, no)
    app = await run_ingest()

    async def both() -> bool:
        return all([fresh(*await stored(r, a)) for a in (yes, no)])
    await eventually(both)
    sim.clob.withhold_book(no)  # the reconnect brings a snapshot of the first token only
    await sim.clob.disconnect_all()
    await eventually(lambda: app.clob.connections == 2)

    async def after() -> bool:
        (yes_book, beat), (no_book, _) = await stored(r, yes), await stored(r, no)
        return (beat is not None and beat.session == app.clob.session and fresh(yes_book, beat)
                and no_book is not None and not no_book.snapshot)
    await eventually(after, message="the book without a snapshot stored as not snapshotted")
    await r.aclose()
