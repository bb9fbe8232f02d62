"""RTDS leader feed: frame handling (target filter, parse, identity) and the websocket client.

The client sends the application ping every ``ping_interval_s`` and a watchdog hard-closes the
socket when no data frame (keep-alives do not count) arrived for ``stall_s``: RTDS is known to go
silent with the socket open. Every disconnect or stall reports a gap (so the poller backfills at
once) and reconnects with jittered exponential backoff, started over after a connection that worked
(it brought data, or stayed up until the watchdog closed it).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import orjson

from common.cancel import reraise_if_cancelling
from common.retry import Backoff
from services.ingest import rtds
from services.ingest.frames import decode, require_object
from services.ingest.identity import FirstSightingOnly, Identified, OccurrenceCounter, identify
from services.ingest.metrics import IngestMetrics
from services.ingest.model import (
    DEFAULT_MAX_SKEW_MS,
    RTDS_ORDERS_MATCHED,
    RTDS_TRADES,
    SERVER_ERROR,
    ParseError,
    TradeRefused,
)
from services.ingest.recorder import Recorder
from services.ingest.wsconn import WsConnection, feed_stalled, lasted

log = logging.getLogger(__name__)
FEED = "rtds"
INTERNAL = "INTERNAL"
RECONNECT_BACKOFF = Backoff(0.25, 30.0)



class RtdsHandler:
    """Turns RTDS frames into identified trades of accepted wallets; never raises on bad input."""

    def __init__(self, accept: Callable[[str], bool], emit: Callable[[Identified], None],
                 metrics: IngestMetrics, *, max_frame_bytes: int = 1_048_576, occurrence_ttl_s: float = 900.0,
                 source_override: str = "", max_clock_skew_s: float = DEFAULT_MAX_SKEW_MS / 1000) -> None:
        self.accept = accept
        self.emit = emit
        self.metrics = metrics
        self.max_frame_bytes = max_frame_bytes
        self.max_skew_ms = int(max_clock_skew_s * 1000)
        self.source_override = source_override
        self.counters = {RTDS_TRADES: OccurrenceCounter(occurrence_ttl_s),
                         RTDS_ORDERS_MATCHED: OccurrenceCounter(occurrence_ttl_s)}
        self.untyped = FirstSightingOnly()  # no topic/type: which subscription it came through is unknown

    def handle(self, raw: str | bytes, recv_ns: int) -> bool:
        """Process one frame; True when it was data (anything but a keep-alive)."""
        self.metrics.frame(FEED)
        try:
            messages = decode(raw, self.max_frame_bytes)
        except ParseError as exc:
            self.metrics.parse_error(FEED, exc.kind)
            return True
        if messages is None:
            return False
        for item in messages:
            try:
                self.message(require_object(item), recv_ns)
            except TradeRefused as exc:
                self.metrics.parse_error(FEED, exc.kind)
                log.warning("leader trade refused", extra={"feed": FEED, "reason": exc.kind, "detail": exc.detail,
                                                           "raw": str(item)[:300]})
            except ParseError as exc:
                self.metrics.parse_error(FEED, exc.kind)
            except Exception:  # a parser bug must not kill the feed
                self.metrics.parse_error(FEED, INTERNAL)
                log.exception("rtds message handling failed")
        return True

    def message(self, msg: dict[str, Any], recv_ns: int) -> None:
        """Process one decoded RTDS message."""
        route, source = rtds.route(msg)
        if route == rtds.ROUTE_TRADE:
            payload = rtds.payload_of(msg)
            if not self.accept(rtds.wallet_of(payload)):
                self.metrics.filtered(source)
                return
            fill = rtds.parse_trade(payload, self.source_override or source, recv_ns, self.max_skew_ms)
            counter = self.counters[source] if msg.get("topic") is not None else self.untyped
            self.emit(identify(fill, counter, recv_ns / 1e9))
            self.metrics.lag(source, recv_ns / 1e6 - fill.venue_time_ms)  # after the append is on its way
        elif route == rtds.ROUTE_SERVER_ERROR:
            self.metrics.parse_error(FEED, SERVER_ERROR)
            log.error("rtds server error", extra={"reply": str(msg)[:300]})


class RtdsFeed:
    """The RTDS websocket client loop."""

    def __init__(self, url: str, handler: RtdsHandler, metrics: IngestMetrics, *,
                 on_gap: Callable[[float], None] = lambda _t: None,
                 on_connected: Callable[[], None] = lambda: None,
                 recorder: Recorder | None = None, ping_interval_s: float = 5.0, ping_text: str = "PING",
                 stall_s: float = 15.0, extra_topics: str = "", max_frame_bytes: int = 1_048_576,
                 backoff: Backoff = RECONNECT_BACKOFF, rng: random.Random | None = None) -> None:
        self.url = url
        self.handler = handler
        self.metrics = metrics
        self.on_gap = on_gap
        self.on_connected = on_connected
        self.recorder = recorder
        self.ping_interval_s = ping_interval_s
        self.ping_text = ping_text
        self.stall_s = stall_s
        self.subscribe = orjson.dumps(rtds.subscribe_message(extra_topics)).decode()
        self.max_frame_bytes = max_frame_bytes
        self.backoff = backoff
        self.rng = rng or random.Random()
        self.connected = False
        self.connections = 0
        self.last_data_wall_s = time.time()
        self._last_data = time.monotonic()
        self._got_data = False

    async def run(self) -> None:
        """Connect, read, and reconnect forever (until cancelled)."""
        attempt = 0
        while True:
            self._got_data = False
            opened_at: float | None = None
            try:
                conn = await WsConnection.connect(self.url, self._on_message, max_size=self.max_frame_bytes * 16,
                                                  open_timeout_s=10.0, user_agent="tradingtools-ingest/2.0")
                try:
                    conn.send_text(self.subscribe)
                    self.connected = True
                    self.connections += 1
                    self._last_data = opened_at = time.monotonic()
                    self.on_connected()
                    await self._session(conn)
                finally:
                    await conn.close()
                if conn.close_code_sent == 1009:  # a frame beyond max_size
                    self.metrics.parse_error(FEED, "TOO_LARGE")
                log.warning("rtds closed", extra={"error": repr(conn.close_error)[:200]})
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any connect/read failure means reconnect
                reraise_if_cancelling()
                log.warning("rtds connection failed", extra={"error": repr(exc)[:300]})
            self.connected = False
            if self._got_data or lasted(opened_at, self.stall_s):
                attempt = 0
            self.metrics.reconnect(FEED)
            self.on_gap(self.last_data_wall_s)
            delay = self.backoff.delay(min(attempt, 20), self.rng.random())
            attempt += 1
            await asyncio.sleep(delay)

    def _on_message(self, raw: str | bytes, recv_ns: int) -> None:
        """Every message, from inside the socket's read callback."""
        if self.recorder is not None:
            self.recorder.write(FEED, raw, recv_ns)
        if self.handler.handle(raw, recv_ns):
            self._last_data = time.monotonic()
            self.last_data_wall_s = recv_ns / 1e9
            self._got_data = True

    async def _session(self, conn: WsConnection) -> None:
        """Until the socket closes or stalls (``_got_data`` tells whether any data arrived)."""
        tasks = [asyncio.create_task(self._pinger(conn)), asyncio.create_task(self._watchdog(conn))]
        try:
            await conn.wait_closed()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _pinger(self, conn: WsConnection) -> None:
        while True:
            await asyncio.sleep(self.ping_interval_s)
            conn.send_text(self.ping_text)

    async def _watchdog(self, conn: WsConnection) -> None:
        step = min(1.0, self.stall_s / 5)
        while True:
            await asyncio.sleep(step)
            if time.monotonic() - self._last_data > self.stall_s:
                self.metrics.stall(FEED)
                log.warning("rtds stalled; reconnecting", extra={"silent_s": self.stall_s})
                feed_stalled(FEED, self.stall_s, self.last_data_wall_s)
                conn.abort()
                return
