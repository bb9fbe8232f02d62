"""How the HTTP/1.1 client frames answers: bytes it cannot frame for certain are a BadResponse (which the executor
settles by status query), never a guess at where an answer ends."""

from __future__ import annotations

import asyncio

import pytest

from common.http1 import BadResponse, Http1Client, _Parser
from common.http1parse import MAX_HEAD_BYTES


def _feed_bytewise(raw: bytes) -> _Parser:
    parser = _Parser()
    done = False
    for i in range(len(raw)):
        assert not done, f"complete before byte {i}"
        done = parser.feed(raw[i:i + 1])
    assert done
    return parser


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-2\r\n\r\n",  # read as the end of the body
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX3\r\nabc\r\n0\r\n\r\n",  # chunk overruns
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1_0\r\n0123456789\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1_0\r\n\r\n0123456789",
    b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\nabcd",
    b"HTTP/1.1 200 OK\r\nContent Length: 3\r\n\r\nabc",  # not a header name: the framing cannot be told
    b"HTTP/1.1 200 OK\r\nContent-Length : 3\r\n\r\nabc",
    b"HTTP/1.1 2000 OK\r\nContent-Length: 3\r\n\r\nabc",
    b"HTTP/1.1 101 Switching Protocols\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\n Content-Length: 3\r\n\r\nabc",  # a folded line with nothing to fold into
])
def test_an_answer_whose_framing_is_not_certain_is_a_bad_response(raw: bytes) -> None:
    with pytest.raises(BadResponse):
        _Parser().feed(raw)


def test_a_folded_header_line_is_part_of_the_header_before_it_not_a_header_of_its_own() -> None:
    """obs-fold: a line starting with a space continues the previous field. The old parser read the folded
    ``Content-Length: 0`` as a framing header and ended the answer empty; its body came after."""
    parser = _Parser()
    assert not parser.feed(b"HTTP/1.1 200 OK\r\nX-Note: a\r\n Content-Length: 0\r\nConnection: close\r\n\r\nabc")
    assert parser.eof()
    assert parser.response().body == b"abc"
    assert parser.response().headers["x-note"] == "a Content-Length: 0"


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 5000,  # a size line that never ends
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n" + b"X-T: 1\r\n" * 9000,  # endless trailers
    b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * MAX_HEAD_BYTES,  # a head that never ends
])
def test_framing_lines_without_an_end_are_refused_before_the_deadline(raw: bytes) -> None:
    with pytest.raises(BadResponse):
        _Parser().feed(raw)


def test_chunk_extensions_trailers_and_interim_answers_split_at_every_byte() -> None:
    raw = (b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n"
           b"HTTP/1.1 200 OK\r\ntransfer-ENCODING: Chunked\r\nX-A: 1\r\nx-a: 2\r\n\r\n"
           b"5 ; name=\"v\"\r\nhello\r\nA;x\r\n0123456789\r\n0;last\r\nX-Trailer: t\r\n\r\n")
    parser = _feed_bytewise(raw)
    response = parser.response()
    assert (response.status, response.body, response.headers["x-a"]) == (200, b"hello0123456789", "1, 2")
    assert parser.keep_alive and not parser.buf


@pytest.mark.integration
async def test_answers_written_one_byte_at_a_time_on_a_kept_connection() -> None:
    answers = [b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\none!",
               b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;e=1\r\ntwo\r\n0\r\nT: x\r\n\r\n",
               b"HTTP/1.1 204 No Content\r\n\r\n"]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answer in answers:
            await reader.readuntil(b"\r\n\r\n")
            for i in range(len(answer)):
                writer.write(answer[i:i + 1])
                await writer.drain()
                await asyncio.sleep(0)
        await asyncio.sleep(5)

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    client = Http1Client(f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}")
    got = [(await client.request("GET", "/", timeout_s=5)).body for _ in answers]
    assert got == [b"one!", b"two", b""] and client.open_connections == 1
    await client.close()
    srv.close()
