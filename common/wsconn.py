"""A websocket client that hands every received message to a callback from inside ``data_received``.

The feeds read thousands of frames a second and almost all of them are dropped after a dictionary
lookup. websockets' asyncio connection queues each message and wakes a reading task for it; here
the sans-I/O protocol of the same library parses the bytes and the callback runs at once, with the
receive time of the bytes that completed the message. Control frames (ping → pong, close) are
answered by the protocol; fragmented messages are assembled up to ``max_size``. While the protocol waits at
the start of a frame, the whole, unfragmented text and binary frames of a read are taken without it (its
generator-based parser cost more than the frame's JSON); it parses everything else, from that frame on.
Once a close frame was received or sent (or the protocol failed the connection), the server is given
``close_timeout_s`` to close TCP, then the socket is dropped.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import Side, State
from websockets.streams import StreamReader
from websockets.uri import parse_uri

OnMessage = Callable[[str | bytes, int], None]
_TEXT = Opcode.TEXT
_AT_EOF = StreamReader.at_eof.__code__


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: WsConnection) -> None:
        self.owner = owner

    def data_received(self, data: bytes) -> None:
        self.owner._received(data)

    def eof_received(self) -> bool | None:
        self.owner._eof()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._lost(exc)


class WsConnection:
    """One client websocket; ``on_message(data, recv_ns)`` is called for every text or binary message."""

    def __init__(self, proto: ClientProtocol, on_message: OnMessage, *, close_timeout_s: float = 1.0) -> None:
        self._proto = proto
        self._close_timeout_s = close_timeout_s
        self._close_timer: asyncio.TimerHandle | None = None
        self._on_message = on_message
        self._transport: asyncio.Transport | None = None
        self._handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._closed = asyncio.Event()
        self._parts: list[bytes] = []
        self._text = False
        # whole data frames are read here, not by the protocol, while it is at a frame's start (_fast_frames)
        self._fast = False
        limits = [x for x in (getattr(proto, "max_message_size", 0), getattr(proto, "max_fragment_size", 0))
                  if x is not None]
        self._fast_max: int | None = min(limits) if limits else None
        self.close_error: BaseException | None = None

    @classmethod
    async def connect(cls, url: str, on_message: OnMessage, *, max_size: int = 16 << 20,
                      open_timeout_s: float = 10.0, user_agent: str = "", close_timeout_s: float = 1.0) -> WsConnection:
        """Open the socket and finish the opening handshake (raises on failure)."""
        uri = parse_uri(url)
        conn = cls(ClientProtocol(uri, max_size=max_size), on_message, close_timeout_s=close_timeout_s)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(open_timeout_s):
            transport, _ = await loop.create_connection(
                lambda: _Protocol(conn), uri.host, uri.port, ssl=ssl.create_default_context() if uri.secure else None)
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn._transport = transport
            request = conn._proto.connect()
            if user_agent:
                request.headers["User-Agent"] = user_agent
            conn._proto.send_request(request)
            conn._flush()
            try:
                await conn._handshake
            except BaseException:
                conn.abort()
                raise
        return conn

    @property
    def closed(self) -> bool:
        """True once the connection is closed (or closing)."""
        return self._closed.is_set()

    @property
    def close_code_sent(self) -> int | None:
        """The close code we sent (1009 when a message was too large), if any."""
        sent = self._proto.close_sent
        return sent.code if sent is not None else None

    def send_text(self, text: str) -> None:
        """Send one text message (ignored once closed)."""
        if self._proto.state is State.OPEN and self._transport is not None and not self._closed.is_set():
            self._proto.send_text(text.encode())
            self._flush()

    def abort(self) -> None:
        """Drop the socket at once (no closing handshake)."""
        if self._transport is not None:
            self._transport.abort()
        self._lost(None)

    async def close(self, timeout_s: float = 1.0) -> None:
        """Closing handshake, then drop the socket (nothing to do once it is closed: an aborted socket
        cannot be written to)."""
        if self._proto.state is State.OPEN and not self._closed.is_set():
            self._proto.send_close(1000)
            self._flush()
            try:
                async with asyncio.timeout(timeout_s):
                    await self._closed.wait()
            except TimeoutError:
                pass
        self.abort()

    async def wait_closed(self) -> None:
        """Return once the connection is closed."""
        await self._closed.wait()

    def _flush(self) -> None:
        data = self._proto.data_to_send()
        if self._transport is not None and data:
            for chunk in data:
                if chunk:
                    self._transport.write(chunk)
                else:  # the protocol asks for the write half to close
                    if self._transport.can_write_eof():
                        self._transport.write_eof()

    def _received(self, data: bytes) -> None:
        recv_ns = time.time_ns()
        if self._fast and self._proto.state is State.OPEN:
            data = self._fast_frames(data, recv_ns)
            if not data:
                return
            self._fast = False  # the protocol takes the rest, from a frame's start
        self._proto.receive_data(data)
        for event in self._proto.events_received():
            if isinstance(event, Frame):
                if event.opcode is _TEXT and event.fin:  # the bulk: _frame and _deliver inline
                    payload = bytes(event.data)
                    try:
                        message: str | bytes = payload.decode()
                    except UnicodeDecodeError:  # not UTF-8: the callback gets the bytes and judges them
                        message = payload
                    self._on_message(message, recv_ns)
                else:
                    self._frame(event, recv_ns)
            elif isinstance(event, Response) and not self._handshake.done():
                if self._proto.handshake_exc is not None:
                    self._handshake.set_exception(self._proto.handshake_exc)
                else:
                    self._handshake.set_result(None)
        self._flush()
        if self._proto.state is State.CLOSED:
            self._closing()
        elif self._proto.close_expected() and self._close_timer is None:
            # a client waits for the server to close TCP; one that never does would hold the feed on a dead socket
            self._close_timer = asyncio.get_running_loop().call_later(self._close_timeout_s, self._close_timed_out)
        self._fast = self._at_frame_start()

    def _at_frame_start(self) -> bool:
        """True when the protocol waits for the first byte of a frame, nothing buffered, no message in fragments:
        the next whole data frames need none of its state (:meth:`_fast_frames`)."""
        proto = self._proto
        try:  # (another version of websockets without these internals: the protocol reads everything)
            if (proto.state is not State.OPEN or proto.side is not Side.CLIENT or proto.current_size is not None
                    or proto.extensions or proto.debug or proto.reader.buffer):
                return False
            gen: Any = proto.parser
            while gen.gi_yieldfrom is not None:
                gen = gen.gi_yieldfrom
            return gen.gi_code is _AT_EOF  # parse() at the top of its loop, not inside a frame
        except AttributeError:
            return False

    def _fast_frames(self, data: bytes, recv_ns: int) -> bytes:
        """Deliver the whole, unfragmented, unmasked text and binary frames at the head of ``data`` as the protocol
        would (it is at a frame's start and stays there); return the rest, from the first frame it must parse
        (control frames, fragments, reserved bits, a frame over the size limit or not whole in ``data``)."""
        n, pos, limit = len(data), 0, self._fast_max
        while n - pos >= 2:
            head = data[pos]
            length = data[pos + 1]
            if (head != 0x81 and head != 0x82) or length > 127:  # FIN, no RSV, TEXT/BINARY; no mask bit
                break
            start = pos + 2
            if length == 126:
                start += 2
                if start > n:
                    break
                length = int.from_bytes(data[pos + 2:start], "big")
            elif length == 127:
                start += 8
                if start > n:
                    break
                length = int.from_bytes(data[pos + 2:start], "big")
            end = start + length
            if end > n or (limit is not None and length > limit):
                break
            payload = data[start:end]
            pos = end
            if head == 0x82:
                self._on_message(payload, recv_ns)
                continue
            try:
                message: str | bytes = payload.decode()
            except UnicodeDecodeError:  # not UTF-8: the callback gets the bytes and judges them
                message = payload
            self._on_message(message, recv_ns)
        return data[pos:] if pos else data

    def _frame(self, frame: Frame, recv_ns: int) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if frame.fin:
                self._deliver(bytes(frame.data), opcode is Opcode.TEXT, recv_ns)
                return
            self._text = opcode is Opcode.TEXT
            self._parts = [bytes(frame.data)]
        elif opcode is Opcode.CONT:
            self._parts.append(bytes(frame.data))
            if frame.fin:
                data, self._parts = b"".join(self._parts), []
                self._deliver(data, self._text, recv_ns)

    def _deliver(self, data: bytes, text: bool, recv_ns: int) -> None:
        message: str | bytes = data
        if text:
            try:
                message = data.decode()
            except UnicodeDecodeError:  # not UTF-8: the callback gets the bytes and judges them
                message = data
        self._on_message(message, recv_ns)

    def _closing(self) -> None:
        if self._proto.state is State.CLOSED and self._transport is not None:
            self._transport.close()

    def _close_timed_out(self) -> None:
        self._close_timer = None
        if self._transport is not None:
            self._transport.abort()
        self._lost(self._proto.parser_exc)

    def _eof(self) -> None:
        self._proto.receive_eof()
        self._flush()
        self._lost(None)

    def _lost(self, exc: BaseException | None) -> None:
        if self._closed.is_set():
            return
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        self.close_error = exc
        if not self._handshake.done():
            self._handshake.set_exception(exc or InvalidHandshake("connection closed during the handshake"))
        self._closed.set()
