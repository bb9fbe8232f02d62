"""Wiring of the guard service: real clients, the adapters, the coordinator, its consumers and loops, the gRPC
server."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from psycopg_pool import AsyncConnectionPool

from common.alerts import AlertPublisher
from common.cancel import stop_tasks
from common.consumer import DeadLetters, ResumableConsumer
from common.fastredis import FastCursorStore, FastRedis
from common.grpcclient import channel as grpc_channel
from common.grpcserver import GrpcServer
from common.logread import read_log_items
from common.storage import KEYED_LOOKUPS, apply_migrations, closed_on_failure, create_pool, create_redis
from common.streams import ORDER_EVENTS, PRICE_TICKS, TRIGGER_EVENTS, DurableLog, create_stream_redis
from services.guard.adapters.armed_reads import RecentArmed
from services.guard.adapters.band_publisher import BandPublisher, switch_off
from services.guard.adapters.band_reset import invalidate_bands
from services.guard.adapters.control_client import GrpcControl
from services.guard.adapters.exit_store import ExitStore
from services.guard.adapters.guard_notices import GuardNotices
from services.guard.adapters.mark_replay import MarkReplaySource
from services.guard.adapters.market_state import RedisMarkets
from services.guard.adapters.order_client import GrpcExecutor, order_event_stream
from services.guard.adapters.perf_store import PerfStore
from services.guard.adapters.publishers import OutboxPublisher, WatchPublisher
from services.guard.adapters.tick_reader import log_end, log_tick_stream, tick_stream
from services.guard.adapters.trigger_store import TriggerStore, warm_fire_reads
from services.guard.config import Settings
from services.guard.coordinator import Clients, Guard, Stores, Tuning
from services.guard.loops import FireWindow, reraise_if_cancelled
from services.guard.mark_recovery import recover_marks
from services.guard.perf_monitor import PerfMonitor
from services.guard.server import start_grpc
from services.guard.tick_feed import TickFeed
from services.guard.trigger_sync import TriggerSync
from services.guard.unwatched import UnwatchedSweep
from tradingtools.execution.v1 import execution_pb2 as epb

log = logging.getLogger(__name__)

ORDERS_CONSUMER = "guard-orders"
TICKS_CONSUMER = "guard-ticks"


def utcnow() -> datetime:
    """Wall-clock time for rows (the adapters' clock)."""
    return datetime.now(UTC)


@dataclass
class Running:
    """A started guard and what must be closed on stop."""

    settings: Settings
    guard: Guard
    server: GrpcServer
    sync: TriggerSync
    ticks: TickFeed
    orders: ResumableConsumer[epb.OrderEvent]
    perf: PerfMonitor
    outbox: OutboxPublisher
    watch: WatchPublisher
    notices: GuardNotices
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    closers: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)
    bands: BandPublisher | None = None
    bands_stood_down: bool = False
    stopped: bool = False

    async def stop(self) -> None:
        """Stop serving, let in-flight fires finish within the grace period, close everything (once)."""
        if self.stopped:
            return
        self.stopped = True
        await self.stand_down_bands()
        try:
            await asyncio.wait_for(self.server.stop(self.settings.tuning.grace_s), self.settings.tuning.grace_s + 5)
        except TimeoutError:
            log.warning("gRPC server stop timed out")
        await stop_tasks(self.tasks, timeout_s=self.settings.tuning.grace_s + 5)
        try:
            await asyncio.wait_for(self.guard.drain(), timeout=self.settings.tuning.grace_s)
        except TimeoutError:
            await self.guard.cancel_tasks()
        for final in (self.guard.firer.submitted, self.outbox, self.notices):
            try:
                await _bounded(final.step(), max(self.settings.tuning.grace_s, 1.0))
            except Exception as exc:  # noqa: BLE001 - the next start re-submits / re-publishes
                log.warning(f"final {final.name} failed", extra={"error": repr(exc)[:300]})
        closing_s = max(self.settings.tuning.grace_s, 1.0)
        for close in reversed(self.closers):
            try:
                await _bounded(close(), closing_s)  # a dependency that hangs holds up no other closer
            except Exception:  # shutdown must finish
                log.exception("close failed", extra={"closer": getattr(close, "__qualname__", "closer"),
                                                     "timeout_s": closing_s})


    async def stand_down_bands(self) -> None:
        """The stop's first step (before the gRPC server's graceful stop; once): no band write from here on, and this
        process's bands out of ingest's gates when no newer process wrote its own (``BandPublisher.stand_down``);
        every tick goes out until the next guard's land."""
        if self.bands is None or self.bands_stood_down:
            return
        self.bands_stood_down = True
        if await stop_tasks([t for t in self.tasks if t.get_name() == "bands"], timeout_s=1.0):
            log.warning("band publisher still running at the stop: its lease ends its bands instead")
            return
        try:
            await _bounded(self.bands.stand_down(), 1.0)
        except Exception as exc:  # noqa: BLE001 - Redis down: the lease runs out instead
            log.warning("bands not taken out at the stop", extra={"error": repr(exc)[:300]})


