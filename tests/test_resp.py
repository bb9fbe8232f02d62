"""The pipelined RESP connection against real Redis."""

from __future__ import annotations

import pytest

from common.resp import RespConnection, RespError, pack


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
