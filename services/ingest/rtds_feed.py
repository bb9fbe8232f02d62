"""RTDS leader feed: frame handling (target filter, parse, identity) and the websocket client.

The client sends the application ping every ``ping_interval_s`` and a watchdog hard-closes the
socket when no data frame (keep-alives do not count) arrived for ``stall_s``: RTDS is known to go
silent with the socket open. Every disconnect or stall reports a gap (so the poller backfills at
once) and reconnects with jittered exponential backoff, started over after a connection that worked
(it brought data, or stayed up until the watchdog closed it). Every connection, its subscription sent,
reports that the feed is up (the poller polls again after a gap: trades made while it was down).
``activity/trades`` (the global firehose, tens of messages a second; every taker and maker fill) that delivered
before and then sends nothing for ``stall_s`` while other data flows (``orders_matched``, a liveness topic) is
a dead subscription: the socket is closed and reopened like a stall, so it is renewed and the poller covers the
gap. Still silent after that (the venue has switched it off platform-wide before), the socket stays up and every
further ``stall_s`` of silence is reported as a gap (the poller polls everyone) until it delivers again.
``orders_matched`` is not watched: it carries takers only, which ``trades`` carries too. So while it delivers,
a ``trades`` that never did (off before ingest started) is watched as silent since the session began; and when
neither type ever delivered while other data flows (both off, a liveness topic busy), that silence is polled for
every ``stall_s`` without reconnecting.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import orjson

from common.feedsession import RECONNECT_BACKOFF, FeedSession, feed_stalled
from common.retry import Backoff
from common.wsconn import WsConnection
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

log = logging.getLogger(__name__)
FEED = "rtds"
INTERNAL = "INTERNAL"


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
        self.last_seen_ns: dict[str, int] = {}  # leader-trade type -> its last message (any wallet), receive time

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
            typed = msg.get("topic") is not None
            if typed:
                self.last_seen_ns[source] = recv_ns
            payload = rtds.payload_of(msg)
            if not self.accept(rtds.wallet_of(payload)):
                self.metrics.filtered(source)
                return
            fill = rtds.parse_trade(payload, self.source_override or source, recv_ns, self.max_skew_ms)
            counter = self.counters[source] if typed else self.untyped
            self.emit(identify(fill, counter, recv_ns / 1e9))
            self.metrics.lag(source, recv_ns / 1e6 - fill.venue_time_ms)  # after the append is on its way
        elif route == rtds.ROUTE_SERVER_ERROR:
            self.metrics.parse_error(FEED, SERVER_ERROR)
            log.error("rtds server error", extra={"reply": str(msg)[:300]})


class RtdsFeed:
    """The RTDS websocket client loop (:class:`~common.feedsession.FeedSession`: data frames count as alive)."""

    def __init__(self, url: str, handler: RtdsHandler, metrics: IngestMetrics, *,
                 on_gap: Callable[[float], None] = lambda _t: None,
                 on_connected: Callable[[], None] = lambda: None,
                 recorder: Recorder | None = None, ping_interval_s: float = 5.0, ping_text: str = "PING",
                 stall_s: float = 15.0, extra_topics: str = "", max_frame_bytes: int = 1_048_576,
                 backoff: Backoff = RECONNECT_BACKOFF, rng: random.Random | None = None) -> None:
        self.handler = handler
        self.on_gap = on_gap
        self.on_connected = on_connected
        self.metrics = metrics
        self.stall_s = stall_s
        self._conn: WsConnection | None = None
        self._watch_from_ns = 0  # the trades watch counts silence from here at the earliest
        self._renewed_ns: int | None = None  # when a silent trades subscription was renewed (a reconnect)
        self.subscribe = orjson.dumps(rtds.subscribe_message(extra_topics)).decode()
        self.feed = FeedSession(
            url, feed=FEED, log=log, handle=handler.handle, on_open=self._opened, on_down=self._down,
            metrics=metrics, stall_log="rtds stalled; reconnecting", recorder=recorder, ping_text=ping_text,
            ping_interval_s=ping_interval_s, stall_s=stall_s, max_size=max_frame_bytes * 16,
            session_tasks=lambda: [self._topic_watch()],
            user_agent="tradingtools-ingest/2.0", backoff=backoff, rng=rng or random.Random())

    @property
    def connected(self) -> bool:
        """True while a session is open."""
        return self.feed.connected

    @property
    def connections(self) -> int:
        """Sessions opened so far."""
        return self.feed.connections

    async def run(self) -> None:
        """Connect, read, and reconnect forever (until cancelled)."""
        await self.feed.run()

    async def _opened(self, conn: WsConnection) -> None:
        """Subscribe, then report the feed up."""
        conn.send_text(self.subscribe)
        self._conn = conn
        self._watch_from_ns = time.time_ns()  # a whole stall_s for trades on the new session
        self.on_connected()

    async def _topic_watch(self) -> None:
        """Watches ``trades`` while the socket is up (other data may flow: the socket's watchdog is then quiet)."""
        step = min(1.0, self.stall_s / 5)
        while True:
            await asyncio.sleep(step)
            if self._conn is None:
                continue
            seen = self.handler.last_seen_ns.get(RTDS_TRADES)
            # neither leader-trade type ever delivered (both off since before ingest started): a renewal is no
            # cure (no reconnect loop), but the silence is polled for like one that outlasted a renewal
            never = seen is None and RTDS_ORDERS_MATCHED not in self.handler.last_seen_ns
            if seen is None:
                seen = 0  # orders_matched delivers (its takers are in trades too) and trades never did: off
            now = time.time_ns()
            if self._renewed_ns is not None and seen > self._renewed_ns:
                self._renewed_ns = None  # it came back
            if now - max(seen, self._watch_from_ns) <= self.stall_s * 1e9:
                continue
            if now - self.feed.last_data_ns > self.stall_s * 1e9:
                continue  # nothing at all comes: the socket is silent as a whole, its watchdog's to renew
            if self._renewed_ns is None and not never:
                self.metrics.stall(FEED)  # a stall: the socket is renewed (not the silences polled for after it)
                self._renewed_ns = now
                log.warning("rtds trades silent while the socket is up; reconnecting", extra={"silent_s": self.stall_s})
                feed_stalled(f"{FEED}:trades", self.stall_s, seen / 1e9)
                self._conn.abort()
                return
            # renewed and still silent: the venue stopped it; the poller stands in, without reconnects (gaps)
            log.warning("rtds trades still silent after a renewal; polling", extra={"silent_s": self.stall_s})
            self._watch_from_ns = now
            self.on_gap(seen / 1e9)

    def _down(self) -> None:
        """Every disconnect reports a gap since the last data, so the poller backfills at once."""
        self.on_gap(self.feed.last_data_ns / 1e9)
