"""A websocket feed kept open: the one connect / ping / stall watchdog / reconnect loop of the venue feeds.

Each connection is a session: ``on_open`` subscribes on it, an application-level ping goes out every
``ping_interval_s``, and a watchdog hard-closes the socket when nothing that counts as alive arrived for
``stall_s`` (data; with ``keepalive_counts`` also the venue's answers to the ping): a venue can go silent
with the socket open. After every session or failed connect, ``on_down`` runs and the feed reconnects with
jittered exponential backoff, started over after a session that worked (it brought data, or stayed up
until the watchdog closed it).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Protocol

from common.alerts import AlertKind, raise_alert
from common.cancel import reraise_if_cancelling
from common.retry import Backoff
from common.wsconn import WsConnection

RECONNECT_BACKOFF = Backoff(0.25, 30.0)
TOO_LARGE = "TOO_LARGE"  # parse-error kind of a frame beyond the size limit (close code 1009)


class FeedMetrics(Protocol):
    """The counters a feed session keeps."""

    def stall(self, feed: str) -> None:
        """The watchdog closed a silent socket."""

    def reconnect(self, feed: str) -> None:
        """The feed is reconnecting."""

    def parse_error(self, feed: str, kind: str) -> None:
        """A frame was refused."""


class FrameRecorder(Protocol):
    """Where raw frames go when recording is on."""

    def write(self, feed: str, raw: str | bytes, recv_ns: int, meta: dict[str, Any] | None = None) -> None:
        """Record one raw frame."""


def lasted(opened_at: float | None, at_least_s: float) -> bool:
    """True when a connection opened at ``opened_at`` (monotonic; None: it never opened) stayed up at least
    ``at_least_s``: it worked, so the next reconnect starts the backoff over. A feed that is merely quiet is
    closed by the stall watchdog after exactly that long; growing the backoff there left the socket
    closed for up to the backoff's cap (30 s) at a time, and the trades of those windows were missed."""
    return opened_at is not None and time.monotonic() - opened_at >= at_least_s


def feed_stalled(feed: str, stall_s: float, last_data_wall_s: float) -> None:
    """The FEED_STALLED alert: ``feed`` sent nothing for ``stall_s`` with its socket open (the watchdog
    reconnects it; the poller backfills the leader feed's gap)."""
    now_ms = time.time_ns() // 1_000_000
    last = (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(last_data_wall_s)) if last_data_wall_s > 0
            else "none since start")
    raise_alert(AlertKind.FEED_STALLED, f"feed_stalled:{feed}",
                f"{feed} feed silent for {stall_s:g}s with its socket open; reconnecting",
                dedupe_id=f"feed_stalled:{feed}:{now_ms}", feed=feed, stall_s=f"{stall_s:g}", last_message=last)


def _nothing() -> None:
    return None


@dataclass(eq=False)
class FeedSession:
    """Runs one feed's sessions until cancelled; ``handle(raw, recv_ns)`` gets every message from inside the
    socket's read callback and returns True when it was data (not a keep-alive)."""

    url: str
    _: KW_ONLY
    feed: str
    log: logging.Logger
    handle: Callable[[str | bytes, int], bool]
    on_open: Callable[[WsConnection], Awaitable[None]]
    metrics: FeedMetrics
    stall_log: str
    on_down: Callable[[], None] = _nothing
    ready: Callable[[], Awaitable[object]] | None = None
    session_tasks: Callable[[], list[Coroutine[Any, Any, None]]] | None = None
    recorder: FrameRecorder | None = None
    ping_text: str = "PING"
    ping_interval_s: float = 10.0
    stall_s: float = 30.0
    keepalive_counts: bool = False
    max_size: int = 16 << 20
    user_agent: str = ""
    open_timeout_s: float = 10.0
    backoff: Backoff = RECONNECT_BACKOFF
    rng: random.Random = field(default_factory=random.Random)
    connected: bool = field(default=False, init=False)
    connections: int = field(default=0, init=False)
    worked: bool = field(default=False, init=False)  # the current session brought data
    # when the current session last showed it is alive (monotonic)
    last_alive: float = field(default_factory=time.monotonic, init=False)
    last_data_ns: int = field(default_factory=time.time_ns, init=False)  # the last data message (any session)
    last_message_ns: int = field(default=0, init=False)  # the last message of any kind, or the handshake

    async def run(self) -> None:
        """Connect, read, and reconnect forever (until cancelled)."""
        attempt = 0
        while True:
            if self.ready is not None:
                await self.ready()
            self.worked = False
            opened_at: float | None = None
            try:
                conn = await WsConnection.connect(self.url, self._on_message, max_size=self.max_size,
                                                  open_timeout_s=self.open_timeout_s, user_agent=self.user_agent)
                try:
                    await self.on_open(conn)
                    self.connected = True
                    self.connections += 1
                    self.last_alive = opened_at = time.monotonic()
                    self.last_message_ns = time.time_ns()  # the handshake: the venue answered now
                    await self._session(conn)
                finally:
                    self.connected = False
                    await conn.close()
                if conn.close_code_sent == 1009:  # a frame beyond max_size
                    self.metrics.parse_error(self.feed, TOO_LARGE)
                self.log.warning(f"{self.feed} closed", extra={"error": repr(conn.close_error)[:200]})
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any connect/read failure means reconnect
                reraise_if_cancelling()
                self.log.warning(f"{self.feed} connection failed", extra={"error": repr(exc)[:300]})
            self.on_down()
            if self.worked or lasted(opened_at, self.stall_s):
                attempt = 0
            self.metrics.reconnect(self.feed)
            delay = self.backoff.delay(min(attempt, 20), self.rng.random())
            attempt += 1
            await asyncio.sleep(delay)

    def _on_message(self, raw: str | bytes, recv_ns: int) -> None:
        """Every message, from inside the socket's read callback."""
        self.last_message_ns = recv_ns
        if self.keepalive_counts:
            self.last_alive = time.monotonic()
        if self.recorder is not None:
            self.recorder.write(self.feed, raw, recv_ns)
        if self.handle(raw, recv_ns):
            self.last_alive = time.monotonic()
            self.last_data_ns = recv_ns
            self.worked = True

    async def _session(self, conn: WsConnection) -> None:
        """Until the socket closes or stalls."""
        coros = [self._pinger(conn), self._watchdog(conn), *(self.session_tasks() if self.session_tasks else ())]
        tasks = [asyncio.create_task(c) for c in coros]
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
            if time.monotonic() - self.last_alive > self.stall_s:
                self.metrics.stall(self.feed)
                self.log.warning(self.stall_log, extra={"silent_s": self.stall_s})
                feed_stalled(self.feed, self.stall_s, self.last_data_ns / 1e9)
                conn.abort()
                return
