"""Guard's publishers on real Redis and PostgreSQL: the watched-asset set follows the armed triggers (the
diff skipped while the version stands); the trigger-event outbox publishes in order and prunes old rows."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from common.config import ConfigError
from common.fastredis import FastRedis
from common.marketstate import WATCH_TRIGGERS
from common.storage import create_pool
from common.streams import DurableLog, create_stream_redis
from services.guard.adapters.publishers import PRUNE, OutboxPublisher, WatchPublisher
from services.guard.config import Settings
from services.guard.domain.trigger_index import Engine, load
from services.guard.domain.trigger_model import Kind, TriggerSpec
from services.guard.firing import SubmittedMarker
from services.guard.loops import Kicked
from tests.helpers import INTERNAL_ENV, eventually, plan_scans


def _stop(tid: str, asset_id: str) -> TriggerSpec:
    return TriggerSpec(tid, asset_id, Kind.STOP_LOSS, trigger_price=Decimal("0.40"))


class _CountingEngine(Engine):
    """The real engine, counting the copies of its whole asset set."""

    def __init__(self) -> None:
        super().__init__()
        self.copies = 0

    def assets(self) -> set[str]:
        self.copies += 1
        return super().assets()


@pytest.mark.integration
async def test_watch_set_follows_the_engine_and_compares_only_the_assets_that_changed(redis: Any) -> None:
    engine = _CountingEngine()
    engine.upsert(_stop("s1", "a"))
    engine.upsert(_stop("s2", "b"))
    pub = WatchPublisher(redis, lambda: engine)
    await pub.step()
    assert await redis.smembers(WATCH_TRIGGERS) == {"a", "b"} and engine.copies == 1
    await pub.step()  # kicked again, nothing changed: nothing compared
    engine.upsert(_stop("s3", "b"))  # not a change of the set
    await pub.step()
    engine.remove("s1")
    engine.upsert(_stop("s4", "c"))
    await pub.step()
    assert await redis.smembers(WATCH_TRIGGERS) == {"b", "c"}
    assert engine.copies == 1, "a change of a few assets copied the whole set"


@pytest.mark.integration
async def test_another_engine_is_compared_whole(redis: Any) -> None:
    """A reload builds another engine (bulk: no changes reported): its set is compared with what was written."""
    engine = Engine()
    engine.upsert(_stop("s1", "a"))
    pub = WatchPublisher(redis, lambda: engine)
    await pub.step()
    engine = load([_stop("s2", "b"), _stop("s3", "c")])
    await pub.step()
    assert await redis.smembers(WATCH_TRIGGERS) == {"b", "c"}


class _FailingOnce:
    """A pipelined Redis client whose next transaction fails: before it is sent (``fail``), or once Redis applied it,
    its reply lost (``lose``: FastRedis then raises a timeout)."""

    def __init__(self, client: FastRedis) -> None:
        self._client = client
        self.fail = self.lose = False

    async def transaction(self, commands: Any) -> Any:
        if self.fail:
            self.fail = False
            raise RedisConnectionError("lost")
        replies = await self._client.transaction(commands)
        if self.lose:
            self.lose = False
            raise RedisTimeoutError("redis reply timed out")
        return replies

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@pytest.mark.integration
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.tuples(st.sampled_from(["add", "drop", "step", "fail", "lose"]), st.integers(0, 2),
                              st.integers(0, 1)), max_size=40))
async def test_the_written_set_always_ends_equal_to_the_engines(redis: Any, fast_redis: FastRedis,
                                                                ops: list[tuple[str, int, int]]) -> None:
    """Random creates and removals on three assets, steps between them, some of whose writes fail, before Redis applied
    them or after (the reply lost): after a last step, the set in Redis is the engine's."""
    await redis.delete(WATCH_TRIGGERS)
    engine = Engine()
    fast = _FailingOnce(fast_redis)
    pub = WatchPublisher(redis, lambda: engine, fast=fast)  # type: ignore[arg-type]
    await pub.step()
    for op, asset, n in ops:
        tid = f"t{asset}.{n}"
        if op == "add":
            engine.upsert(_stop(tid, f"asset{asset}"))
        elif op == "drop":
            engine.remove(tid)
        elif op == "fail":
            fast.fail = True
        elif op == "lose":
            fast.lose = True
        else:
            with contextlib.suppress(RedisConnectionError, RedisTimeoutError):
                await pub.step()
    fast.fail = fast.lose = False
    await pub.step()
    assert await redis.smembers(WATCH_TRIGGERS) == engine.assets()


