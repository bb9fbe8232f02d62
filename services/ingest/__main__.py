"""``python -m services.ingest`` runs the service; ``python -m services.ingest normalize FILE`` prints events.

This is the only module that builds real clients (Redis, PostgreSQL, aiohttp, websockets) and wires
the pieces together.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp

from common.alerts import AlertPublisher
from common.clob_rest import ClobRest
from common.config import ConfigError, StorageSettings
from common.consumer import RedisCursorStore
from common.grpcserver import dump_tasks, run
from common.livefeed import LiveFeed
from common.logs import setup_logging
from common.resp import RespConnection
from common.restget import RestGetter
from common.retry import Backoff
from common.storage import apply_migrations, closed_on_failure, create_pool, create_redis
from common.streams import LEADER_TRADES, MARKET_RESOLUTIONS, PRICE_TICKS, DurableLog, create_stream_redis
from common.telemetry import setup_telemetry
from services.ingest import server
from services.ingest.bandfeed import BandFeed, last_tick_stamp
from services.ingest.bookpub import BookPublisher
from services.ingest.books import BookState
from services.ingest.clob_feed import ClobFeed, ClobHandler
from services.ingest.config import IngestSettings
from services.ingest.identity import Identified
from services.ingest.marketchecks import MarketChecks
from services.ingest.marketsync import MarketSync
from services.ingest.metrics import IngestMetrics
from services.ingest.persist import PgActivityStore, TradeWriter
from services.ingest.poller import Poller
from services.ingest.ratelimit import TokenBucket
from services.ingest.recorder import Recorder
from services.ingest.resolutions import ResolutionRecorder, SocketResolutions
from services.ingest.restclient import DataApi
from services.ingest.rtds_feed import RtdsFeed, RtdsHandler
from services.ingest.servicer import IngestServicer
from services.ingest.sink import TradeSink
from services.ingest.targets import FollowedLeaders, HotIndexWatcher
from services.ingest.tickgate import TickGate
from services.ingest.watch import WatchSet

log = logging.getLogger("services.ingest")


class Ingest:
    """The wired service: every component, so tests and benchmarks can look inside."""

    def __init__(self, settings: IngestSettings, redis_url: str, database_url: str) -> None:
        s = settings
        t = s.tuning
        self.settings = s
        self.metrics = IngestMetrics()
        self.redis = create_stream_redis(redis_url)
        self.redis_text = create_redis(redis_url, timeout_s=10.0)
        self.database_url = database_url
        self.pool: Any = None
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=t.http_timeout_s),
                                          headers={"User-Agent": t.user_agent})
        self.recorder = Recorder(s.record_dir) if s.record_dir else None
        self.trades_log = DurableLog(self.redis, LEADER_TRADES, maxlen=t.stream_maxlen, live=LiveFeed())
        self.ticks_log = DurableLog(self.redis, PRICE_TICKS, maxlen=t.stream_maxlen)
        self.resolutions_log = DurableLog(self.redis, MARKET_RESOLUTIONS, maxlen=t.stream_maxlen)
        self.followed = FollowedLeaders()
        self.books = BookState()
        self.watch: WatchSet | None = None
        # the hot path's own pipelined connection: the websocket handler writes each trade's append at once
        self.sink = TradeSink(lambda: RespConnection.open(redis_url), self.trades_log, self.metrics,
                              dedupe_ttl_s=t.dedupe_ttl_s, maxlen=t.stream_maxlen, on_kept=self._kept)
        bucket = TokenBucket(t.poll_rate_per_s, t.poll_burst, time.monotonic())
        getter = RestGetter(self.http, bucket, feed="data_api", recorder=self.recorder, on_status=self.metrics.poll)
        self.poller = Poller(DataApi(getter, s.data_api_url, endpoint=t.poll_endpoint, page_limit=t.poll_page_limit,
                                     max_offset=t.poll_max_offset),
                             self.sink, self.followed, self.redis_text, self.metrics, interval_s=t.poll_interval_s,
                             reach_s=s.poll_reach_s, max_lookback_s=t.poll_max_lookback_s,
                             gap_followup_s=t.poll_gap_followup_s, concurrency=t.poll_concurrency,
                             max_clock_skew_s=t.max_clock_skew_s)
        self.index = HotIndexWatcher(self.redis_text, self.followed, on_new_leader=self.poller.on_new_leader,
                                     check_interval_s=t.index_check_s, lookback_s=s.poll_reach_s)
        mfb = t.max_frame_bytes
        self.rtds = RtdsFeed(
            s.rtds_url, RtdsHandler(self.followed.__contains__, self.sink.put, self.metrics,
                                    occurrence_ttl_s=t.occurrence_ttl_s, max_frame_bytes=mfb,
                                    max_clock_skew_s=t.max_clock_skew_s),
            self.metrics, on_gap=self.poller.on_gap if t.poll_enabled else (lambda _t: None),
            on_connected=self.poller.on_feed_up if t.poll_enabled else (lambda: None),
            recorder=self.recorder, ping_interval_s=t.rtds_ping_interval_s, ping_text=t.rtds_ping_text,
            stall_s=t.rtds_stall_s, extra_topics=t.rtds_extra_topics, max_frame_bytes=mfb,
            backoff=_backoff(s))
        self.gate = TickGate(heartbeat_s=t.tick_heartbeat_s, enabled=t.tick_filter)
        self.publisher = BookPublisher(lambda: RespConnection.open(redis_url), self.books, self.metrics,
                                       depth=t.book_depth_levels, maxlen=t.stream_maxlen, gate=self.gate)
        self.bands = BandFeed(self.redis_text, self.gate, self.publisher.check)
        clob_bucket = TokenBucket(t.clob_rest_rate_per_s, max(1, math.ceil(t.clob_rest_rate_per_s)), time.monotonic())
        clob_getter = RestGetter(self.http, clob_bucket, feed="clob_rest", recorder=self.recorder)
        self.market_sync = MarketSync(ClobRest(clob_getter, s.clob_api_url), self.books, self.publisher,
                                      self.redis_text, self.metrics, stale_s=t.book_stale_s,
                                      snapshot_grace_s=t.book_snapshot_grace_s, concurrency=t.clob_rest_concurrency)
        self.publisher.on_market = self.market_sync.want_market
        # resolutions: PostgreSQL comes in start(); the recorder and the checks get the pool there
        self.resolutions = ResolutionRecorder(None, self.resolutions_log, self.ticks_log, self.redis_text,
                                              self.metrics)
        check_getter = RestGetter(self.http, TokenBucket(t.market_check_rate_per_s, 1, time.monotonic()),
                                  feed="clob_rest", recorder=self.recorder)
        self.market_checks = MarketChecks(None, ClobRest(check_getter, s.clob_api_url), self.resolutions,
                                          self.redis_text, self.metrics, interval_s=t.market_check_interval_s,
                                          unclear_alert_s=t.resolution_unclear_alert_s)
        self.socket_resolutions = SocketResolutions(self.resolutions, self.market_checks.ask, self.books.books,
                                                    self.redis_text, self.metrics)
        # a book frame may be as large as the socket takes (16 x): a subscription's snapshots come in one
        clob_handler = ClobHandler(self.books, self.publisher.mark, self.metrics, max_frame_bytes=mfb * 16,
                                   on_desync=self.market_sync.resync,
                                   on_resolved=self.socket_resolutions.on_resolved)
        self.clob = ClobFeed(s.clob_ws_url, clob_handler, self.metrics, recorder=self.recorder,
                             ping_interval_s=t.clob_ping_interval_s, stall_s=t.clob_stall_s,
                             backoff=_backoff(s), max_frame_bytes=mfb, on_beat=self.publisher.beat,
                             beat_interval_s=t.book_beat_interval_s)
        if t.clob_enabled:
            self.watch = WatchSet(self.redis_text, self._follow, recent_ttl_s=t.recent_asset_ttl_s,
                                  refresh_s=t.watch_refresh_s, metrics=self.metrics)
            self.market_sync.held = self._held
        self.metrics.observe_feeds({"rtds": lambda: self.rtds.feed.last_data_ns / 1e9 if self.rtds.connections else 0.0,
                                    "clob": lambda: self.clob.feed.last_message_ns / 1e9})
        self.metrics.observe_books(lambda: list(self.books.books.values()))
        self.writer: TradeWriter | None = None
        self.grpc: Any = None
        self.tasks: list[asyncio.Task[None]] = []

    async def _follow(self, added: set[str], removed: set[str]) -> None:
        """The watched set changed: the book feed follows it, the gate forgets what left it."""
        await self.clob.change_assets(added, removed)
        self.publisher.forget(removed)  # an asset in both is dropped too (change_assets)
        self.gate.forget(removed)

    def _held(self, asset_id: str) -> bool:
        """An asset with an open position or an armed trigger (the watch sets executor and guard keep)."""
        return self.watch is not None and any(asset_id in assets for assets in self.watch.sources.values())

    def _kept(self, item: Identified) -> None:
        if self.watch is not None:
            self.watch.note_trade_asset(item.fill.asset_id)
            self.market_sync.want_market(item.fill.asset_id, item.fill.condition_id)

    async def start(self) -> int:
        """Start every loop and the gRPC server; returns the bound gRPC port."""
        self.pool = await create_pool(self.database_url, min_size=1, max_size=4, application_name="tt-ingest")
        async with closed_on_failure(self.pool):  # a start that fails leaves no pool task behind
            return await self._start_loops()

    async def _start_loops(self) -> int:
        s = self.settings
        t = s.tuning
        self.writer = TradeWriter(self.trades_log, self.pool, RedisCursorStore(self.redis_text),
                                  batch=t.persist_batch)
        self.poller.activity = PgActivityStore(self.pool)
        self.resolutions.pool = self.market_checks.pool = self.pool
        await self.trades_log.prime()
        self._spawn(AlertPublisher(self.redis, "ingest").run(), self.index.run(), self.sink.run(), self.writer.run(),
                    self.resolutions.run(), self.market_checks.run(), self.socket_resolutions.run(),
                    t.trimmer(self.redis, [LEADER_TRADES, MARKET_RESOLUTIONS]).run())
        await asyncio.wait_for(self.followed.loaded.wait(), timeout=30)
        self._spawn(self.rtds.run())
        if t.poll_enabled:
            self._spawn(self.poller.run())
        if self.watch is not None:
            # ticks of this process are stamped after the last one logged, and bands are trusted once guard read it
            self.gate.floor_ns = self.gate.trust_after_ns = await last_tick_stamp(self.redis)
            if t.tick_filter:
                self._spawn(self.bands.run())
            self._spawn(self.watch.run(), self.clob.run(), self.publisher.run(), self.market_sync.run(),
                        self.market_sync.run_stale_checker())
        if self.recorder is not None:
            self._spawn(self.recorder.run())
        self.grpc = await server.start(IngestServicer(self.trades_log, self.ticks_log, self.resolutions_log),
                                       s.grpc_port, s.grpc_host, s.security)
        log.info("ingest ready", extra={"grpc_port": self.grpc.port, "leaders": len(self.followed),
                                        "rtds": s.rtds_url, "clob": s.clob_ws_url, "data_api": s.data_api_url})
        return int(self.grpc.port)

    def _spawn(self, *coros: Coroutine[Any, Any, None]) -> None:
        for coro in coros:
            self.tasks.append(asyncio.create_task(coro))

    async def wait_failure(self) -> BaseException | None:
        """Returns when a loop died (its exception), which ends the service."""
        done, _ = await asyncio.wait(self.tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                return task.exception()
        return None

    async def stop(self, grace_s: float = 2.0) -> None:
        """Stop serving (open streams get ``grace_s``), cancel the loops, close clients."""
        if self.grpc is not None:
            await self.grpc.stop(grace_s)
        await cancel_all(self.tasks)
        if self.recorder is not None:
            self.recorder.close()
        await self.http.close()
        if self.pool is not None:
            await self.pool.close()
        await self.redis.aclose()
        await self.redis_text.aclose()


async def cancel_all(tasks: list[asyncio.Task[None]], *, attempts: int = 40) -> None:
    """Cancel tasks and wait for them, cancelling again while any is still running: redis-py can
    swallow a cancellation that lands during a read timeout and retry the command."""
    for _ in range(attempts):
        pending = [t for t in tasks if not t.done()]
        if not pending:
            return
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.25)
    log.error("tasks did not stop", extra={"pending": [t.get_name() for t in tasks if not t.done()]})


def _backoff(s: IngestSettings) -> Backoff:
    return Backoff(s.tuning.reconnect_base_s, s.tuning.reconnect_cap_s)


async def serve(settings: IngestSettings, storage: StorageSettings,
                on_ready: Callable[[Ingest], None] | None = None) -> int:
    """Run until SIGTERM/SIGINT (exit code 0) or until a loop dies (exit code 1)."""
    app = Ingest(settings, storage.redis_url.value, storage.database_url.value)
    await app.start()
    gc.collect()
    gc.freeze()  # start-up objects (10k leaders, modules) leave the collector's scans: shorter GC pauses
    # A middle-generation collection cost ~1.5 ms of CPU here and ran about once a second at 2,000 frames/s:
    # it was the p99 of frame → consumer (bench ingest: p99 4.5–5.2 ms with 700/10/10, 2.2–2.5 with
    # 700/1000/100). Young collections stay as frequent; older ones run every ~1,000 of them.
    gc.set_threshold(700, 1000, 100)
    if on_ready is not None:
        on_ready(app)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, dump_tasks)
    stopper = asyncio.ensure_future(stop.wait())
    failure = asyncio.ensure_future(app.wait_failure())
    await asyncio.wait({stopper, failure}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if failure.done() and failure.result() is not None:
        log.error("ingest loop died", extra={"error": repr(failure.result())})
        code = 1
    stopper.cancel()
    failure.cancel()
    await app.stop()
    return code


def main(argv: list[str]) -> int:
    """Command-line entry point."""
    if argv and argv[0] == "normalize":
        from services.ingest.normalize_cli import main as normalize_main

        return normalize_main(argv[1:])
    if argv:
        print("usage: python -m services.ingest [normalize FILE [--activity]]", file=sys.stderr)
        return 2
    try:
        settings = IngestSettings.from_env()
        storage = StorageSettings.from_env()
    except ConfigError as exc:
        print(f"ingest: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging("ingest")
    setup_telemetry("ingest", settings.metrics)
    apply_migrations(storage.database_url.value)
    return int(run(lambda: serve(settings, storage)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
