"""``bench compare redis``: the hand-written RESP client (``common.resp`` / ``common.fastredis``) against
redis-py's asyncio client with hiredis, on the commands the services send per event.

Each side runs the services' own code where it takes a client (``reservations.release_many``,
``RedisState.read_batch`` / ``emit_batch``, ``DurableLog``), with the client swapped:

- ``book_get``: executor's per-order book read (GET of a ~2 KB book);
- ``cursor_set``: a consumer cursor save (SET);
- ``xadd10``: the journal's append of a commit's 10 OrderEvents (``append_events`` / ``DurableLog.append_many``);
- ``release5``: the executor's reservation release script for 5 orders (EVALSHA);
- ``router_read`` / ``router_emit``: the router's per-batch scripts for 8 trades;
- ``control_upsert``: control's hot-index upsert script per subscription create;
- ``xread256``: logread's ``XREAD COUNT 256`` of a filled stream (per read of 256 entries);
- ``burst1000``: 1,000 concurrent GETs (a fan-out's book reads), per burst; redis-py on the executor's
  ``BlockingConnectionPool`` of 64 connections, the RESP client on its one pipelined connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
import uvloop

from bench._cmp_measure import sequential
from common import hotindex, reservations
from common.fastredis import FastCursorStore, FastRedis, Script, append_events
from common.resp import RespConnection
from common.streams import DurableLog, create_stream_redis
from services.router.adapters.redis_state import RedisState

SIDES = ("resp", "redis-py")
BOOK_KEY = "tt:book:bench"
XREAD_STREAM = "bench:xread"
XREAD_BATCH = 256


class RedisPyScripts:
    """redis-py with the :class:`~common.fastredis.FastRedis` surface the services call (``run_script`` by
    EVALSHA with a NOSCRIPT reload, as redis-py's ``register_script`` does; ``eval``, ``get``, ``set``)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._scripts: dict[str, Any] = {}

    async def run_script(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        registered = self._scripts.get(script.sha)
        if registered is None:
            registered = self._scripts[script.sha] = self.client.register_script(script.source)
        return await registered(keys=list(keys), args=list(args))

    async def eval(self, source: str, numkeys: int, *keys_and_args: Any) -> Any:
        return await self.run_script(Script(source), keys_and_args[:numkeys], keys_and_args[numkeys:])

    async def get(self, key: Any) -> Any:
        return await self.client.get(key)

    async def set(self, key: Any, value: Any) -> Any:
        return await self.client.set(key, value)


def _book() -> bytes:
    levels = [[f"0.{i:02d}", f"{1000 + i * 37}.25"] for i in range(1, 21)]
    return orjson.dumps({"asset": "bench", "market": "0x" + "ab" * 32, "bids": levels[::-1], "asks": levels,
                         "tickSize": "0.01", "venueTimeMs": 1_700_000_000_000, "updatedMs": 1_700_000_000_000})


def _router_inputs(tag: str) -> tuple[list[str], list[str], dict[tuple[str, str], list[str]],
                                    list[tuple[str, bytes, str]]]:
    trades = [f"lt{tag}x{k}" for k in range(8)]
    assets = ["a1", "a2"]
    queries = {("m1", "a1"): [f"w{k}" for k in range(10)], ("m2", "a2"): [f"w{k}" for k in range(10)]}
    items = [(lt, b"x" * 500, reservations.lines([reservations.Reservation(
        f"co_{lt}", f"w{k}", reservations.USD, "m1", 1_000_000, lt)])) for k, lt in enumerate(trades)]
    return trades, assets, queries, items


async def _prepare(url: str, n: int) -> None:
    plain = aioredis.from_url(url)
    try:
        await plain.set(BOOK_KEY, _book())
        if await plain.xlen(XREAD_STREAM) < XREAD_BATCH * (n + 50):
            pipe = plain.pipeline(transaction=False)
            for _ in range(XREAD_BATCH * (n + 50)):
                pipe.xadd(XREAD_STREAM, {b"p": b"y" * 300})
            await pipe.execute()
    finally:
        await plain.aclose()


async def _side(side: str, url: str, n: int, bursts: int, run_id: str) -> dict[str, float]:
    stream_redis = create_stream_redis(url)
    events = DurableLog(stream_redis, f"bench:events:{run_id}", maxlen=100_000)
    payloads = [b"e" * 300 for _ in range(10)]
    sub_encoded = orjson.dumps({"id": "sub", "leaderProxy": "0xleader", "state": "SUBSCRIPTION_STATE_ACTIVE"}).decode()
    upsert_keys = (hotindex.leader_key("0xleader"), hotindex.LEADERS_KEY, hotindex.VERSION_KEY)
    xread_cursor = ["0"]
    if side == "resp":
        fast = FastRedis(url)
        client: Any = fast
        cursors: Any = FastCursorStore(fast)
        conn = await RespConnection.open(url)

        async def xadd(_i: int) -> object:
            return await append_events(fast, events, payloads)

        async def xread(_i: int) -> object:
            reply = await conn.call(b"XREAD", b"COUNT", b"256", b"BLOCK", b"1000", b"STREAMS", XREAD_STREAM.encode(),
                                    xread_cursor[0].encode(), timeout_s=10)
            xread_cursor[0] = reply[0][1][-1][0].decode()
            return reply

        async def burst() -> object:
            return await asyncio.gather(*(fast.get(BOOK_KEY) for _ in range(1000)))
    else:
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=64, timeout=10, socket_timeout=5.0)
        plain = aioredis.Redis(connection_pool=pool)
        client = RedisPyScripts(plain)
        cursors = _PyCursors(plain)
        reader = DurableLog(stream_redis, XREAD_STREAM)

        async def xadd(_i: int) -> object:
            return await events.append_many(payloads)

        async def xread(_i: int) -> object:
            items = await reader.read(xread_cursor[0], count=XREAD_BATCH, block_ms=1000)
            xread_cursor[0] = items[-1][0]
            return items

        async def burst() -> object:
            return await asyncio.gather(*(plain.get(BOOK_KEY) for _ in range(1000)))
    state = RedisState(client, f"bench:routed:{run_id}", marker_ttl_s=600, stream_maxlen=100_000)
    trades, assets, queries, _ = _router_inputs("read")

    async def emit(i: int) -> object:
        return await state.emit_batch(_router_inputs(f"{run_id}_{i}")[3])

    out: dict[str, float] = {}
    out |= await sequential("book_get", lambda _i: client.get(BOOK_KEY), n)
    out |= await sequential("cursor_set", lambda i: cursors.set(f"bench-{run_id}", f"1-{i}"), n)
    out |= await sequential("xadd10", xadd, n)
    out |= await sequential("release5", lambda i: reservations.release_many(
        client, [f"co_rel_{run_id}_{i}_{k}" for k in range(5)]), n)
    out |= await sequential("router_read", lambda _i: state.read_batch(trades, assets, queries, sell_assets=set()), n)
    out |= await sequential("router_emit", emit, n)
    out |= await sequential("control_upsert", lambda _i: client.eval(
        hotindex._UPSERT, 3, *upsert_keys, "sub", sub_encoded, "0xleader", hotindex.CHANNEL), n)
    out |= await sequential("xread256", xread, n, warm=20)
    for _ in range(3):
        await burst()
    c0, walls = time.process_time(), []
    for _ in range(bursts):
        b0 = time.perf_counter()
        await burst()
        walls.append(time.perf_counter() - b0)
    walls.sort()
    out["burst1000.cpu_us"] = round((time.process_time() - c0) / bursts * 1e6, 1)
    out["burst1000.p50_us"] = round(walls[len(walls) // 2] * 1e6, 1)
    await stream_redis.delete(events.name, state.stream)
    await stream_redis.aclose()
    return out


class _PyCursors:
    """``common.consumer.RedisCursorStore``'s SET on the redis-py client."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    async def set(self, consumer: str, cursor: str) -> None:
        await self.client.set("tt:cursor:" + consumer, cursor)


def prepare(params: dict[str, Any]) -> None:
    """Fill the shared Redis once (the book, the stream XREAD reads)."""
    uvloop.run(_prepare(params["url"], params["ops"]))


def run(side: str, params: dict[str, Any]) -> dict[str, float]:
    """One side's metrics (µs per operation)."""
    return uvloop.run(_side(side, params["url"], params["ops"], params["bursts"], params["run_id"]))
