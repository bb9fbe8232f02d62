"""Consumers feeding the core: control's trigger notifications, the price-tick stream.

Trigger notifications (``tt:triggers:changed``, ``{"triggerId","op","version"}``, version = INCR
``tt:triggers:version``) are fire-and-forget, so a full resync runs on every (re)subscribe, on a
version gap, and whenever the periodic version check finds a change nobody announced.

Ticks are state, not history: the tick stream resumes from the last cursor seen by this process
(stale ticks never fire anyway) and, after a (re)connect, the stored books are evaluated once so a
crossing that happened while disconnected is not missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import orjson

from common.retry import Backoff
from common.streams import START_NEW, DurableLog
from services.guard.tasks import reraise_if_cancelled
from tradingtools.market.v1 import market_pb2 as mpb

log = logging.getLogger(__name__)

TRIGGERS_CHANNEL = "tt:triggers:changed"
TRIGGERS_VERSION_KEY = "tt:triggers:version"


class Reloader(Protocol):
    """What the trigger sync drives."""

    async def reload(self, trigger_id: str) -> None:
        """Reload one trigger."""

    async def resync(self) -> tuple[int, int]:
        """Reload everything."""


class TriggerSync:
    """Applies control's trigger notifications to the engine."""

    def __init__(self, redis: Any, target: Reloader, *, check_s: float = 5.0,
                 initial: Callable[[], Awaitable[object]] | None = None, backoff: Backoff | None = None) -> None:
        self.redis = redis
        self.target = target
        self.initial = initial
        self.check_s = check_s
        self.backoff = backoff or Backoff(0.1, 5.0)
        self.version = -1
        self.ready = asyncio.Event()
        self.notifications = 0
        self.gaps = 0

    async def _read_version(self) -> int:
        raw = await self.redis.get(TRIGGERS_VERSION_KEY)
        return int(raw) if raw else 0

    async def run(self) -> None:
        """Subscribe, resync, then apply notifications until cancelled; start over on any failure."""
        rng = random.Random()
        attempt = 0
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(TRIGGERS_CHANNEL)
                self.version = await self._read_version()
                if self.initial is not None:
                    await self.initial()  # the start-up load, after subscribing so no change slips by
                    self.initial = None
                else:
                    await self.target.resync()
                self.ready.set()
                attempt = 0
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=self.check_s)
                    if msg is None:
                        current = await self._read_version()
                        if current != self.version:
                            self.gaps += 1
                            self.version = current
                            await self.target.resync()
                        continue
                    await self._apply(msg.get("data"))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis or PostgreSQL outage: start over
                reraise_if_cancelled()
                delay = self.backoff.delay(min(attempt, 8), rng.random())
                attempt += 1
                log.warning("trigger sync restarting", extra={"error": repr(exc)[:300], "delay_s": delay})
                await asyncio.sleep(delay)
            finally:
                with contextlib.suppress(Exception):  # closing a broken connection
                    await pubsub.aclose()

    async def _apply(self, data: Any) -> None:
        self.notifications += 1
        try:
            payload = orjson.loads(data)
            trigger_id = str(payload["triggerId"])
            version = int(payload["version"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("malformed trigger notification ignored", extra={"data": str(data)[:200]})
            return
        if version > self.version + 1:
            self.gaps += 1
            self.version = version
            await self.target.resync()
            return
        self.version = max(self.version, version)
        await self.target.reload(trigger_id)


OpenTicks = Callable[[str], AsyncIterator[tuple[str, mpb.PriceTick]]]


class TickFeed:
    """Follows the price-tick stream and hands each tick to ``handle``; reconnects with backoff."""

    def __init__(self, open_stream: OpenTicks, handle: Callable[[mpb.PriceTick], Awaitable[object]],
                 on_connect: Callable[[], Awaitable[object]] | None = None, *,
                 urgent: Callable[[], bool] | None = None, backoff: Backoff | None = None) -> None:
        self.open_stream = open_stream
        self.handle = handle
        self.on_connect = on_connect
        self.urgent = urgent
        self.backoff = backoff or Backoff(0.05, 2.0)
        self.cursor = START_NEW
        self.connected = False
        self.reconnects = 0
        self.handler_errors = 0
        self.handled = 0

    async def run(self) -> None:
        """Run until cancelled."""
        rng = random.Random()
        attempt = 0
        while True:
            try:
                stream = self.open_stream(self.cursor)
                first = True
                async for cursor, tick in stream:
                    if first:
                        first = False
                        self.connected = True
                        if attempt and self.on_connect is not None:
                            # the stream is open again: books changed while it was down are evaluated now
                            await self._catch_up()
                        attempt = 0
                    self.cursor = cursor
                    self.handled += 1
                    # A backlog is handled without awaiting anything: yield to the loop now and then, and
                    # every 4th tick (~0.1 ms) while fires are in flight, so their I/O is not held up by
                    # ticks (a loop turn per tick costs as much as the tick itself).
                    if not self.handled & 3 and (not self.handled & 31
                                                 or (self.urgent is not None and self.urgent())):
                        await asyncio.sleep(0)
                    try:
                        await self.handle(tick)
                    except asyncio.CancelledError:
                        raise
                    except Exception:  # one bad tick must not stop the feed
                        reraise_if_cancelled()
                        self.handler_errors += 1
                        log.exception("tick handler failed", extra={"asset_id": tick.asset_id})
                raise ConnectionError("tick stream ended")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reconnect on any upstream failure
                reraise_if_cancelled()
                self.connected = False
                self.reconnects += 1
                delay = self.backoff.delay(min(attempt, 8), rng.random())
                attempt += 1
                log.warning("tick stream reconnecting", extra={"error": repr(exc)[:300], "delay_s": delay})
                await asyncio.sleep(delay)
                await self._catch_up()

    async def _catch_up(self) -> None:
        if self.on_connect is None:
            return
        try:
            await self.on_connect()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - best effort: ticks keep coming
            log.warning("catch-up after reconnect failed", extra={"error": repr(exc)[:300]})


# XRANGE after a cursor, framed into one bulk string ("<id> <len> <payload>" per entry): redis-py's
# pure-Python reply parser costs ~100 µs per stream entry (five reply elements each), one bulk string
# costs nothing per entry.
_BATCH_READ = """
local entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', tonumber(ARGV[2]))
local out = {}
for i, e in ipairs(entries) do
  local fields = e[2]
  local p = ''
  for j = 1, #fields, 2 do
    if fields[j] == 'p' then p = fields[j + 1] end
  end
  out[i] = e[1] .. ' ' .. #p .. ' ' .. p
end
return table.concat(out)
"""


def unframe(buf: bytes) -> list[tuple[str, bytes]]:
    """Split a framed batch into (cursor, payload) pairs."""
    out = []
    pos, end = 0, len(buf)
    while pos < end:
        sp = buf.index(b" ", pos)
        sp2 = buf.index(b" ", sp + 1)
        start = sp2 + 1
        stop = start + int(buf[sp + 1:sp2])
        out.append((buf[pos:sp].decode(), buf[start:stop]))
        pos = stop
    return out


def log_tick_stream(log_: DurableLog, *, batch: int = 1024) -> OpenTicks:
    """The PRICE_TICKS durable log read directly, in batches (ingest appends every tick it streams there).

    Same items and cursors as ``IngestService.StreamPriceTicks`` without a message per tick: one Python
    gRPC stream tops out near 7,000 messages/s on this machine, a framed batch read does not. When
    caught up it waits with a blocking XREAD, then reads the new entries in a batch again.
    """
    script = log_.redis.register_script(_BATCH_READ)

    async def open_stream(after: str) -> AsyncIterator[tuple[str, mpb.PriceTick]]:
        cursor = await log_.resolve(after)
        while True:
            raw = await script(keys=[log_.name], args=[cursor, batch])
            items = unframe(raw) if raw else []
            for item_cursor, payload in items:
                cursor = item_cursor
                yield item_cursor, mpb.PriceTick.FromString(payload)
            if len(items) < batch:
                # caught up: wait for the next entry (parsed by redis-py: one entry is cheap), then batch again
                for item_cursor, payload in await log_.read(cursor, count=1):
                    cursor = item_cursor
                    yield item_cursor, mpb.PriceTick.FromString(payload)

    return open_stream
