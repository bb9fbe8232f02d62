"""The pipelined Redis client of the hot paths on real Redis: scripts by SHA with a fallback when Redis
lost them, error classes as redis-py's (a silent server is a timeout), reconnect after a lost
connection, redis-py's get/set/eval forms, the consumer cursor, the server's run id."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import redis.asyncio as aioredis
import redis.exceptions

from common.fastredis import FastCursorStore, FastRedis, Script, run_id_of
from common.storage import redis_run_id


@pytest.mark.integration
async def test_script_runs_by_sha_and_is_reloaded_after_a_flush(redis_url: str) -> None:
    fast = FastRedis(redis_url, timeout_s=5.0)
    script = Script("return {KEYS[1], ARGV[1]}")
    assert await fast.run_script(script, ["k"], ["v"]) == [b"k", b"v"]
    assert await fast.call("SCRIPT", "EXISTS", script.sha) == [1]
    await fast.call("SCRIPT", "FLUSH")
    assert await fast.run_script(script, ["k2"], [b"\x00\xff"]) == [b"k2", b"\x00\xff"]
    await fast.call("SET", "k", "not a number")
    with pytest.raises(redis.exceptions.ResponseError):
        await fast.run_script(Script("return redis.call('INCR', KEYS[1])"), ["k"], [])
    fast.close()


@pytest.mark.integration
async def test_reconnects_after_the_connection_is_lost(redis_url: str) -> None:
    fast = FastRedis(redis_url, timeout_s=5.0)
    await fast.call("SET", "a", "1")
    first = await fast.call("CLIENT", "ID")
    r = aioredis.from_url(redis_url)
    await r.execute_command("CLIENT", "KILL", "ID", first)
    await r.aclose()
    # a command may meet the dead socket (an error) or find it closed already (a new connection)
    with contextlib.suppress(redis.exceptions.ConnectionError):
        await fast.call("PING")
    assert await fast.call("GET", "a") == b"1"
    assert await fast.call("CLIENT", "ID") != first
    fast.close()


@pytest.mark.integration
async def test_run_id_is_the_servers_as_redis_py_reads_it(redis_url: str) -> None:
    fast = FastRedis(redis_url, timeout_s=5.0)
    r = aioredis.from_url(redis_url)
    try:
        got = await fast.run_id()
        assert got == await redis_run_id(r) and len(got) == 40
    finally:
        await r.aclose()
        fast.close()


@pytest.mark.parametrize(("reply", "run_id"), [
    (b"# Server\r\nredis_version:7.2.4\r\nrun_id:abc123\r\ntcp_port:0\r\n", "abc123"),
    ("run_id:f00d\n", "f00d"),
    (b"# Server\r\nrun_id: spaced \r\n", "spaced"),
])
def test_run_id_of_an_info_reply(reply: bytes | str, run_id: str) -> None:
    assert run_id_of(reply) == run_id


def test_an_info_reply_without_run_id_is_an_error() -> None:
    with pytest.raises(ValueError, match="run_id"):
        run_id_of(b"# Server\r\nredis_version:7.2.4\r\n")


async def test_unreachable_redis_is_a_connection_error() -> None:
    fast = FastRedis("redis://127.0.0.1:1", timeout_s=1.0)
    with pytest.raises(redis.exceptions.ConnectionError):
        await fast.call("PING")


@pytest.mark.integration
async def test_cursor_store(redis_url: str) -> None:
    fast = FastRedis(redis_url, timeout_s=5.0)
    cursors = FastCursorStore(fast)
    assert await cursors.get("router") is None
    await cursors.set("router", "17-3")
    assert await cursors.get("router") == "17-3"
    r = aioredis.from_url(redis_url, decode_responses=True)
    assert await r.get("tt:cursor:router") == "17-3"  # where common.consumer.RedisCursorStore keeps it
    await r.aclose()
    fast.close()


@pytest.mark.integration
async def test_redis_py_forms_and_a_silent_server_times_out(redis_url: str) -> None:
    fast = FastRedis(redis_url, timeout_s=5.0)
    assert await fast.set("k", b"\x00v") is True and await fast.get("k") == b"\x00v" and await fast.get("nope") is None
    assert await fast.eval("return {KEYS[1], ARGV[1], ARGV[2]}", 1, "a", "b", 3) == [b"a", b"b", b"3"]
    assert fast.connected and fast.replied_at > float("-inf")
    fast.close()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)  # takes the command, never answers

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    mute = FastRedis(f"redis://127.0.0.1:{port}/0", timeout_s=0.2)
    with pytest.raises(redis.exceptions.TimeoutError):
        await mute.call("PING")
    assert not mute.connected  # closed: a late reply would answer the next command
    server.close()
    await server.wait_closed()


@pytest.mark.integration
async def test_concurrent_commands_share_the_connection_and_keep_their_replies(redis_url: str) -> None:
    fast = FastRedis(redis_url, timeout_s=5.0)
    await asyncio.gather(*(fast.set(f"tt:test:{i}", str(i)) for i in range(50)))
    assert await asyncio.gather(*(fast.get(f"tt:test:{i}") for i in range(50))) == [str(i).encode() for i in range(50)]
    await fast.call("RPUSH", "tt:test:list", "x")
    with pytest.raises(redis.exceptions.ResponseError):
        await fast.get("tt:test:list")  # WRONGTYPE
    assert await fast.get("tt:test:none") is None  # the connection is still in step
    fast.close()
