"""data-api safety net: polls every followed leader's activity (maker fills included) into the same dedupe.

Per leader, the end of the last successful window is kept in ``tt:ingest:poll_until`` (HASH leader →
seconds); the next window starts ``reach_s`` earlier: data-api indexes trades late (5–10 s, for some leaders
minutes), and a trade is worth finding as long as the router still copies it (``reach_s`` is its age limit and a
margin, so every window holds every trade still young enough).
A leader without a saved window starts at its subscriptions' creation time. Requests coalesce per
leader; urgent ones (RTDS gap, RTDS back after a gap, their follow-up, new leader) jump the regular round.
All requests share one token bucket, and a 429 pauses it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from common.cancel import reraise_if_cancelling
from common.restget import RateLimited
from services.ingest import dataapi
from services.ingest.identity import Identified, identify_batch
from services.ingest.metrics import IngestMetrics
from services.ingest.model import BAD_SHAPE, DATA_API, DEFAULT_MAX_SKEW_MS, Fill, ParseError, TradeRefused
from services.ingest.restclient import DataApi
from services.ingest.sink import TradeSink
from services.ingest.targets import FollowedLeaders, follow_since_s

log = logging.getLogger(__name__)
CURSOR_KEY = "tt:ingest:poll_until"
FEED = "data_api"
URGENT, NORMAL = 0, 1


class ActivityStore(Protocol):
    """Where non-trade activity rows are recorded."""

    async def record(self, items: list[Identified]) -> None:
        """Record rows (idempotent on id)."""


def parse_rows(rows: list[Any], received_ns: int, metrics: IngestMetrics,
               max_skew_ms: int = DEFAULT_MAX_SKEW_MS) -> list[Fill]:
    """Rows that parse, in response order; every bad row is counted (a refused trade also logged)."""
    out = []
    for row in rows:
        try:
            if not isinstance(row, dict):
                raise ParseError(BAD_SHAPE, "row must be an object")
            out.append(dataapi.parse_row(row, received_ns, DATA_API, max_skew_ms))
        except TradeRefused as exc:
            metrics.parse_error(FEED, exc.kind)
            log.warning("leader trade refused", extra={"feed": FEED, "reason": exc.kind, "detail": exc.detail,
                                                       "raw": str(row)[:300]})
        except ParseError as exc:
            metrics.parse_error(FEED, exc.kind)
    return out


class Poller:
    """Schedules and runs per-leader data-api polls."""

    def __init__(self, api: DataApi, sink: TradeSink, followed: FollowedLeaders, redis: Any,
                 metrics: IngestMetrics, *, activity: ActivityStore | None = None, interval_s: float = 60.0,
                 reach_s: float = 330.0, max_lookback_s: float = 86_400.0, gap_followup_s: float = 15.0,
                 concurrency: int = 4, retry_s: float = 5.0, clock: Callable[[], float] = time.time,
                 max_clock_skew_s: float = DEFAULT_MAX_SKEW_MS / 1000) -> None:
        self.api = api
        self.sink = sink
        self.followed = followed
        self.redis = redis
        self.metrics = metrics
        self.activity = activity
        self.interval_s = interval_s
        self.reach_s = reach_s
        self.max_lookback_s = max_lookback_s
        self.gap_followup_s = gap_followup_s
        self.concurrency = concurrency
        self.retry_s = retry_s
        self.clock = clock
        self.max_skew_ms = int(max_clock_skew_s * 1000)
        self._pending: dict[str, tuple[int, float | None]] = {}
        self._floors: dict[str, float] = {}  # leader -> earliest time to poll it from (since it was followed)
        self._new: set[str] = set()  # leaders followed since their last poll by a worker: to poll once more
        self._queue: asyncio.PriorityQueue[tuple[int, int, str]] = asyncio.PriorityQueue()
        self._seq = itertools.count()
        self._timers: set[asyncio.TimerHandle] = set()
        self._followup: asyncio.TimerHandle | None = None
        self._gap_open = True  # a gap was reported (or ingest started) and the websocket has not been up since
        self.polls = 0
        self.rounds = 0

    def request(self, leader: str, since_s: float | None = None, priority: int = NORMAL) -> None:
        """Poll ``leader`` soon (from ``since_s`` if given, else from its saved window)."""
        old = self._pending.get(leader)
        if old is not None:
            old_priority, old_since = old
            since = old_since if since_s is None else since_s if old_since is None else min(old_since, since_s)
            self._pending[leader] = (min(old_priority, priority), since)
            if priority >= old_priority:
                return
        else:
            self._pending[leader] = (priority, since_s)
        self._queue.put_nowait((priority, next(self._seq), leader))

    def request_all(self, priority: int = NORMAL) -> None:
        """Poll every followed leader."""
        for leader in list(self.followed.leaders):
            self.request(leader, None, priority)

    def on_gap(self, _since_wall_s: float) -> None:
        """The websocket had a gap: poll everyone now, again when it is back (:meth:`on_feed_up`), and once more
        after ``gap_followup_s`` (when data-api has caught up) if it is still down then."""
        self._gap_open = True
        self.request_all(URGENT)
        if self._followup is None:
            self._schedule_followup()

    def on_feed_up(self) -> None:
        """The websocket is connected again (its subscription sent): after a gap (or ingest's start), poll everyone
        at once and again ``gap_followup_s`` later. A trade made in the last seconds before the socket came back is
        indexed by data-api 5-10 s late: only a poll that late finds it before the regular round (minutes with
        many leaders, past the router's age limit). Saved windows start ``reach_s`` before the previous poll's
        end, so together they cover the gap."""
        if self._gap_open:
            self._gap_open = False
            self.request_all(URGENT)
            self._schedule_followup()

    def _schedule_followup(self) -> None:
        """One urgent round ``gap_followup_s`` from now, replacing a pending one (one follow-up per gap)."""
        if self._followup is not None:
            self._followup.cancel()
        self._followup = self._keep(asyncio.get_running_loop().call_later(self.gap_followup_s, self._followup_round))

    def _keep(self, timer: asyncio.TimerHandle) -> asyncio.TimerHandle:
        """Track a timer (cancelled when the poller stops), forgetting the ones that are done."""
        self._timers.add(timer)
        if len(self._timers) > 64:
            now = asyncio.get_running_loop().time()
            self._timers = {t for t in self._timers if not t.cancelled() and t.when() > now}
        return timer

    def _followup_round(self) -> None:
        self._followup = None
        self.request_all(URGENT)

    def on_new_leader(self, leader: str, since_s: float) -> None:
        """A leader became followed: backfill from ``since_s`` (:func:`~services.ingest.targets.follow_since_s`)
        at once and again ``gap_followup_s`` after that poll, and never poll it from earlier (its saved window may
        date from before a pause). RTDS filtered its trades until now and data-api indexes the last seconds' late:
        as after a gap, only the later poll finds those before the regular round."""
        self._floors[leader] = since_s
        self._new.add(leader)
        self.request(leader, since_s, URGENT)

    async def poll_leader(self, leader: str, since_s: float | None = None) -> int:
        """One complete window for ``leader``; returns how many trades were new (backfilled)."""
        now = self.clock()
        if since_s is None:
            saved = await self.redis.hget(CURSOR_KEY, leader)
            if saved is not None:
                since_s = float(saved) - self.reach_s
            else:
                since_s = await follow_since_s(self.redis, leader, now, self.max_lookback_s)
        floor = self._floors.get(leader)
        if floor is not None and since_s < floor:
            since_s = floor
        start = int(max(since_s, now - self.max_lookback_s))
        end = int(now) + 1
        rows, received_ns = await self.api.window(leader, start, end)
        fills = parse_rows(rows, received_ns, self.metrics, self.max_skew_ms)
        mine = [f for f in fills if f.wallet == leader]
        if len(mine) != len(fills):
            self.metrics.filtered(DATA_API, len(fills) - len(mine))
        trades = [f for f in mine if f.is_trade]
        for f in trades:
            self.metrics.lag(DATA_API, received_ns / 1e6 - f.venue_time_ms)
        cursors = await self.sink.submit(identify_batch(trades, now))
        new = sum(1 for c in cursors if c is not None)
        if new:
            self.metrics.backfilled(new)
            log.info("poller backfilled trades", extra={"leader": leader, "count": new})
        others = [f for f in mine if not f.is_trade]
        if others and self.activity is not None:
            await self.activity.record(identify_batch(others, now))
            for f in others:
                self.metrics.activity(f.activity_type)
        await self.redis.hset(CURSOR_KEY, leader, str(end))
        self.polls += 1
        return new

    async def run(self) -> None:
        """Regular rounds plus the workers, until cancelled."""
        workers = [asyncio.create_task(self._worker()) for _ in range(self.concurrency)]
        try:
            await self.followed.loaded.wait()
            while True:
                self.request_all(NORMAL)
                self.rounds += 1
                if self.rounds == 1 and self._followup is None:  # start-up is a gap: a follow-up, as after one
                    self._schedule_followup()
                await asyncio.sleep(self.interval_s)
        finally:
            for task in workers:
                task.cancel()
            for timer in self._timers:
                timer.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _worker(self) -> None:
        while True:
            _, _, leader = await self._queue.get()
            entry = self._pending.pop(leader, None)
            if entry is None or leader not in self.followed:
                continue
            priority, since = entry
            await self.poll_once(leader, since, priority)
            if leader in self._new:
                self._new.discard(leader)
                self._keep(asyncio.get_running_loop().call_later(self.gap_followup_s, self.request, leader, since,
                                                                 URGENT))

    async def poll_once(self, leader: str, since_s: float | None = None, priority: int = NORMAL) -> int | None:
        """:meth:`poll_leader`, never raising: a failure is logged (a bad page counted in ``parse_errors``) and
        the poll asked for again (at once after a 429's pause, else after ``retry_s``); None then."""
        try:
            return await self.poll_leader(leader, since_s)
        except asyncio.CancelledError:
            raise
        except RateLimited as exc:
            log.warning("data-api rate limited", extra={"retry_after_s": exc.retry_after_s})
            self.request(leader, since_s, priority)
        except Exception as exc:  # noqa: BLE001 - one leader's failure must not stop the others
            reraise_if_cancelling()
            if isinstance(exc, ParseError):  # a page that is not JSON or not a page: counted like a bad frame
                self.metrics.parse_error(FEED, exc.kind)
            log.warning("poll failed", extra={"leader": leader, "error": repr(exc)[:300]})
            self._keep(asyncio.get_running_loop().call_later(self.retry_s, self.request, leader, since_s, priority))
        return None