async def _bounded(step: Awaitable[Any], timeout_s: float) -> None:
    """Await a step of the stop for ``timeout_s`` at most (TimeoutError after), then cancel it until it ends:
    psycopg answers a first cancellation by asking PostgreSQL to cancel the query (10 s when it does not answer);
    a second one closes the connection at once."""
    task = asyncio.ensure_future(step)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        await stop_tasks([task], timeout_s=1.0)
        raise TimeoutError(f"not done within {timeout_s} s")
    task.result()


def _async(fn: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    async def call() -> None:
        fn()
    return call


async def _every(interval_s: float, step: Callable[[], Awaitable[Any]], name: str) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - periodic housekeeping survives outages
            reraise_if_cancelled()
            log.warning(f"{name} failed", extra={"error": repr(exc)[:300]})


async def _publish_bands(bands: BandPublisher | None, redis: FastRedis) -> None:
    """The loaded engine's bands under this process's epoch (or none at all when switched off); a failure is
    retried by the publisher's loop (meanwhile ingest forwards every tick once the old lease ran out)."""
    try:
        if bands is None:
            await switch_off(redis)
        else:
            await bands.step()
    except Exception as exc:  # noqa: BLE001 - Redis hiccup at start: retried
        reraise_if_cancelled()
        log.warning("first band publish failed", extra={"error": repr(exc)[:300]})


async def _recover_marks(guard: Guard, replay: MarkReplaySource, end: str, t: Any) -> bool:
    """Trailing marks a crash lost taken back from the tick log (:mod:`services.guard.mark_recovery`); False when it
    failed (the stored marks stay, as before the replay existed)."""
    try:
        done = await recover_marks(lambda: guard.engine, guard.marks, replay, end=end,
                                   now_ms=guard.clock_ns() // 1_000_000, fallback_s=t.mark_replay_fallback_s,
                                   max_s=t.mark_replay_max_s, margin_ns=int(t.mark_replay_arm_margin_s * 1e9),
                                   changed=guard.changed)
    except Exception as exc:  # noqa: BLE001 - the stored marks still guard the positions
        reraise_if_cancelled()
        log.warning("trailing marks not recovered from the tick log", extra={"error": repr(exc)[:300]})
        return False
    guard.stats.marks_recovered = done.lifted
    guard.stats.marks_log_trimmed = int(done.trimmed)
    if done.trimmed:
        log.warning("tick log trimmed past the saved marks cursor: rises on prices it dropped are not recovered",
                    extra={"after": done.start})
    log.info("trailing marks recovered from the tick log",
             extra={"after": done.start, "from_saved": done.saved, "clipped": done.clipped, "ticks": done.ticks,
                    "malformed": replay.malformed, "marks_lifted": done.lifted, "read_s": round(done.read_s, 3)})
    return True


async def _marks_saved(notices: GuardNotices) -> None:
    """At a stop: a guard started meanwhile (a rollout) takes the trailing marks this one saved above its own."""
    try:
        await notices.marks_saved()
    except Exception as exc:  # noqa: BLE001 - shutdown goes on
        log.warning("marks notice failed", extra={"error": repr(exc)[:300]})


_RUNNING: weakref.WeakSet[Guard] = weakref.WeakSet()  # read at each scrape


def _armed(_options: CallbackOptions) -> list[Observation]:
    return [Observation(sum(len(g.engine) for g in list(_RUNNING)))]


def _assets(_options: CallbackOptions) -> list[Observation]:
    return [Observation(sum(len(g.engine.assets()) for g in list(_RUNNING)))]


_METER = metrics.get_meter("tradingtools.guard")
_METER.create_observable_gauge("guard.armed_triggers", callbacks=[_armed], description="Triggers armed now")
_METER.create_observable_gauge("guard.watched_assets", callbacks=[_assets],
                               description="Assets the armed triggers watch")


def tuning(settings: Settings) -> Tuning:
    """The coordinator's limits and timings from the service settings."""
    t = settings.tuning
    return Tuning(tick_max_age_s=t.tick_max_age_s, replay_margin_s=t.replay_margin_s, book_max_age_s=t.book_max_age_s,
                  max_slippage_bps=t.max_slippage_bps, crash_after=settings.crash_after,
                  fire_concurrency=t.fire_concurrency, bookkeeping_interval_s=t.bookkeeping_interval_s,
                  submitted_mark_delay_s=t.submitted_mark_delay_s, answers_gather_s=t.orders_gather_s,
                  mark_flush_rows=t.mark_flush_rows, mark_flush_duty=t.mark_flush_duty,
                  unrecorded_sell_max_age_s=t.unrecorded_sell_max_age_s)


async def start(settings: Settings) -> Running:
    """Apply migrations, connect, load armed triggers, start consumers and the gRPC server."""
    db_url = settings.storage.database_url.value
    t = settings.tuning
    await asyncio.to_thread(apply_migrations, db_url)
    # Connections for every concurrent fire are opened up front: a fire that has to wait for a new
    # PostgreSQL backend (a fork, ~10 ms here) misses the latency target. Every statement reaches triggers,
    # positions and copy exits by key: a plan cached on a small table must not scan it once it has grown. Each
    # connection has the fire's reads prepared before it is handed out (the first fires skip unprepared runs).
    pool = await create_pool(db_url, min_size=min(t.fire_concurrency + 2, t.db_pool_max),
                             max_size=t.db_pool_max, autocommit=True, application_name="tt-guard",
                             options=KEYED_LOOKUPS, warm=warm_fire_reads)
    async with closed_on_failure(pool):  # a start that fails leaves no pool task behind
        return await _start_with_pool(settings, pool)


async def _start_with_pool(settings: Settings, pool: AsyncConnectionPool[Any]) -> Running:
    t = settings.tuning
    try:
        await pool.wait(timeout=10.0)
    except Exception as exc:  # noqa: BLE001 - fewer connections than wanted is slower, not wrong
        log.warning("PostgreSQL pool not filled at start", extra={"error": repr(exc)[:300]})
    redis = create_redis(settings.storage.redis_url.value)
    stream_redis = create_stream_redis(settings.storage.redis_url.value)
    ingest_ch = grpc_channel(settings.ingest_target, settings.security)
    executor_ch = grpc_channel(settings.executor_target, settings.security)
    control_ch = grpc_channel(settings.control_target, settings.security)

    events_log = DurableLog(stream_redis, TRIGGER_EVENTS, maxlen=t.stream_maxlen)
    triggers = TriggerStore(pool, utcnow)
    markets = RedisMarkets(redis, cache_s=t.market_cache_s)
    # the publishers below run after the fires under way (FireWindow): they share guard's loop and the CPU
    window = FireWindow()
    # one pipelined connection for the commands paid per event: the outbox's appends, the consumer cursors
    cursor_redis = FastRedis(settings.storage.redis_url.value)
    outbox = OutboxPublisher(pool, events_log, utcnow, min_interval_s=t.bookkeeping_interval_s,
                             yield_to=window.yield_to_fires, fast=cursor_redis)
    watch = WatchPublisher(redis, lambda: guard.engine, yield_to=window.yield_to_fires, fast=cursor_redis)
    # its own connection: a big rewrite holds up no fire's outbox append; a stalled write fails well inside the bands'
    # lease (as redis-py's 2 s did), so the retry can still renew it
    band_redis = FastRedis(settings.storage.redis_url.value, timeout_s=min(2.0, t.band_lease_s / 2))
    bands = (BandPublisher(band_redis, lambda: guard.engine, lambda: guard.through_ns, beat_s=t.band_beat_s,
                           lease_s=t.band_lease_s, yield_to=window.yield_to_fires) if t.bands else None)
    # the copy exits this process changes, announced to the other guard of a rollout
    notices = GuardNotices(redis)
    guard = Guard(Stores(triggers=triggers, exits=ExitStore(pool, utcnow, announce=notices.announce)),
                  Clients(executor=GrpcExecutor(executor_ch, timeout_s=t.submit_timeout_s),
                          markets=markets, outbox=outbox, watch=watch, bands=bands),
                  tuning(settings), fire_window=window)
    _RUNNING.add(guard)

    tasks: list[asyncio.Task[Any]] = [asyncio.create_task(AlertPublisher(stream_redis, "guard").run(), name="alerts"),
                                      asyncio.create_task(outbox.run(), name="outbox"),
                                      asyncio.create_task(watch.run(), name="watch"),
                                      asyncio.create_task(notices.run(), name="notices"),
                                      asyncio.create_task(guard.firer.submitted.run(), name="submitted")]
    unwatched = UnwatchedSweep(guard.changes, RecentArmed(pool), utcnow)  # its window opens before the load
    sync = TriggerSync(redis, guard.changes, check_s=t.trigger_check_s, initial=guard.start, token=notices.token)
    tasks.append(asyncio.create_task(sync.run(), name="trigger-sync"))
    await sync.ready.wait()
    ticks_log = DurableLog(stream_redis, PRICE_TICKS, block_ms=1000)
    # The tick stream starts at the log's end, taken before the first bands and the catch-up of the books: a tick
    # logged meanwhile is read (one that crossed and left no other tick behind it would otherwise be lost until the
    # book moved again). The first bands say how far that is (through_ns: the newest tick's stamp, 1 on an empty
    # log, as 0 says nothing), so ingest stops narrowing them by prices this process never reads, and keeps those
    # it will. Before the cursor, ingest's gates stop trusting the previous process's bands (they were narrowed by
    # prices it logged and never read, before this process's cursor too): no tick after the cursor is filtered by them
    # (also when this process has bands off: the previous one may have had them on).
    await invalidate_bands(redis, lease_s=t.band_lease_s)
    tick_cursor, end_stamp = await log_end(ticks_log)
    guard.through_ns = max(guard.through_ns, end_stamp, 1)
    replay = MarkReplaySource(cursor_redis, ticks_log, pool)
    recovered = await _recover_marks(guard, replay, tick_cursor, t)  # before the first bands and the catch-up
    await _publish_bands(bands, band_redis)  # before the catch-up: ingest filters with this engine's bands from here
    if bands is not None:
        tasks.append(asyncio.create_task(bands.run(), name="bands"))
    await guard.catch_up()

    ticks_source = (tick_stream(ingest_ch, TICKS_CONSUMER) if t.tick_source == "grpc"
                    else log_tick_stream(ticks_log))
    feed = TickFeed(ticks_source, guard.handle_tick, guard.catch_up, urgent=lambda: bool(guard.firer.in_flight))
    feed.cursor = tick_cursor
    if recovered:  # else the next start reads this start's stretch again
        # no cursor while fires or their re-arms are under way, nor when one began during the flush: those stops'
        # marks are out of the engine meanwhile
        firer, changes = guard.firer, guard.changes
        guard.marks.position = lambda: (None if firer.window.open or firer.in_flight or changes.rearming
                                        else feed.cursor)
        guard.marks.calm = lambda: (firer.window.begun, changes.rearms)
        guard.marks.on_saved = replay.save_through
    orders_source = (order_event_stream(executor_ch, ORDERS_CONSUMER) if t.orders_source == "grpc"
                     else read_log_items(DurableLog(stream_redis, ORDER_EVENTS, block_ms=1000),
                                         epb.OrderEvent.FromString, min_interval_s=t.orders_gather_s))
    # Batches: the copy fills that arrived while the previous batch was handled share one transaction.
    # Cursors are saved at most every 0.1 s: a crash redelivers those events, whose handling is idempotent.
    cursors = FastCursorStore(cursor_redis)
    orders = ResumableConsumer(ORDERS_CONSUMER, orders_source, guard.on_order_event, cursors,
                               start=t.orders_start_cursor, handle_batch=guard.on_order_events, save_interval_s=0.1,
                               dead_letter=DeadLetters(stream_redis, ORDERS_CONSUMER, lambda e: e.SerializeToString()),
                               stream=ORDER_EVENTS)
    perf = PerfMonitor(PerfStore(pool, utcnow),
                       GrpcControl(control_ch, timeout_s=t.control_timeout_s),
                       markets, interval_s=t.perf_interval_s, book_max_age_s=t.book_max_age_s)
    tasks += [asyncio.create_task(feed.run(), name="ticks"), asyncio.create_task(orders.run(), name="orders"),
              asyncio.create_task(unwatched.run(t.trigger_check_s, lambda: bool(orders.resumed_from)),
                                  name="unwatched"),
              asyncio.create_task(perf.run(), name="perf"),
              asyncio.create_task(_every(t.mark_flush_s, guard.flush_marks, "mark flush"), name="marks"),
              asyncio.create_task(_every(t.watch_verify_s, _async(watch.verify), "watch verify"), name="watch-verify"),
              asyncio.create_task(_every(t.stats_log_s, _async(guard.log_stats), "stats log"), name="stats")]
    server = await start_grpc(settings.host, settings.grpc_port, events_log, settings.security)
    log.info("guard started", extra={"port": server.port, "triggers": len(guard.engine),
                                     "load_s": round(guard.stats.load_s, 3)})

    async def save_marks() -> None:
        await guard.flush_marks(paced=False)  # what a stopped flush left, at once: the grace period is short

    async def marks_notice() -> None:
        await _marks_saved(notices)

    async def close_channels() -> None:
        for ch in (ingest_ch, executor_ch, control_ch):
            await ch.close(None)

    # closed in reverse, each for the grace period at most: the marks first (then, saved or not, the notice)
    closers: list[Callable[[], Awaitable[Any]]] = [pool.close, _async(cursor_redis.close), _async(band_redis.close),
                                                   stream_redis.aclose, redis.aclose, close_channels, marks_notice,
                                                   save_marks]
    return Running(settings, guard, server, sync, feed, orders, perf, outbox, watch, notices, tasks, closers,
                   bands=bands)
