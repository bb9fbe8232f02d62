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

from common.feedsession import RECONNECT_BACKOFF, FeedSession
from common.marketstate import FeedBeat
from common.retry import Backoff
from common.wsconn import WsConnection
from services.ingest import clob
from services.ingest.books import BookState, Touched
from services.ingest.frames import decode, require_object
from services.ingest.metrics import IngestMetrics
from services.ingest.model import ParseError
from services.ingest.recorder import Recorder

log = logging.getLogger(__name__)
FEED = "clob"
# Assets per subscribe message. The venue answers a subscription with the snapshots of all its assets in one
# frame: 500 assets of 50 levels a side were 1.9 MB, over the frame limit, and 1,000 deep books 18 MB, over the
# socket's, which then closed at every subscription. Subscribed in chunks, each answer stays small.
SUBSCRIBE_CHUNK = 50


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
        apply, on_touched, parse = self.books.apply, self.on_touched, clob.parse_event
        for item in messages:
            try:
                msg = parse(item if item.__class__ is dict else require_object(item))
                for touched in apply(msg, now_ms):
                    on_touched(touched, recv_ns)
                if type(msg) is clob.ResolvedMsg and self.on_resolved is not None:
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

    Frames are handled inside the socket's read callback (:class:`~common.wsconn.WsConnection`): no
    per-message queue and task switch, which cost more than parsing a ``price_change`` frame. The session
    (:class:`~common.feedsession.FeedSession`) counts the server's ``PONG`` as alive: book traffic can be quiet.
    """

    def __init__(self, url: str, handler: ClobHandler, metrics: IngestMetrics, *,
                 recorder: Recorder | None = None, ping_interval_s: float = 10.0, stall_s: float = 30.0,
                 max_frame_bytes: int = 1_048_576, backoff: Backoff = RECONNECT_BACKOFF,
                 rng: random.Random | None = None, on_beat: Callable[[FeedBeat], None] = lambda _b: None,
                 beat_interval_s: float = 1.0) -> None:
        self.handler = handler
        self.wanted: set[str] = set()
        self.subscribed: set[str] = set()
        self._ws: WsConnection | None = None
        self._lock = asyncio.Lock()
        self._has_assets = asyncio.Event()
        self.on_beat = on_beat
        self.beat_interval_s = beat_interval_s
        self._process = secrets.token_hex(4)  # sessions of another process (before a restart) never match
        self.session = ""
        self._sessions = 0
        self.feed = FeedSession(
            url, feed=FEED, log=log, handle=handler.handle, on_open=self._opened, on_down=self._down,
            ready=self._has_assets.wait, session_tasks=lambda: [self._beater(self.session)], metrics=metrics,
            stall_log="clob feed silent; reconnecting", recorder=recorder, ping_interval_s=ping_interval_s,
            stall_s=stall_s, keepalive_counts=True, max_size=max_frame_bytes * 16, backoff=backoff,
            rng=rng or random.Random())

    @property
    def connections(self) -> int:
        """Sessions opened so far."""
        return self.feed.connections

    async def set_assets(self, assets: set[str]) -> None:
        """Follow exactly ``assets``: subscribe the new ones and unsubscribe the dropped ones in place."""
        async with self._lock:
            self._change(assets - self.wanted, self.wanted - assets)

    async def change_assets(self, added: set[str], removed: set[str]) -> None:
        """Follow ``added`` too and ``removed`` no longer (an asset in both is dropped); costs what changes,
        however many assets are followed."""
        async with self._lock:
            self._change(added, removed)

    def _change(self, added: set[str], removed: set[str]) -> None:
        wanted, books = self.wanted, self.handler.books
        wanted.update(added)
        wanted.difference_update(removed)
        for asset_id in added:
            books.track(asset_id)
        for asset_id in removed:
            books.forget(asset_id)
        if wanted:
            self._has_assets.set()
        ws = self._ws
        if ws is None:
            return
        subscribe = sorted(added.difference(removed, self.subscribed))
        unsubscribe = sorted(self.subscribed.intersection(removed))
        _subscribe(ws, subscribe)  # ignored by a closed socket: the reconnect subscribes to everything wanted
        if unsubscribe:
            ws.send_text(orjson.dumps({"assets_ids": unsubscribe, "operation": "unsubscribe"}).decode())
        self.subscribed.update(subscribe)
        self.subscribed.difference_update(unsubscribe)

    async def run(self) -> None:
        """Connect (once there is something to follow), read, reconnect forever."""
        await self.feed.run()

    async def _opened(self, conn: WsConnection) -> None:
        """A new session: its own id, every book out of sync until its snapshot, everything wanted subscribed."""
        async with self._lock:
            self._sessions += 1
            self.session = f"{self._process}.{self._sessions}"
            self.handler.books.session = self.session
            self.handler.books.desync_all()
            self.subscribed = set(self.wanted)
            wanted = sorted(self.subscribed)
            conn.send_text(orjson.dumps({"assets_ids": wanted[:SUBSCRIBE_CHUNK], "type": "market",
                                         "custom_feature_enabled": True}).decode())
            _subscribe(conn, wanted[SUBSCRIBE_CHUNK:])
            self._ws = conn

    def _down(self) -> None:
        self._ws = None
        self.handler.feed_lost(time.time_ns())

    async def _beater(self, session: str) -> None:
        while True:
            self.on_beat(FeedBeat(session, self.feed.last_message_ns // 1_000_000))
            await asyncio.sleep(self.beat_interval_s)


def _subscribe(ws: WsConnection, asset_ids: list[str]) -> None:
    """Subscribe ``asset_ids`` on an open session, :data:`SUBSCRIBE_CHUNK` a message."""
    for i in range(0, len(asset_ids), SUBSCRIBE_CHUNK):
        ws.send_text(orjson.dumps({"assets_ids": asset_ids[i:i + SUBSCRIBE_CHUNK], "operation": "subscribe",
                                   "custom_feature_enabled": True}).decode())
