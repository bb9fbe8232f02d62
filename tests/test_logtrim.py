"""Logs trimmed to what their registered readers still need: the pure decision (tables), and the trimmer and a
consumer's registration on real Redis over a real gRPC stream."""

from __future__ import annotations

import asyncio
import random

import pytest

from common.consumer import RedisCursorStore, ResumableConsumer
from common.fastredis import FastCursorStore, FastRedis
from common.logtrim import Floor, LogTrimmer, TrimTuning, readers_key, trim_before, trim_floor
from common.retry import Backoff
from common.streams import START_OLDEST, DurableLog, create_stream_redis
from tests.helpers import eventually, internal_channel
from tests.logserver import leader_trades, serve_ingest_log
from tradingtools.market.v1 import market_pb2 as mpb

NOW = 10_000_000_000  # ms
KEEP_S = 900.0
PIN_S = 86_400.0
KEEP_FLOOR = f"{NOW - 900_000}-0"


@pytest.mark.parametrize(("readers", "cursors", "expected"), [
    ({}, {}, Floor(None)),  # nobody registered: the length cap alone
    ({"executor": NOW}, {"executor": f"{NOW - 5_000}-3"}, Floor(KEEP_FLOOR)),  # caught up: kept keep_s
    ({"executor": NOW}, {"executor": f"{NOW - 3_600_000}-7"}, Floor(f"{NOW - 3_600_000}-0")),  # an hour behind
    ({"a": NOW, "b": NOW}, {"a": f"{NOW - 1_000_000}-0", "b": f"{NOW - 2_000_000}-1"},
     Floor(f"{NOW - 2_000_000}-0")),  # the slowest reader decides
    ({"a": NOW, "b": NOW}, {"a": f"{NOW - 1_000}-0", "b": None}, Floor(None)),  # b may start from the oldest
    ({"a": NOW, "b": NOW - 90_000_000}, {"a": f"{NOW - 1_000}-0", "b": None},
     Floor(KEEP_FLOOR, ("b",))),  # b registered a day ago and never saved a cursor: no longer waited for
    ({"a": NOW, "gone": NOW - 90_000_000}, {"a": f"{NOW - 1_000}-0", "gone": f"{NOW - 90_000_000}-0"},
     Floor(KEEP_FLOOR, ("gone",))),  # a removed consumer's cursor, a day old
    ({"a": NOW}, {"a": "not-an-id"}, Floor(None)),  # unreadable: held like no cursor
])
def test_the_floor_is_the_slowest_live_reader_and_never_newer_than_the_keep(
        readers: dict[str, int], cursors: dict[str, str | None], expected: Floor) -> None:
    assert trim_floor(readers, cursors, NOW, keep_s=KEEP_S, max_pin_s=PIN_S) == expected


def test_the_floor_never_passes_any_live_readers_cursor() -> None:
    """Property: whatever the readers' cursors, no live reader loses an entry it has not read."""
    rng = random.Random(7)
    for _ in range(2_000):
        names = [f"r{i}" for i in range(rng.randint(1, 4))]
        cursors: dict[str, str | None] = {n: (None if rng.random() < 0.1 else
                                              f"{NOW - rng.randint(0, 100_000_000)}-{rng.randint(0, 9)}")
                                          for n in names}
        readers = {n: NOW - rng.randint(0, 100_000_000) for n in names}
        floor = trim_floor(readers, cursors, NOW, keep_s=KEEP_S, max_pin_s=PIN_S)
        if floor.min_id is None:
            continue
        floor_ms = int(floor.min_id.split("-")[0])
        assert floor_ms <= NOW - 900_000
        for n in names:
            if n in floor.stale:
                continue
            cursor = cursors[n]
            assert cursor is not None and floor_ms <= int(cursor.split("-")[0])


def test_a_keep_shorter_than_the_routers_relog_window_is_refused() -> None:
    with pytest.raises(ValueError, match="keep_s"):
        LogTrimmer(None, ["x"], lambda: NOW, interval_s=1, keep_s=10, max_pin_s=5)
    assert TrimTuning().stream_keep_s >= 600  # the router re-appends lost entries of its last 10 minutes


async def _fill(log_: DurableLog, n: int) -> list[str]:
    return [await log_.append(mpb.LeaderTradeEvent(id=f"lt_{i}").SerializeToString()) for i in range(n)]


