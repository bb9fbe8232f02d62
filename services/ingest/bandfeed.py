"""Guard's price bands followed into the tick gate: ``tt:guard:bands`` read whole at start and whenever a message
asks for it, ``tt:guard:bands:changed`` applied as it comes (``common.bands``).

The subscription comes first, then the read (the hash and its meta in one MULTI), so no change slips between
them; messages already in the read are recognised by their sequence number. While the subscription is down the
gate trusts no band: every tick goes out. After each change the books whose band changed are checked against it
at once (``on_changed``), so a trigger armed on a price already past it does not wait for the next tick; so are
those whose band the gate had narrowed on its own and widens again as guard has read the ticks behind it.

An invalidation (``common.band_reset``: a new guard process, before it takes its tick-log cursor, deleted the bands'
meta) is handled as a message not understood: the bands are read again, now none, so the gate trusts no
band and every tick goes out until the new process's first bands land. Only then is it acknowledged: guard takes
its cursor after the acknowledgements, so no tick after that cursor is filtered with the old process's bands,
narrowed by prices it logged and never read, which the new process never reads either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import Callable
from typing import Any

from google.protobuf.message import DecodeError

from common.band_reset import ACK_CHANNEL, ack_message, parse_invalidate
from common.bands import BANDS_CHANNEL, BANDS_KEY, BANDS_META_KEY, parse_message, parse_meta
from common.cancel import reraise_if_cancelling
from common.pubsub import confirmed
from common.retry import Backoff
from common.streams import PRICE_TICKS
from services.ingest.tickgate import TickGate
from tradingtools.market.v1 import market_pb2 as mpb

log = logging.getLogger(__name__)


class BandFeed:
    """Keeps the gate's bands in line with guard's until cancelled."""

    def __init__(self, redis: Any, gate: TickGate, on_changed: Callable[[list[str]], None], *,
                 clock_ns: Callable[[], int] = time.time_ns, backoff: Backoff | None = None,
                 poll_s: float = 1.0, stats_log_s: float = 60.0, confirm_s: float = 5.0) -> None:
        self.redis = redis
        self.gate = gate
        self.on_changed = on_changed
        self.clock_ns = clock_ns
        self.backoff = backoff or Backoff(0.2, 5.0)
        self.poll_s = poll_s
        self.confirm_s = confirm_s  # the subscription's confirmation waited for this long, then subscribed again
        self.stats_log_s = stats_log_s
        self._next_log = time.monotonic() + stats_log_s
        self.ready = asyncio.Event()  # set after the first read
        self.id = secrets.token_hex(8)  # this feed, in the invalidations it acknowledges
        self.invalidations = 0
        self.bad_invalidations = 0

    async def load(self) -> None:
        """Read every band and its meta (one MULTI) into the gate; check the books against them."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.get(BANDS_META_KEY)
        pipe.hgetall(BANDS_KEY)
        raw_meta, encoded = await pipe.execute()
        changed = self.gate.load(parse_meta(raw_meta), encoded or {}, self.clock_ns())
        if changed:
            self.on_changed(changed)
        self.ready.set()

    async def run(self) -> None:
        """Follow the channel; on any failure trust no band, subscribe and read again."""
        rng = random.Random()
        attempt = 0
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(BANDS_CHANNEL)
                # before the read: a change between them is a message (a stuck subscription: start over)
                if not await confirmed(pubsub, poll_s=self.poll_s, deadline=time.monotonic() + self.confirm_s):
                    raise TimeoutError(f"band subscription not confirmed within {self.confirm_s}s")
                await self.load()
                attempt = 0
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=self.poll_s)
                    reraise_if_cancelling()  # a cancel that met the read's timeout came back as that timeout
                    self._log_stats()
                    if msg is None:
                        continue
                    parsed = parse_message(msg["data"])
                    changed = self.gate.apply(parsed, self.clock_ns()) if parsed is not None else None
                    if changed is None:
                        await self.load()
                        if parsed is None:
                            await self._acknowledge(msg["data"])
                    elif changed:
                        self.on_changed(changed)
            except asyncio.CancelledError:
                self.gate.unguarded()
                raise
            except Exception as exc:  # noqa: BLE001 - Redis hiccup: forward everything, resubscribe
                reraise_if_cancelling()
                self.gate.unguarded()
                delay = self.backoff.delay(min(attempt, 8), rng.random())
                attempt += 1
                log.warning("band feed failed; every tick goes out meanwhile",
                            extra={"error": repr(exc)[:300], "delay_s": delay})
                await asyncio.sleep(delay)
            finally:
                with contextlib.suppress(Exception):  # closing a broken connection
                    await pubsub.aclose()

    async def _acknowledge(self, data: str | bytes) -> None:
        """After a message not understood was answered by reading the bands again: when it was an invalidation, say
        that the gate now trusts none of the bands deleted before it (:meth:`load` read no meta)."""
        try:
            token = parse_invalidate(data)
        except ValueError as exc:
            self.bad_invalidations += 1
            log.warning("band invalidation not understood", extra={"error": str(exc)[:300]})
            return
        if token is None:
            return
        self.invalidations += 1
        await self.redis.publish(ACK_CHANNEL, ack_message(token, self.id))

    def _log_stats(self) -> None:
        now = time.monotonic()
        if now < self._next_log:
            return
        self._next_log = now + self.stats_log_s
        gate = self.gate
        log.info("tick gate", extra={**vars(gate.stats), "bands": len(gate.bands), "rises": len(gate._rises),
                                     "left_out_kept": len(gate.left), "left_out_late": gate.left.late,
                                     "left_out_partial": gate.left.partial,
                                     "invalidations": self.invalidations,
                                     "bad_invalidations": self.bad_invalidations,
                                     "trusted": gate.valid_until_ns > self.clock_ns(),
                                     "epoch": gate.meta.epoch if gate.meta else ""})


_STAMP_PAGE = 64  # entries read back a page at a time, for the newest gate tick
_STAMP_PAGES = 64  # at most: a sweep appends a few hundred resolution ticks at once


async def last_tick_stamp(redis: Any) -> int:
    """The highest ``received_time_ns`` of the log's ticks back to its newest gate tick (``redis``: a bytes-mode
    client; 0 when none): ticks this process sends are stamped later, and bands are trusted only once guard has read
    past it (a previous process's ticks may still move them). Not the newest entry's alone: the resolution
    recorder's sweep may append many ticks stamped long before the gate ticks behind them (the gate stamps in
    increasing order: none before its newest is later)."""
    newest, before = 0, "+"
    for _page in range(_STAMP_PAGES):
        rows = await redis.xrevrange(PRICE_TICKS, max=before, count=_STAMP_PAGE) or []
        for _entry_id, fields in rows:
            payload = fields.get(b"p")
            if not isinstance(payload, bytes):
                continue
            try:
                tick = mpb.PriceTick.FromString(payload)
            except DecodeError:
                continue
            newest = max(newest, int(tick.received_time_ns))
            if tick.kind != mpb.TICK_KIND_MARKET_RESOLVED:
                return newest
        if len(rows) < _STAMP_PAGE:
            return newest
        last = rows[-1][0]
        before = "(" + (last.decode() if isinstance(last, bytes) else str(last))
    return newest