@pytest.mark.integration
async def test_an_asset_armed_again_after_a_removal_whose_reply_was_lost_is_watched(redis: Any,
                                                                                   fast_redis: FastRedis) -> None:
    """B's last trigger fires: the SREM is applied, its reply lost. B is armed again before the next write: it must
    be in the set after it (before, the publisher still thought the set held B and sent nothing: B unwatched). What
    another guard wrote stays."""
    await redis.delete(WATCH_TRIGGERS)
    engine = Engine()
    engine.upsert(_stop("s1", "A"))
    fast = _FailingOnce(fast_redis)
    pub = WatchPublisher(redis, lambda: engine, fast=fast)  # type: ignore[arg-type]
    await pub.step()
    engine.remove("s1")
    engine.upsert(_stop("s2", "B"))
    await pub.step()
    await redis.sadd(WATCH_TRIGGERS, "other")  # another guard's (a rollout): left as it is
    engine.remove("s2")
    fast.lose = True
    with pytest.raises(RedisTimeoutError):
        await pub.step()
    assert await redis.smembers(WATCH_TRIGGERS) == {"other"}  # applied
    engine.upsert(_stop("s3", "B"))
    await pub.step()
    assert await redis.smembers(WATCH_TRIGGERS) == {"B", "other"}


class _Counting(Kicked):
    def __init__(self, min_interval_s: float) -> None:
        super().__init__("counting", min_interval_s=min_interval_s)
        self.steps = 0

    async def step(self) -> None:
        self.steps += 1


@pytest.mark.parametrize(("min_interval_s", "steps"), [(0.0, 6), (60.0, 1)])
async def test_kicks_soon_after_a_run_share_the_next_one(min_interval_s: float, steps: int) -> None:
    loop = _Counting(min_interval_s)
    task = asyncio.create_task(loop.run())
    try:
        loop.kick()
        await eventually(lambda: loop.steps == 1)
        for _ in range(5):  # each kick lands after the previous run finished
            loop.kick()
            for _ in range(5):
                await asyncio.sleep(0)
        await eventually(lambda: loop.steps == steps)
        assert loop.steps == steps  # with an interval, the five kicks wait together for the next run
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_bookkeeping_interval_setting() -> None:
    base = {**INTERNAL_ENV, "DATABASE_URL": "postgresql://x/y", "REDIS_URL": "redis://x:1/0"}
    env = {**base, "TT_TUNE_GUARD_BOOKKEEPING_INTERVAL_S": "0.2"}
    assert Settings.from_env(env).tuning.bookkeeping_interval_s == 0.2
    assert Settings.from_env(base).tuning.bookkeeping_interval_s == 0.05
    with pytest.raises(ConfigError):
        Settings.from_env({**env, "TT_TUNE_GUARD_BOOKKEEPING_INTERVAL_S": "-1"})


async def test_a_delayed_submitted_mark_is_skipped_for_a_sell_that_settled_meanwhile() -> None:
    written: list[list[tuple[str, str]]] = []

    async def mark(items: list[tuple[str, str]]) -> None:
        written.append(items)

    marker = SubmittedMarker(mark, delay_s=0.2)
    task = asyncio.create_task(marker.run())
    try:
        marker.add("trg_1", "co_1")
        marker.add("trg_2", "co_2")
        await asyncio.sleep(0.05)  # the marker's task is awake, waiting out the delay
        marker.discard("trg_1", "co_1")  # settled before the delay ran out: its settle recorded submitted_at
        await eventually(lambda: bool(written))
        assert written == [[("trg_2", "co_2")]]
        await marker.step()  # the final step at shutdown writes what is left without waiting
        marker.pending["trg_3"] = "co_3"
        await marker.step()
        assert written[-1] == [("trg_3", "co_3")]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.mark.integration