@pytest.mark.integration
async def test_a_log_is_trimmed_to_its_slowest_reader_and_a_log_without_readers_is_left_alone(redis_url: str) -> None:
    r = create_stream_redis(redis_url)
    kept = DurableLog(r, "tt:stream:routed_trades")
    alone = DurableLog(r, "tt:stream:order_events")
    ids = await _fill(kept, 3000)
    await _fill(alone, 3000)
    cursors = RedisCursorStore(r)
    await cursors.register("executor", kept.name, int(ids[0].split("-")[0]))
    await cursors.set("executor", ids[2500])
    now_ms = int(ids[-1].split("-")[0]) + 3_600_000  # an hour on: the keep alone would trim everything
    trimmer = LogTrimmer(r, [kept.name, alone.name], lambda: now_ms, interval_s=1, keep_s=900, max_pin_s=86_400)
    removed = await trimmer.trim_once()
    assert 0 < removed <= 2500
    first = (await r.xrange(kept.name, count=1))[0][0].decode()
    assert _id(first) <= _id(ids[2500])  # everything the reader has not read is still there
    assert await r.xlen(kept.name) >= 3000 - 2500  # and the rest of it
    assert await r.xlen(alone.name) == 3000
    assert await kept.check_gap(ids[2500]) is None  # the reader resumes without a gap
    await cursors.set("executor", ids[-1])
    await trimmer.trim_once()
    assert await r.xlen(kept.name) < 200  # caught up and an hour on: only what approximate trimming leaves
    await r.aclose()


@pytest.mark.integration
async def test_trimming_removes_every_old_entry_however_many_one_xtrim_may_remove(redis_url: str) -> None:
    r = create_stream_redis(redis_url)
    log_ = DurableLog(r, "tt:stream:order_events")
    ids = await _fill(log_, 3000)
    assert await trim_before(r, log_.name, ids[2000], per_call=200) > 1800  # ten calls' worth, not one
    first = (await r.xrange(log_.name, count=1))[0][0].decode()
    assert _id(ids[1800]) < _id(first) <= _id(ids[2000])  # all but the last partial stream node
    assert await trim_before(r, log_.name, ids[2000], per_call=200) == 0
    await r.aclose()


@pytest.mark.integration
async def test_a_reader_registered_without_a_cursor_holds_the_log_until_it_is_stale(redis_url: str) -> None:
    r = create_stream_redis(redis_url)
    kept = DurableLog(r, "tt:stream:leader_trades")
    ids = await _fill(kept, 1000)
    last_ms = int(ids[-1].split("-")[0])
    await RedisCursorStore(r).register("router", kept.name, last_ms)
    trimmer = LogTrimmer(r, [kept.name], lambda: last_ms + 7_200_000, interval_s=1, keep_s=900, max_pin_s=86_400)
    assert await trimmer.trim_once() == 0
    trimmer.clock_ms = lambda: last_ms + 90_000_000  # registered over a day ago and never read: not waited for
    assert await trimmer.trim_once() > 0
    assert trimmer.stats.stale == {"router": 1}
    await trimmer.trim_once()
    assert trimmer.stats.stale == {"router": 2}  # counted every round (logged once)
    await r.aclose()


@pytest.mark.integration
async def test_a_consumer_naming_its_log_registers_before_it_reads_and_its_cursor_holds_the_log(
        redis_url: str) -> None:
    r = create_stream_redis(redis_url)
    log_ = DurableLog(r, "tt:stream:leader_trades", block_ms=100)
    ids = await _fill(log_, 50)
    srv = await serve_ingest_log(log_)
    channel = internal_channel(srv.port)
    seen: list[str] = []

    async def handle(ev: mpb.LeaderTradeEvent) -> None:
        seen.append(ev.id)

    fast = FastRedis(redis_url)
    consumer = ResumableConsumer("router", leader_trades(channel), handle, FastCursorStore(fast), start=START_OLDEST,
                                 backoff=Backoff(0.001, 0.01), stream=log_.name)
    task = asyncio.create_task(consumer.run())
    await eventually(lambda: len(seen) == 50)
    assert set(await r.hkeys(readers_key(log_.name))) == {b"router"}
    await eventually(lambda: r.get("tt:cursor:router"), timeout_s=5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    later = await _fill(log_, 20)  # appended while the consumer is down: kept for it
    now_ms = int(later[-1].split("-")[0]) + 7_200_000
    await LogTrimmer(r, [log_.name], lambda: now_ms, interval_s=1, keep_s=900, max_pin_s=86_400).trim_once()
    first = (await r.xrange(log_.name, count=1))[0][0].decode()
    assert _id(first) <= _id(ids[-1])
    consumer = ResumableConsumer("router", leader_trades(channel), handle, FastCursorStore(fast), start=START_OLDEST,
                                 backoff=Backoff(0.001, 0.01), stream=log_.name)
    task = asyncio.create_task(consumer.run())
    await eventually(lambda: len(seen) == 70)
    assert seen[50:] == [f"lt_{i}" for i in range(20)]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    fast.close()
    await channel.close()
    await srv.stop(0)
    await r.aclose()


def _id(entry: str) -> tuple[int, int]:
    ms, _, seq = entry.partition("-")
    return int(ms), int(seq)
