"""The request path's pipelined Redis commands (PING, cached scripts) on real Redis and real sockets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
import redis.exceptions

from common.embedded import free_port
from common.fastredis import FastRedis, Script
from tests.helpers import eventually

COUNTER = Script("return redis.call('INCRBY', KEYS[1], ARGV[1])")


@pytest.fixture
async def hot(redis_url: str) -> AsyncIterator[FastRedis]:
    client = FastRedis(redis_url, timeout_s=1.0)
    try:
        yield client
    finally:
        client.close()


@pytest.mark.integration
async def test_ping_and_script_load_on_first_use_and_after_a_flush(hot: FastRedis,
                                                                   redis_client: aioredis.Redis) -> None:
    await hot.ping()
    await redis_client.script_flush()
    assert await hot.run_script(COUNTER, ("tt:test:n",), (2,)) == 2  # NOSCRIPT → EVAL
    assert await hot.run_script(COUNTER, ("tt:test:n",), (3,)) == 5  # EVALSHA
    await redis_client.script_flush()
    assert await hot.run_script(COUNTER, ("tt:test:n",), (1,)) == 6


@pytest.mark.integration
async def test_concurrent_calls_share_the_connection_and_get_their_own_replies(hot: FastRedis) -> None:
    results = await asyncio.gather(*(hot.run_script(COUNTER, (f"tt:test:k{i}",), (i,)) for i in range(200)))
    assert results == list(range(200))


@pytest.mark.integration
async def test_an_error_reply_is_a_response_error(hot: FastRedis) -> None:
    with pytest.raises(redis.exceptions.ResponseError, match="ERR"):
        await hot.run_script(Script("return redis.error_reply('ERR boom')"), (), ())
    await hot.ping()  # the connection is still usable


@pytest.mark.integration
async def test_reconnects_after_the_connection_was_killed(hot: FastRedis, redis_client: aioredis.Redis) -> None:
    await hot.ping()
    await redis_client.client_kill_filter(_type="normal", skipme=True)
    with contextlib.suppress(redis.exceptions.ConnectionError):
        await hot.ping()  # fails if it was written before the close was seen
    await hot.ping()
    assert await hot.run_script(COUNTER, ("tt:test:n",), (1,)) == 1


async def test_unreachable_redis_is_a_connection_error() -> None:
    client = FastRedis(f"redis://127.0.0.1:{free_port()}/0", timeout_s=1.0)
    with pytest.raises(redis.exceptions.ConnectionError):
        await client.ping()


@pytest.mark.integration
async def test_no_reply_in_time_is_a_timeout_and_the_next_call_reconnects() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # reads nothing, answers nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = FastRedis(f"redis://127.0.0.1:{port}/0", timeout_s=0.2)
    try:
        with pytest.raises(redis.exceptions.TimeoutError):
            await client.ping()
        with pytest.raises(redis.exceptions.TimeoutError):
            await client.ping()
        assert len(accepted) == 2  # the timed-out connection was dropped, not reused out of step
    finally:
        client.close()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def _pings(redis_client: aioredis.Redis) -> int:
    stats = await redis_client.info("commandstats")
    return int(stats.get("cmdstat_ping", {}).get("calls", 0))


@pytest.mark.integration
async def test_a_fresh_reply_on_the_open_connection_stands_in_for_a_ping(redis_url: str,
                                                                         redis_client: aioredis.Redis) -> None:
    await redis_client.config_resetstat()
    fresh = FastRedis(redis_url, timeout_s=1.0, fresh_s=60.0)
    stale = FastRedis(redis_url, timeout_s=1.0, fresh_s=0.0)
    try:
        await fresh.ensure_reachable()  # nothing heard yet: PING
        await fresh.run_script(COUNTER, ("tt:test:n",), (1,))
        await fresh.ensure_reachable()
        await fresh.ensure_reachable()
        assert await _pings(redis_client) == 1
        await stale.ensure_reachable()
        await stale.ensure_reachable()
        assert await _pings(redis_client) == 3
        await redis_client.client_kill_filter(_type="normal", skipme=True)
        await eventually(lambda: not fresh.connected)
        await fresh.ensure_reachable()  # a new connection has heard nothing: PING again
        assert await _pings(redis_client) == 4
    finally:
        fresh.close()
        stale.close()
