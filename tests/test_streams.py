"""Durable logs and resumable consumers on real Redis, served over a real gRPC stream."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from common.alerts import OUTBOX, AlertKind
from common.consumer import RedisCursorStore, ResumableConsumer
from common.grpcclient import MAX_MESSAGE_BYTES
from common.logread import read_log_items
from common.retry import Backoff
from common.streams import (
    MAX_ENTRY_BYTES,
    START_NEW,
    START_OLDEST,
    DurableLog,
    create_stream_redis,
    serve_log_batches,
)
from tests.helpers import eventually, internal_channel
from tests.logserver import leader_trades, serve_ingest_log
from tradingtools.market.v1 import market_pb2 as mpb


@pytest.mark.parametrize(
    ("attempt", "rand", "expected"),
    [(0, 0.0, 0.05), (0, 1.0, 0.1), (1, 0.0, 0.1), (3, 0.5, 0.6), (10, 0.0, 15.0), (10, 1.0, 30.0),
     (1000, 1.0, 30.0)],
)
def test_backoff_delay(attempt: int, rand: float, expected: float) -> None:
    assert Backoff(0.1, 30.0).delay(attempt, rand) == pytest.approx(expected)


@pytest.mark.parametrize(("attempt", "rand"), [(-1, 0.5), (0, 1.5), (0, -0.1)])
def test_backoff_rejects_bad_input(attempt: int, rand: float) -> None:
    with pytest.raises(ValueError):
        Backoff().delay(attempt, rand)


@pytest.mark.integration
async def test_log_append_read_resolve(redis_url: str) -> None:
    r = create_stream_redis(redis_url)
    log_ = DurableLog(r, "tt:stream:test", block_ms=50)
    assert await log_.last_cursor() == "0-0"
    first = await log_.append(b"a")
    ids = await log_.append_many([b"b", b"c"])
    assert [p for _, p in await log_.read(first)] == [b"b", b"c"]
    assert [p for _, p in await log_.read(await log_.resolve(START_OLDEST))] == [b"a", b"b", b"c"]
    assert await log_.resolve(START_NEW) == ids[-1]
    assert await log_.read(ids[-1]) == []
    await r.aclose()












@pytest.mark.integration
async def test_a_log_read_from_redis_yields_each_item_with_its_cursor_and_skips_bad_entries(redis_url: str) -> None:
    client = create_stream_redis(redis_url)
    try:
        log_ = DurableLog(client, "tt:stream:leader_trades")
        first = await log_.append(mpb.LeaderTradeEvent(id="lt_0").SerializeToString())
        await client.xadd("tt:stream:leader_trades", {b"p": b"\xff\xff not a proto"})
        await client.xadd("tt:stream:leader_trades", {b"other": b"no payload field"})
        cursors = [await log_.append(mpb.LeaderTradeEvent(id=f"lt_{i}").SerializeToString()) for i in (1, 2)]
        stream = read_log_items(log_, mpb.LeaderTradeEvent.FromString, batch=2, block_ms=100)(first)
        got = [await asyncio.wait_for(anext(stream), 5) for _ in range(2)]  # type: ignore[arg-type]
        assert [(c, e.id) for c, e in got] == [(cursors[0], "lt_1"), (cursors[1], "lt_2")]
        assert log_.malformed == 2
        await stream.aclose()  # type: ignore[attr-defined]
    finally:
        await client.aclose()


@pytest.mark.integration
async def test_log_batches_carry_what_was_ready_together_in_order_and_skip_bad_entries(redis_url: str) -> None:
    client = create_stream_redis(redis_url)
    try:
        log_ = DurableLog(client, "tt:stream:batched", block_ms=100)
        cursors = [await log_.append(b"bad" if i == 4 else mpb.LeaderTradeEvent(id=f"lt_{i}").SerializeToString())
                   for i in range(9)]

        def build(cursor: str, payload: bytes) -> tuple[str, str]:
            if payload == b"bad":
                raise ValueError("not a trade")
            return cursor, mpb.LeaderTradeEvent.FromString(payload).id

        batches = serve_log_batches(log_, START_OLDEST, build, list, 3)
        got = [await asyncio.wait_for(anext(batches), 5) for _ in range(3)]  # type: ignore[arg-type]
        assert [[i for _, i in b] for b in got] == [
            ["lt_0", "lt_1", "lt_2"], ["lt_3", "lt_5", "lt_6"], ["lt_7", "lt_8"]]
        assert [c for b in got for c, _ in b] == [c for i, c in enumerate(cursors) if i != 4]
        assert log_.malformed == 1
        later = asyncio.ensure_future(anext(batches))  # type: ignore[arg-type]
        await asyncio.sleep(0.01)
        await log_.append(mpb.LeaderTradeEvent(id="lt_9").SerializeToString())
        assert [i for _, i in await asyncio.wait_for(later, 5)] == ["lt_9"]  # one that comes alone leaves alone
        await batches.aclose()  # type: ignore[attr-defined]
        with pytest.raises(ValueError, match="max_items"):
            await anext(serve_log_batches(log_, START_OLDEST, build, list, 0))  # type: ignore[arg-type]
    finally:
        await client.aclose()






async def _first_of(log_: DurableLog, after: str, direct: bool) -> str:
    """The cursor of the first entry a reader resuming after ``after`` gets: from the log's tail (what the
    gRPC stream servicers serve) or straight from Redis."""
    if direct:
        stream: Any = read_log_items(log_, bytes, batch=4, block_ms=100)(after)
        cursor, _ = await asyncio.wait_for(anext(stream), 5)
    else:
        stream = log_.tail_batches(after)
        cursor = (await asyncio.wait_for(anext(stream), 5))[0][0]
    await stream.aclose()
    return str(cursor)


@pytest.mark.integration
@pytest.mark.parametrize("direct", [False, True], ids=["log tail", "read from Redis"])
async def test_a_reader_resuming_behind_the_trimmed_start_is_told_and_goes_on(redis_url: str, direct: bool) -> None:
    client = create_stream_redis(redis_url)
    try:
        log_ = DurableLog(client, "tt:stream:trimmed", block_ms=100)
        cursors = [await log_.append(b"e%d" % i) for i in range(10)]
        await client.xtrim("tt:stream:trimmed", maxlen=5, approximate=False)  # entries 0-4 are gone
        assert await _first_of(log_, cursors[2], direct) == cursors[5]
        assert log_.gaps == 1
        assert await log_.check_gap(cursors[2]) == cursors[5]
        # nothing lost: a kept cursor, the log's ends, a reader from the start, an empty log
        log_.gaps = 0
        assert await _first_of(log_, cursors[6], direct) == cursors[7]
        assert await _first_of(log_, START_OLDEST, direct) == cursors[5]
        assert [await log_.check_gap(c) for c in (cursors[5], cursors[9], "0-0")] == [None, None, None]
        assert await DurableLog(client, "tt:stream:empty").check_gap(cursors[2]) is None
        assert log_.gaps == 0
    finally:
        await client.aclose()


@pytest.mark.integration
async def test_an_entry_too_big_for_a_message_is_set_aside_and_the_stream_goes_on(redis_url: str) -> None:
    r = create_stream_redis(redis_url)
    log_ = DurableLog(r, "tt:stream:leader_trades", block_ms=100)
    srv = await serve_ingest_log(log_)
    channel = internal_channel(srv.port)
    open_stream = leader_trades(channel)

    seen: list[str] = []

    async def handle(ev: mpb.LeaderTradeEvent) -> None:
        seen.append(ev.id)

    await log_.append(mpb.LeaderTradeEvent(id="lt_0").SerializeToString())
    huge_trade = mpb.LeaderTradeEvent(id="lt_huge", title="x" * (MAX_MESSAGE_BYTES + 1))
    huge = await log_.append(huge_trade.SerializeToString())
    await log_.append(mpb.LeaderTradeEvent(id="lt_1").SerializeToString())
    consumer = ResumableConsumer("router", open_stream, handle, RedisCursorStore(r), start=START_OLDEST,
                                 backoff=Backoff(0.001, 0.01), rng=random.Random(1))
    task = asyncio.create_task(consumer.run())
    try:
        await eventually(lambda: seen == ["lt_0", "lt_1"])
        await log_.append(mpb.LeaderTradeEvent(id="lt_2").SerializeToString())
        await eventually(lambda: seen == ["lt_0", "lt_1", "lt_2"])
        assert consumer.stats.reconnects == 0
        assert log_.set_aside == 1
        [(_, fields)] = await r.xrange(log_.dead_letter_key)
        assert fields[b"cursor"] == huge.encode() and fields[b"error"].startswith(b"ENTRY_TOO_LARGE")
        assert mpb.LeaderTradeEvent.FromString(fields[b"p"]).id == "lt_huge"
        assert any(a.kind == AlertKind.DEAD_LETTERED and a.fields["cursor"] == huge for a in list(OUTBOX.items))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await channel.close()
        await srv.stop(0)
        await r.aclose()


@pytest.mark.integration
async def test_log_batches_are_bounded_in_bytes(redis_url: str) -> None:
    client = create_stream_redis(redis_url)
    try:
        log_ = DurableLog(client, "tt:stream:batched", block_ms=100)
        big = MAX_ENTRY_BYTES // 3
        for i in range(7):
            await log_.append(mpb.LeaderTradeEvent(id=f"lt_{i}", title="y" * big).SerializeToString())

        def build(cursor: str, payload: bytes) -> tuple[str, int]:
            return mpb.LeaderTradeEvent.FromString(payload).id, len(payload)

        batches = serve_log_batches(log_, START_OLDEST, build, list, 256)
        got = [await asyncio.wait_for(anext(batches), 5) for _ in range(4)]  # type: ignore[arg-type]
        assert [[i for i, _ in b] for b in got] == [
            ["lt_0", "lt_1"], ["lt_2", "lt_3"], ["lt_4", "lt_5"], ["lt_6"]]
        assert all(sum(n for _, n in b) <= MAX_ENTRY_BYTES for b in got)
        await batches.aclose()  # type: ignore[attr-defined]
    finally:
        await client.aclose()
