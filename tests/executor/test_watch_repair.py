"""``tt:watch:positions`` follows the positions held in PostgreSQL, even when a post-commit step failed.

Ingest follows an asset's book only while it is in a watch set, and guard values a position at that book's
mark: an open position whose asset is missing from the set has a stale (or no) mark for good. The journal
adds an opened position's asset after the commit; whatever that step missed (a Redis error, a Redis restart,
another replica's removal racing an opening) the journal's sweep repairs from PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from decimal import Decimal as D
from typing import Any

import orjson
import psycopg
import pytest
import redis.asyncio as aioredis

from common.marketstate import WATCH_CHANNEL, WATCH_POSITIONS
from common.storage import create_pool
from services.executor.adapters.order_store import PLANNER_OPTIONS, OrderStore
from services.executor.domain import order_lifecycle as lc
from services.executor.domain import venue_orders as v
from services.executor.domain.ticket import INSIDERS, Ticket
from services.executor.journal import Journal
from services.executor.order_runner import OrderRunner, RunnerConfig
from tests.executor.conftest import make_order
from tests.helpers import eventually
from tradingtools.common.v1 import common_pb2 as cpb

pytestmark = pytest.mark.integration


def _rows(db_url: str, sql: str, *args: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        cur = conn.execute(sql, args)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def _hold(db_url: str, wallet: str, asset: str, size: str) -> None:
    _rows(db_url, "INSERT INTO positions (follower_wallet_id, asset_id, wallet, size) VALUES (%s, %s, %s, %s)",
          wallet, asset, "0x" + wallet, D(size))


class _Log:
    """The order-event log's append (the sweep's path)."""

    def __init__(self) -> None:
        self.appended: list[bytes] = []

    async def append_many(self, payloads: list[bytes]) -> list[str]:
        self.appended += payloads
        return [f"{i}-0" for i in range(len(payloads))]


class _NoVenue:
    """A venue the tests never call (they hand the venue's answer to the runner themselves)."""

    name = "insiders"

    async def close(self) -> None:
        return None


class _CountingStore(OrderStore):
    """The production store, counting the watch set's repair queries; ``hide`` leaves assets out of the next
    full query (as if it ran just before another replica committed their positions)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.full_queries = 0
        self.hide: set[str] = set()

    async def held_assets(self, among: list[str] | None = None) -> set[str]:
        held = await super().held_assets(among)
        if among is None:
            self.full_queries += 1
            held, self.hide = held - self.hide, set()
        return held


async def _release(_redis: Any, ids: list[str]) -> list[int]:
    return [0] * len(ids)


@contextlib.asynccontextmanager
async def _parts(db_url: str, redis_url: str) -> AsyncIterator[tuple[_CountingStore, Any]]:
    pool = await create_pool(db_url, min_size=1, max_size=4, autocommit=True, options=PLANNER_OPTIONS)
    redis = aioredis.from_url(redis_url, decode_responses=True)
    try:
        yield _CountingStore(pool), redis
    finally:
        await redis.aclose()
        await pool.close()


async def _open_position(journal: Journal, store: OrderStore, redis: Any, db_url: str, i: int) -> str:
    """A BUY of wallet w_{i} filled for 20 shares, through the runner and the journal; its asset."""
    coid = f"co_watch{i}"
    order = make_order(i, client_order_id=coid, side=cpb.SIDE_BUY, asset_id=f"asset_{i}")
    ticket = Ticket(order, INSIDERS, None, time.time_ns())
    life = lc.apply(lc.OrderLife(coid), lc.OrderSubmitted(D("0.50")))
    await store.insert_intents([(ticket, life)])
    runner = OrderRunner(journal=journal, venues={INSIDERS: _NoVenue()}, gates={}, redis=redis,  # type: ignore[dict-item]
                    config=RunnerConfig(poll_initial_s=3600, poll_max_s=3600))
    filled = v.VenueOrder(f"io_{i}", coid, v.CONFIRMED, D(20), D("0.50"), D(10), D(20))
    await runner.transition(ticket, life, [lc.OrderAccepted(f"io_{i}", v.MATCHED), lc.OrderFilled(D(20), D("0.50"))],
                             filled)
    assert _rows(db_url, "SELECT size FROM positions WHERE follower_wallet_id = %s", f"w_{i}") == [(D(20),)]
    return order.asset_id


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_position_opened_while_the_post_commit_step_failed_is_still_watched(db_url: str,
                                                                                    redis_url: str) -> None:
    """The post-commit step fails once (a Redis hiccup while appending the events): the sweep publishes the
    events and does the releases, and the opened position's asset is in the watch set all the same."""
    log = _Log()
    failures = [RuntimeError("redis: connection reset")]

    async def append(payloads: list[bytes]) -> list[str]:
        if failures:
            raise failures.pop()
        return await log.append_many(payloads)

    async with _parts(db_url, redis_url) as (store, redis):
        journal = Journal(store, redis, log, _release, append=append, sweep_interval_s=0.05)  # type: ignore[arg-type]
        runner = asyncio.create_task(journal.run())
        try:
            asset = await _open_position(journal, store, redis, db_url, 2)
            assert not failures, "the post-commit append was attempted (and failed)"
            await eventually(lambda: log.appended and not _rows(db_url, "SELECT 1 FROM order_events_outbox"),
                             message="the sweep published the events the failed post-commit step did not")
            await asyncio.sleep(0.3)
            assert asset in await redis.smembers(WATCH_POSITIONS)
        finally:
            await _stop(runner)


class _FailingWatch:
    """The journal's Redis, whose next ``fail`` MULTI pipelines (the watch set's updates) fail."""

    def __init__(self, redis: Any, fail: int) -> None:
        self._redis = redis
        self.fail = fail

    def pipeline(self, *args: Any, **kw: Any) -> Any:
        if self.fail > 0:
            self.fail -= 1
            raise ConnectionError("redis: connection reset")
        return self._redis.pipeline(*args, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._redis, name)


async def test_a_failed_watch_update_is_repaired_by_the_next_sweep(db_url: str, redis_url: str) -> None:
    """The events are appended but the watch set's SADD fails: the next sweep (not the 30 s period) adds it."""
    async with _parts(db_url, redis_url) as (store, redis):
        flaky = _FailingWatch(redis, fail=0)
        journal = Journal(store, flaky, _Log(), _release, sweep_interval_s=0.05,  # type: ignore[arg-type]
                          watch_repair_interval_s=3600)
        runner = asyncio.create_task(journal.run())
        try:
            await eventually(lambda: store.full_queries >= 1)  # the start-up repair (an empty set: nothing to do)
            flaky.fail = 1
            asset = await _open_position(journal, store, redis, db_url, 3)
            assert flaky.fail == 0, "the watch update was attempted (and failed)"
            await eventually(lambda: redis.sismember(WATCH_POSITIONS, asset), timeout_s=5,
                             message="the sweep repaired the watch set")
            assert journal.stats.watch_added == 1
        finally:
            await _stop(runner)


async def test_the_repair_makes_the_set_the_held_assets_and_announces_the_difference(db_url: str,
                                                                                     redis_url: str) -> None:
    _hold(db_url, "w_1", "held_a", "10")
    _hold(db_url, "w_2", "held_a", "0")
    _hold(db_url, "w_2", "sold_b", "0")  # a position closed: no wallet holds the asset
    _hold(db_url, "w_3", "held_c", "0.5")
    async with _parts(db_url, redis_url) as (store, redis):
        await redis.sadd(WATCH_POSITIONS, "sold_b", "never_d", "held_c")
        watch = redis.pubsub()
        await watch.subscribe(WATCH_CHANNEL)
        journal = Journal(store, redis, _Log(), _release)  # type: ignore[arg-type]
        await journal.repair_watch()
        assert await redis.smembers(WATCH_POSITIONS) == {"held_a", "held_c"}
        msgs = []
        for _ in range(20):
            msg = await watch.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if msg is not None:
                msgs.append(orjson.loads(msg["data"]))
                break
        assert msgs == [{"set": WATCH_POSITIONS, "added": ["held_a"], "removed": ["never_d", "sold_b"]}]
        await journal.repair_watch()  # in step: nothing written, nothing announced
        assert await watch.get_message(ignore_subscribe_messages=True, timeout=0.2) is None
        assert (journal.stats.watch_repairs, journal.stats.watch_added, journal.stats.watch_removed) == (2, 1, 2)
        await watch.aclose()


async def test_the_repair_keeps_an_asset_another_replica_opened_meanwhile(db_url: str, redis_url: str) -> None:
    """The set still lists an asset no wallet held (a missed removal); another replica opens a position in it
    just after this replica's query and adds it (already there). The removal the query implied must not
    leave the new position unwatched: the removed assets are checked again and added back."""
    async with _parts(db_url, redis_url) as (store, redis):
        await redis.sadd(WATCH_POSITIONS, "reopened", "stale")
        _hold(db_url, "w_1", "reopened", "5")
        store.hide = {"reopened"}  # the full query ran before the other replica's commit
        journal = Journal(store, redis, _Log(), _release)  # type: ignore[arg-type]
        await journal.repair_watch()
        assert await redis.smembers(WATCH_POSITIONS) == {"reopened"}
        assert journal.stats.watch_removed == 1


async def test_the_repair_runs_at_start_when_the_redis_server_changed_and_on_its_period(db_url: str,
                                                                                       redis_url: str) -> None:
    """One query per repair; the repair runs at the first sweep, after a Redis server change (a restart may
    have lost the set), and every ``watch_repair_interval_s`` - not at every sweep."""
    _hold(db_url, "w_1", "held_a", "10")
    server = ["run_1"]

    async def server_id() -> str:
        return server[0]

    async with _parts(db_url, redis_url) as (store, redis):
        journal = Journal(store, redis, _Log(), _release, server_id=server_id,  # type: ignore[arg-type]
                          watch_repair_interval_s=3600)
        await journal.sweep(min_age_s=0)
        assert store.full_queries == 1 and await redis.smembers(WATCH_POSITIONS) == {"held_a"}
        await journal.sweep(min_age_s=0)
        assert store.full_queries == 1  # not due
        await redis.delete(WATCH_POSITIONS)  # a Redis restart without persistence
        server[0] = "run_2"
        await journal.sweep(min_age_s=0)  # sees the new server (at its end)
        await journal.sweep(min_age_s=0)
        assert store.full_queries == 2 and await redis.smembers(WATCH_POSITIONS) == {"held_a"}
        await journal.sweep(min_age_s=0)
        assert store.full_queries == 2
        journal.watch_repair_interval_s = 0  # the period elapsed
        await journal.sweep(min_age_s=0)
        assert store.full_queries == 3