async def test_outbox_publishes_pending_events_in_order_and_prunes_only_old_published_ones(
        db_url: str, redis_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO guard_trigger_events (event_id, trigger_id, payload, published_at) VALUES"
            " ('old', 't', 'o', %(old)s), ('recent', 't', 'r', %(recent)s),"
            " ('pending_1', 't', 'p1', NULL), ('pending_2', 't', 'p2', NULL)",
            {"old": NOW - timedelta(hours=2), "recent": NOW - timedelta(minutes=10)})
    pool = await create_pool(db_url, autocommit=True)
    stream_redis = create_stream_redis(redis_url)
    log_ = DurableLog(stream_redis, "tt:test:trigger_events")
    try:
        outbox = OutboxPublisher(pool, log_, lambda: NOW, keep_s=3600, prune_every=1)
        await outbox.step()
        assert [p for _c, p in await log_.read("0-0")] == [b"p1", b"p2"]
        with psycopg.connect(db_url) as conn:
            rows = dict(conn.execute("SELECT event_id, published_at FROM guard_trigger_events").fetchall())
        assert rows == {"recent": NOW - timedelta(minutes=10), "pending_1": NOW, "pending_2": NOW}
        assert outbox.published == 2
    finally:
        await pool.close()
        await stream_redis.aclose()


@pytest.mark.integration
def test_the_prune_reads_only_the_old_rows_of_a_large_outbox(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO guard_trigger_events (event_id, trigger_id, payload, published_at)"
                     " SELECT 'tev_' || g, 't', '\\x00', now() FROM generate_series(1, 20000) g")
        conn.execute("ANALYZE guard_trigger_events")
        row = conn.execute("EXPLAIN (FORMAT JSON) " + PRUNE, (NOW - timedelta(days=400),)).fetchone()
    assert row is not None
    assert plan_scans(row[0][0]["Plan"], "guard_trigger_events") in (["Index Scan"], ["Bitmap Heap Scan"])


@pytest.mark.integration
async def test_assets_redis_lost_are_written_again_at_the_next_verification(redis: Any) -> None:
    """Redis lost the last writes (a crash under appendfsync everysec) or something else wrote the key: the periodic
    verification finds an asset written missing and writes it again. An asset it did not write is left (in a
    rollout, the other guard's)."""
    await redis.delete(WATCH_TRIGGERS)
    engine = Engine()
    engine.upsert(_stop("s1", "a"))
    engine.upsert(_stop("s2", "b"))
    pub = WatchPublisher(redis, lambda: engine)
    await pub.step()
    pub.verify()
    await pub.step()
    assert pub.repairs == 0
    await redis.srem(WATCH_TRIGGERS, "a")
    await redis.sadd(WATCH_TRIGGERS, "z")
    await pub.step()  # kicked without a verification: nothing read
    assert await redis.smembers(WATCH_TRIGGERS) == {"b", "z"}
    pub.verify()
    await pub.step()
    assert await redis.smembers(WATCH_TRIGGERS) == {"a", "b", "z"} and pub.repairs == 1


class _ReadFailingOnce:
    """A Redis client whose next SMEMBERS fails (the connection lost)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.fail = False

    async def smembers(self, key: str) -> Any:
        if self.fail:
            self.fail = False
            raise RedisConnectionError("lost")
        return await self._client.smembers(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@pytest.mark.integration
async def test_a_verification_whose_read_failed_is_made_at_the_retry(redis: Any) -> None:
    """Right after a Redis restart (when it may have lost writes) the first read can fail: the verification is made
    at the retry, not dropped until the next one."""
    await redis.delete(WATCH_TRIGGERS)
    engine = Engine()
    engine.upsert(_stop("s1", "a"))
    client = _ReadFailingOnce(redis)
    pub = WatchPublisher(client, lambda: engine)
    await pub.step()
    await redis.srem(WATCH_TRIGGERS, "a")
    pub.verify()
    client.fail = True
    with pytest.raises(RedisConnectionError):
        await pub.step()
    await pub.step()  # the loop's retry
    assert await redis.smembers(WATCH_TRIGGERS) == {"a"}
