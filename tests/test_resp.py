"""The pipelined RESP connection against real Redis."""

from __future__ import annotations

import pytest

from common.resp import RespConnection, RespError, pack
from tests.helpers import eventually


@pytest.mark.parametrize(("args", "wire"), [
    ((b"PING",), b"*1\r\n$4\r\nPING\r\n"),
    (("SET", "k", 12), b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n"),
    ((b"X", b""), b"*2\r\n$1\r\nX\r\n$0\r\n\r\n"),
])
def test_pack(args: tuple[bytes | str | int, ...], wire: bytes) -> None:
    assert pack(args) == wire


@pytest.mark.integration
async def test_connection_answers_in_order_and_reports_errors(redis_url: str) -> None:
    conn = await RespConnection.open(redis_url)
    try:
        replies: list[object] = []
        conn.write([(("SET", "tt:test:k", "v"), replies.append), (("GET", "tt:test:k"), replies.append),
                    (("INCR", "tt:test:k"), replies.append), (("GET", "tt:test:none"), replies.append)])
        assert await conn.call("PING") == b"PONG"
        assert replies[:2] == [b"OK", b"v"] and isinstance(replies[2], RespError) and replies[3] is None
        with pytest.raises(RespError):
            await conn.call("INCR", "tt:test:k")
    finally:
        conn.close()


@pytest.mark.integration
async def test_a_command_that_cannot_be_packed_leaves_the_replies_in_step(redis_url: str) -> None:
    """A string that is not encodable (a lone surrogate) failed the write after its callback was queued:
    every later reply went to the command before it (a book read answered with a reservation's reply)."""
    conn = await RespConnection.open(redis_url)
    try:
        assert await conn.call("MSET", "tt:test:a", "1", "tt:test:b", "2") == b"OK"
        never: list[object] = []
        with pytest.raises(UnicodeEncodeError):
            conn.write([(("GET", "tt:test:a"), never.append), (("SET", "tt:test:a", "\ud800"), never.append)])
        got: list[object] = []
        conn.write([(("GET", "tt:test:a"), got.append), (("GET", "tt:test:b"), got.append)])
        await eventually(lambda: len(got) + len(never) == 2)
        assert got == [b"1", b"2"] and never == []
        assert await conn.call("PING", timeout_s=5) == b"PONG"
    finally:
        conn.close()
