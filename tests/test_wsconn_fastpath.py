"""Whole data frames read without the sans-I/O protocol (WsConnection._fast_frames) give what the protocol gives:
the same messages, in the same reads, the same bytes sent back (pongs, close) and the same state, however the
stream is cut into reads."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import State
from websockets.streams import StreamReader
from websockets.uri import parse_uri

from common.wsconn import WsConnection

MAX_SIZE = 70_000


class _Transport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.sent.append(bytes(data))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.sent.append(b"<eof>")

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def _frame(kind: str, size: int) -> bytes:
    text = ("é" * (size // 2 + 1))[: max(size // 2, 0)] or ""
    frames = {
        "text": [Frame(Opcode.TEXT, text.encode())],
        "binary": [Frame(Opcode.BINARY, bytes(range(256)) * (size // 256) + b"\x01" * (size % 256))],
        "bad_utf8": [Frame(Opcode.TEXT, b"\xff\xfe" * (size // 2 + 1))],
        "fragmented": [Frame(Opcode.TEXT, b"frag", fin=False), Frame(Opcode.CONT, b"men", fin=False),
                       Frame(Opcode.CONT, text.encode())],
        "open_fragment": [Frame(Opcode.TEXT, b"frag", fin=False)],  # the next data frame is not its continuation
        "ping": [Frame(Opcode.PING, b"p" * min(size, 125))],
        "pong": [Frame(Opcode.PONG, b"")],
        "too_large": [Frame(Opcode.BINARY, b"x" * (MAX_SIZE + 1))],
        "close": [Frame(Opcode.CLOSE, Close(1000, "bye").serialize())],
    }.get(kind)
    if frames is None:  # "rsv": a text frame with RSV1 set (Frame.serialize refuses to build it)
        return b"\xc1\x03abc"
    return b"".join(f.serialize(mask=False) for f in frames)


def _frames_sent(sent: list[bytes]) -> list[tuple[Opcode, bytes, bool]]:
    """The frames written (client frames are masked with random keys: compared unmasked)."""
    reader = StreamReader()
    reader.feed_data(b"".join(x for x in sent if x != b"<eof>"))
    reader.feed_eof()
    out: list[tuple[Opcode, bytes, bool]] = []
    while True:
        at_end = reader.at_eof()
        try:
            next(at_end)
        except StopIteration as end:
            if end.value:
                return out
        parser = Frame.parse(reader.read_exact, mask=True)
        try:
            next(parser)
        except StopIteration as done:
            frame = done.value
            out.append((frame.opcode, bytes(frame.data), frame.fin))


frames_st = st.lists(st.tuples(
    st.sampled_from(["text", "text", "text", "binary", "bad_utf8", "fragmented", "open_fragment", "ping", "pong",
                     "too_large", "close", "rsv"]),
    st.sampled_from([0, 1, 5, 125, 126, 127, 300, 65_535, 65_536, 69_000])), min_size=1, max_size=12)


async def _run(stream: bytes, cuts: list[int], fast: bool) -> tuple[Any, ...]:
    got: list[tuple[int, str | bytes]] = []
    read = [0]
    conn = WsConnection(ClientProtocol(parse_uri("ws://x/"), state=State.OPEN, max_size=MAX_SIZE),
                        lambda m, _t: got.append((read[0], m)))
    transport = _Transport()
    conn._transport = transport  # type: ignore[assignment]
    if not fast:
        conn._at_frame_start = lambda: False  # type: ignore[method-assign]
    bounds = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        read[0] = i
        conn._received(stream[a:b])
    proto = conn._proto
    return (got, _frames_sent(transport.sent), transport.closed, proto.state, conn.close_code_sent,
            repr(proto.parser_exc), conn.closed)


@settings(max_examples=400, deadline=None)
@given(frames_st, st.lists(st.booleans(), min_size=12, max_size=12),
       st.lists(st.integers(min_value=0, max_value=1_000_000), max_size=4))
def test_the_fast_path_reads_what_the_protocol_reads(frames: list[tuple[str, int]], at_ends: list[bool],
                                                     cuts: list[int]) -> None:
    """Reads end mostly where frames end (the fast path starts there), sometimes anywhere."""
    parts = [_frame(kind, size) for kind, size in frames]
    stream = b"".join(parts)
    ends = [sum(len(p) for p in parts[:i + 1]) for i in range(len(parts))]
    cuts = cuts + [end for end, cut in zip(ends, at_ends, strict=False) if cut]
    assert asyncio.run(_run(stream, cuts, True)) == asyncio.run(_run(stream, cuts, False))


async def test_whole_text_frames_skip_the_protocol_once_it_is_at_a_frame_start() -> None:
    got: list[str | bytes] = []
    conn = WsConnection(ClientProtocol(parse_uri("ws://x/"), state=State.OPEN), lambda m, _t: got.append(m))
    conn._transport = _Transport()  # type: ignore[assignment]
    conn._received(_frame("text", 10))  # the first read: the protocol's
    assert conn._fast
    conn._received(_frame("text", 20) + _frame("text", 300)[:5])  # a whole frame, then part of one
    assert not conn._fast and conn._proto.reader.buffer  # the protocol holds the part
    conn._received(_frame("text", 300)[5:])
    assert conn._fast
    assert got == ["é" * 5, "é" * 10, "é" * 150]
