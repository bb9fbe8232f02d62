"""Reading ingest's PriceTick log: one blocking ``XREAD`` per batch on a dedicated connection.

redis-py costs ~100 µs of CPU per command here (pool, retry, packing, callbacks), and a reader
that keeps up with the log gets small batches (one per ingest flush), so that cost was paid
thousands of times a second. This adapter speaks RESP2 itself on one TCP connection, parsed by
hiredis (~30 µs per round trip); the blocking XREAD wakes once per ingest flush and returns all of
it. Connections that are not plain TCP (TLS, unix socket) read through redis-py instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import hiredis
from google.protobuf.message import DecodeError
from redis.asyncio.connection import Connection

from common.streams import DurableLog
from tradingtools.market.v1 import market_pb2 as mpb

log = logging.getLogger(__name__)

TickBatch = tuple[str, list[mpb.PriceTick]]  # (cursor after the batch, its ticks in log order)
OpenTicks = Callable[[str], AsyncIterator[TickBatch]]


class RespError(ConnectionError):
    """Redis answered with an error, or the connection failed or timed out."""


def pack(*args: bytes) -> bytes:
    """One RESP2 command."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class RespConnection(asyncio.Protocol):
    """A minimal RESP2 client: commands answered in order, each with a deadline."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader()
        self._waiters: deque[asyncio.Future[Any]] = deque()
        self._transport: asyncio.Transport | None = None
        self._lost: BaseException | None = None

    @classmethod
    async def open(cls, host: str, port: int, *, username: str | None = None, password: str | None = None,
                   db: int = 0, timeout_s: float = 5.0) -> RespConnection:
        """Connect, authenticate and select ``db``."""
        loop = asyncio.get_running_loop()
        _t, conn = await asyncio.wait_for(loop.create_connection(cls, host, port), timeout_s)
        try:
            if password:
                auth = (username.encode(), password.encode()) if username else (password.encode(),)
                await conn.call(timeout_s, b"AUTH", *auth)
            if db:
                await conn.call(timeout_s, b"SELECT", str(db).encode())
        except BaseException:
            conn.close()
            raise
        return conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while self._waiters:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as exc:
                self._fail(RespError(f"redis protocol error: {exc}"))
                return
            if reply is False:
                return
            waiter = self._waiters.popleft()
            if waiter.done():
                continue
            if isinstance(reply, hiredis.ReplyError):
                waiter.set_exception(RespError(f"redis error: {reply}"))
            else:
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = exc or RespError("redis connection closed")
        self._fail(RespError(f"redis connection lost: {self._lost!r}"))

    def _fail(self, exc: BaseException) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(exc)
        self.close()

    def close(self) -> None:
        """Close the socket (pending calls fail)."""
        if self._transport is not None:
            self._transport.abort()

    async def call(self, timeout_s: float, *args: bytes) -> Any:
        """Send one command and wait for its reply (``RespError`` on an error reply, a lost connection or
        no reply within ``timeout_s``; after a timeout the connection is closed)."""
        if self._lost is not None or self._transport is None:
            raise RespError("redis connection closed")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        self._waiters.append(waiter)
        self._transport.write(pack(*args))
        timer = loop.call_later(timeout_s, self._timeout, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()

    def _timeout(self, waiter: asyncio.Future[Any]) -> None:
        if not waiter.done():
            self._fail(RespError("redis reply timed out"))


def parse_entries(entries: list[Any]) -> TickBatch:
    """XREAD entries ``[[id, [field, value, ...]], ...]`` → (last id, parsed ticks); an entry without a
    ``p`` field or whose payload does not parse is logged and skipped (the cursor still moves past it)."""
    ticks: list[mpb.PriceTick] = []
    parse = mpb.PriceTick.FromString
    for _entry_id, fields in entries:
        payload = fields[1] if fields and fields[0] == b"p" else _field(fields)
        try:
            if payload is None:
                raise DecodeError("no 'p' field")
            ticks.append(parse(payload))
        except DecodeError as exc:
            log.warning("malformed price tick entry skipped", extra={"entry": _text(_entry_id), "error": str(exc)})
    return _text(entries[-1][0]), ticks


def _field(fields: list[Any]) -> bytes | None:
    for i in range(0, len(fields) - 1, 2):
        if fields[i] == b"p":
            return bytes(fields[i + 1])
    return None


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def log_tick_stream(log_: DurableLog, *, batch: int = 1024, block_ms: int = 1000) -> OpenTicks:
    """The PRICE_TICKS durable log as an ``open_stream(after_cursor)`` yielding batches.

    Same ticks and cursors as ``IngestService.StreamPriceTicks``, without a message per tick (one Python
    gRPC stream tops out near 7,000 messages/s on this machine).
    """
    pool = log_.redis.connection_pool
    kwargs = pool.connection_kwargs
    plain_tcp = pool.connection_class is Connection and "host" in kwargs
    name = log_.name.encode()
    count, block = str(batch).encode(), str(block_ms).encode()
    reply_timeout_s = block_ms / 1000 + 5.0

    async def open_stream(after: str) -> AsyncIterator[TickBatch]:
        cursor = await log_.resolve(after)
        if not plain_tcp:
            while True:
                items = await log_.read(cursor, count=batch, block_ms=block_ms)
                if items:
                    out = parse_entries([[c, [b"p", p]] for c, p in items])
                    cursor = out[0]
                    yield out
        conn = await RespConnection.open(kwargs["host"], int(kwargs.get("port") or 6379),
                                         username=kwargs.get("username"), password=kwargs.get("password"),
                                         db=int(kwargs.get("db") or 0))
        try:
            while True:
                reply = await conn.call(reply_timeout_s, b"XREAD", b"COUNT", count, b"BLOCK", block, b"STREAMS",
                                        name, cursor.encode())
                if not reply:  # nil: nothing new within block_ms
                    continue
                entries = reply[0][1]
                if entries:
                    batch_out = parse_entries(entries)
                    cursor = batch_out[0]
                    yield batch_out
        finally:
            conn.close()

    return open_stream
