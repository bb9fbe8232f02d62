"""CLOB market-channel book feed: frame handling and the websocket client with dynamic subscriptions.

Assets are added and removed with ``{"operation": "subscribe"|"unsubscribe"}`` frames on the open
socket. ``PING`` goes out every ``ping_interval_s``; the server's ``PONG`` counts as liveness here
(book traffic can be quiet), and a socket silent for ``stall_s`` is hard-closed and reconnected.

Each connection is a session of its own (books synced on it are stored with its id); while it is open a
beat (:class:`~common.marketstate.FeedBeat`: the session and when the venue last sent anything) goes out
every ``beat_interval_s``, so readers know the stored books of that session are still followed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections.abc import Callable

import orjson

from common.cancel import reraise_if_cancelling
from common.marketstate import FeedBeat
from common.retry import Backoff
from services.ingest import clob
from services.ingest.books import BookState, Touched
from services.ingest.frames import decode, require_object
from services.ingest.metrics import IngestMetrics
from services.ingest.model import ParseError
from services.ingest.recorder import Recorder
from services.ingest.wsconn import WsConnection, feed_stalled, lasted

log = logging.getLogger(__name__)
FEED = "clob"
RECONNECT_BACKOFF = Backoff(0.25, 30.0)


class ClobHandler:
    """Applies market-channel frames to the books; never raises on bad input."""

    def __init__(self, books: BookState, on_touched: Callable[[Touched, int], None], metrics: IngestMetrics,
                 *, max_frame_bytes: int = 1_048_576, on_desync: Callable[[str], None] | None = None,
                 on_resolved: Callable[[clob.ResolvedMsg, int], None] | None = None) -> None:
        self.books = books
        self.on_touched = on_touched
        self.metrics = metrics
        self.max_frame_bytes = max_frame_bytes
        self.on_desync = on_desync  # a book found out of sync (stale meanwhile): resync it from REST
        self.on_resolved = on_resolved  # a market_resolved (after its ticks): the resolution component decides

    def handle(self, raw: str | bytes, recv_ns: int) -> bool:
        """Process one frame; True when it was data (not PONG / empty)."""
        self.metrics.frame(FEED)
        try:
            messages = decode(raw, self.max_frame_bytes)
        except ParseError as exc:
            self.metrics.parse_error(FEED, exc.kind)
            return True
        if messages is None:
            return False
        now_ms = recv_ns // 1_000_000
        for item in messages:
            try:
                msg = clob.parse_event(require_object(item))
                for touched in self.books.apply(msg, now_ms):
                    self.on_touched(touched, recv_ns)
                if isinstance(msg, clob.ResolvedMsg) and self.on_resolved is not None:
                    self.on_resolved(msg, recv_ns)
            except ParseError as exc:
                self.metrics.parse_error(FEED, exc.kind)
                self._lost_changes(item, recv_ns)
            except Exception:  # a parser bug must not kill the feed
                self.metrics.parse_error(FEED, "INTERNAL")
                log.exception("clob message handling failed")
                self._lost_changes(item, recv_ns)
        if self.books.desynced:
            for asset_id in self.books.take_desynced():
                if self.on_desync is not None:
                    self.on_desync(asset_id)
        return True

    def feed_lost(self, recv_ns: int) -> None:
        """The socket closed: every book is stale until its next snapshot."""
        for touched in self.books.feed_lost():
            self.on_touched(touched, recv_ns)

    def _lost_changes(self, item: object, recv_ns: int) -> None:
        """Level changes that could not be applied leave their market's books out of sync: stale until resynced
        (the message's valid changes for other assets were lost with it)."""
        if isinstance(item, dict) and item.get("event_type") == "price_change":
            market = item.get("market")
            if isinstance(market, str):
                for touched in self.books.desync_market(market.lower()):
                    self.on_touched(touched, recv_ns)


class ClobFeed:
    """The market-channel websocket client; :meth:`set_assets` changes subscriptions live.

    Frames are handled inside the socket's read callback (:class:`~services.ingest.wsconn.WsConnection`):
    no per-message queue and task switch, which cost more than parsing a ``price_change`` frame.
    """

    def __init__(self, url: str, handler: ClobHandler, metrics: IngestMetrics, *,
                 recorder: Recorder | None = None, ping_interval_s: float = 10.0, stall_s: float = 30.0,
                 max_frame_bytes: int = 1_048_576, backoff: Backoff = RECONNECT_BACKOFF,
                 rng: random.Random | None = None, on_beat: Callable[[FeedBeat], None] = lambda _b: None,
                 beat_interval_s: float = 1.0) -> None:
        self.url = url
        self.handler = handler
        self.metrics = metrics
        self.recorder = recorder
        self.ping_interval_s = ping_interval_s
        self.stall_s = stall_s
        self.max_frame_bytes = max_frame_bytes
        self.backoff = backoff
        self.rng = rng or random.Random()
        self.wanted: set[str] = set()
        self.subscribed: set[str] = set()
        self.connections = 0
        self._ws: WsConnection | None = None
        self._lock = asyncio.Lock()
        self._has_assets = asyncio.Event()
        self._last_rx = time.monotonic()
        self._last_rx_ns = 0  # wall time of the last message, what the beat reports
        self._got_data = False
        self.on_beat = on_beat
        self.beat_interval_s = beat_interval_s
        self._process = secrets.token_hex(4)  # sessions of another process (before a restart) never match
        self.session = ""
        self._sessions = 0

    async def set_assets(self, assets: set[str]) -> None:
        """Follow exactly ``assets``: subscribe the new ones and unsubscribe the dropped ones in place."""
        async with self._lock:
            self.wanted = set(assets)
            books = self.handler.books
            # only the difference, in C-level set operations: a watch set of thousands of assets changes by a
            # few at a time, and a loop over all of them held the feed's loop for milliseconds on every change
            for asset_id in self.wanted.difference(books.books):
                books.track(asset_id)
            for asset_id in books.books.keys() - self.wanted:
                books.forget(asset_id)
            if self.wanted:
                self._has_assets.set()
            ws = self._ws
            if ws is None:
                return
            added = sorted(self.wanted - self.subscribed)
            removed = sorted(self.subscribed - self.wanted)
            if added:  # ignored by a closed socket: the reconnect subscribes to everything wanted
                ws.send_text(orjson.dumps({"assets_ids": added, "operation": "subscribe",
                                           "custom_feature_enabled": True}).decode())
            if removed:
                ws.send_text(orjson.dumps({"assets_ids": removed, "operation": "unsubscribe"}).decode())
            self.subscribed = set(self.wanted)

    async def run(self) -> None:
        """Connect (once there is something to follow), read, reconnect forever."""
        attempt = 0
        while True:
            await self._has_assets.wait()
            self._got_data = False
            opened_at: float | None = None
            try:
                conn = await WsConnection.connect(self.url, self._on_message, max_size=self.max_frame_bytes * 16,
                                                  open_timeout_s=10.0)
                try:
                    async with self._lock:
                        self._sessions += 1
                        self.session = f"{self._process}.{self._sessions}"
                        self.handler.books.session = self.session
                        self.handler.books.desync_all()
                        self.subscribed = set(self.wanted)
                        conn.send_text(orjson.dumps({"assets_ids": sorted(self.subscribed), "type": "market",
                                                     "custom_feature_enabled": True}).decode())
                        self._ws = conn
                    self.connections += 1
                    opened_at = time.monotonic()
                    await self._session(conn)
                finally:
                    self._ws = None
                    await conn.close()
                if conn.close_code_sent == 1009:  # a frame beyond max_size
                    self.metrics.parse_error(FEED, "TOO_LARGE")
                log.warning("clob closed", extra={"error": repr(conn.close_error)[:200]})
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any connect/read failure means reconnect
                reraise_if_cancelling()
                log.warning("clob connection failed", extra={"error": repr(exc)[:300]})
            self.handler.feed_lost(time.time_ns())
            if self._got_data or lasted(opened_at, self.stall_s):
                attempt = 0
            self.metrics.reconnect(FEED)
            delay = self.backoff.delay(min(attempt, 20), self.rng.random())
            attempt += 1
            await asyncio.sleep(delay)

    @property
    def last_message_wall_s(self) -> float:
        """When the last message (or the handshake) arrived, Unix seconds (0 before the first connection)."""
        return self._last_rx_ns / 1e9

    def _on_message(self, raw: str | bytes, recv_ns: int) -> None:
        """Every message, from inside the socket's read callback."""
        self._last_rx = time.monotonic()
        self._last_rx_ns = recv_ns
        if self.recorder is not None:
            self.recorder.write(FEED, raw, recv_ns)
        if self.handler.handle(raw, recv_ns):
            self._got_data = True

    async def _session(self, conn: WsConnection) -> None:
        self._last_rx = time.monotonic()
        self._last_rx_ns = time.time_ns()  # the handshake: the venue answered now
        tasks = [asyncio.create_task(self._pinger(conn)), asyncio.create_task(self._watchdog(conn)),
                 asyncio.create_task(self._beater(self.session))]
        try:
            await conn.wait_closed()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _pinger(self, conn: WsConnection) -> None:
        while True:
            await asyncio.sleep(self.ping_interval_s)
            conn.send_text("PING")

    async def _beater(self, session: str) -> None:
        while True:
            self.on_beat(FeedBeat(session, self._last_rx_ns // 1_000_000))
            await asyncio.sleep(self.beat_interval_s)

    async def _watchdog(self, conn: WsConnection) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.stall_s / 5))
            if time.monotonic() - self._last_rx > self.stall_s:
                self.metrics.stall(FEED)
                log.warning("clob feed silent; reconnecting", extra={"silent_s": self.stall_s})
                feed_stalled(FEED, self.stall_s, self.last_message_wall_s)
                conn.abort()
                return
