"""Wiring of the executor: real clients, the journal, venues, the order runner, gRPC server, routed-trade consumer."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool

from common import reservations
from common.alerts import AlertPublisher
from common.cancel import stop_tasks
from common.consumer import DeadLetters, ResumableConsumer
from common.fastredis import FastCursorStore, FastRedis, append_events
from common.grpcclient import channel as grpc_channel
from common.grpcserver import GrpcServer
from common.lease import Lease
from common.livefeed import LiveFeed
from common.logread import read_log_items
from common.marketstate import WATCH_POSITIONS
from common.retry import Backoff
from common.routed import expand, parse_routed
from common.storage import apply_migrations, closed_on_failure, create_pool
from common.streams import (
    MARKET_RESOLUTIONS,
    ORDER_EVENTS,
    REDEMPTION_EVENTS,
    ROUTED_TRADES,
    START_NEW,
    START_OLDEST,
    DurableLog,
    create_stream_redis,
)
from common.watchset import change_watch_set
from services.executor import server
from services.executor.adapters.book_reader import FreshBooks
from services.executor.adapters.breaker_gate import BreakerGate
from services.executor.adapters.insiders_api import InsidersVenue
from services.executor.adapters.leftover_store import LeftoverStore
from services.executor.adapters.order_store import PLANNER_OPTIONS, OrderStore
from services.executor.adapters.paper_holdings import PaperHoldings
from services.executor.adapters.paper_venue import PaperVenue
from services.executor.adapters.reconcile_store import ReconcileStore
from services.executor.adapters.redemption_store import RedemptionStore
from services.executor.adapters.settlement_store import SettlementStore
from services.executor.admission import OrderAdmission
from services.executor.config import Settings
from services.executor.domain.breaker import BreakerConfig
from services.executor.domain.order_intake import IntakeRules
from services.executor.domain.ticket import INSIDERS, PAPER
from services.executor.given_up import GivenUp
from services.executor.journal import Journal
from services.executor.leftovers import LeftoverRedemptions
from services.executor.metrics import ExecutorMetrics, observe_all
from services.executor.order_runner import OrderRunner, RunnerConfig
from services.executor.ports import Venue
from services.executor.reconciling import Reconciler
from services.executor.redeeming import Redeemer, redeem_retry
from services.executor.releases import releasing_dead_letters
from services.executor.resizing import paper_resizer
from services.executor.servicer import ExecutorServicer
from services.executor.settling import Settler
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.execution.v1 import execution_pb2_grpc as egrpc
from tradingtools.market.v1 import market_pb2 as mpb
from tradingtools.market.v1 import market_pb2_grpc as mgrpc

log = logging.getLogger("services.executor")

SETTLE_SWEEP_S = 30.0  # resolutions whose markets still have open positions (a late fill) are settled this often


@dataclass
class Running:
    """A started executor and what to stop."""

    server: GrpcServer
    runner: OrderRunner
    admission: OrderAdmission
    journal: Journal
    consumer: ResumableConsumer[epb.RoutedTrade]
    gates: dict[str, BreakerGate]
    lease: Lease
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    closers: list[Any] = field(default_factory=list)
    settler: Settler | None = None
    redeemer: Redeemer | None = None
    reconciler: Reconciler | None = None
    resolutions: ResumableConsumer[mpb.MarketResolution] | None = None

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop consuming and serving; stop the runners (no new POST; those at the venue get ``grace_s`` to be
        answered and written; non-terminal orders resume at the next start); write what the journal holds (before
        the lease is released, the last closer); close clients. A step that fails or hangs does not stop the next."""
        await _cancel_all([t for t in self.tasks if t.get_name() != "journal"], "consumers")
        await _bounded(self.server.stop(grace_s), "grpc server", grace_s + 5)
        await _bounded(self.runner.close(grace_s), "order runners", grace_s + 5)
        await _bounded(self.journal.drain(max(1.0, grace_s)), "journal", max(1.0, grace_s) + 5)
        await _cancel_all(self.tasks, "tasks")
        await asyncio.gather(*(_bounded(gate.close(), f"breaker gate {name}") for name, gate in self.gates.items()))
        for close in reversed(self.closers):
            await _bounded(close(), getattr(close, "__qualname__", "closer"))


async def _bounded(aw: Any, what: str, timeout_s: float = 10.0) -> None:
    """Await one step of the shutdown, for ``timeout_s`` at most, logging its failure: a stop never hangs on one
    part, nor skips the rest for it."""
    try:
        await asyncio.wait_for(aw, timeout_s)
    except TimeoutError:
        log.error("shutdown step did not finish in time", extra={"step": what, "timeout_s": timeout_s})
    except Exception:  # a dependency down (redis-py's own TimeoutError / ConnectionError...): the stop goes on
        log.exception("shutdown step failed", extra={"step": what})


async def _cancel_all(tasks: list[asyncio.Task[Any]], what: str, timeout_s: float = 10.0) -> None:
    """Cancel ``tasks`` until they end (:func:`common.cancel.stop_tasks`), ``timeout_s`` at most, logging those left."""
    if left := await stop_tasks(tasks, timeout_s=timeout_s):
        log.error("shutdown step did not finish in time", extra={"step": what, "timeout_s": timeout_s, "tasks": left})


def _blocking_redis(url: str, *, max_connections: int = 64) -> aioredis.Redis:
    """A string-mode client whose pool waits for a free connection instead of failing a burst of 1,000 calls."""
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=10,
                                                    decode_responses=True, socket_timeout=5.0,
                                                    socket_connect_timeout=5.0, health_check_interval=10)
    return aioredis.Redis(connection_pool=pool)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def start(settings: Settings, database_url: str, redis_url: str) -> Running:
    """Build and start everything; resume unfinished orders before taking new ones.

    One executor is active per database: this waits (a standby) while another holds the lease, and every
    connection it writes order state through carries the lease's epoch, so it cannot write once superseded.
    """
    await asyncio.to_thread(apply_migrations, database_url)
    lease = Lease(database_url, "executor", poll_s=settings.tuning.lease_poll_s, check_s=settings.tuning.lease_check_s)
    await lease.acquire()
    try:
        return await _start_holding(settings, database_url, redis_url, lease)
    except BaseException:
        await lease.close()
        raise


async def _start_holding(settings: Settings, database_url: str, redis_url: str, lease: Lease) -> Running:
    """:func:`start` once the lease is held."""
    pool = await create_pool(database_url, min_size=2, max_size=8, autocommit=True, application_name="tt-executor",
                             options=f"{PLANNER_OPTIONS} {lease.options}")
    async with closed_on_failure(pool):  # a start that fails leaves no pool task behind
        return await _start_with_pool(settings, database_url, redis_url, lease, pool)


async def _start_with_pool(settings: Settings, database_url: str, redis_url: str, lease: Lease,
                           pool: AsyncConnectionPool[Any]) -> Running:
    t = settings.tuning
    redis = _blocking_redis(redis_url)
    stream_redis = create_stream_redis(redis_url)
    events_log = DurableLog(stream_redis, ORDER_EVENTS, live=LiveFeed())
    await events_log.prime()  # before the journal appends anything
    store = OrderStore(pool, intents_url=database_url, intents_options=lease.options,
                       on_write_error=lease.notice_refusal)
    fast = FastRedis(redis_url)  # the per-order commands: book reads, cursor saves, reservation releases

    async def release(_redis: Any, ids: list[str]) -> list[int]:
        return await reservations.release_many(fast, ids)

    async def append(payloads: list[bytes]) -> list[str]:
        return await append_events(fast, events_log, payloads)

    async def change_watch(added: set[str], gone: set[str]) -> None:  # on the pipelined connection: no redis-py
        await change_watch_set(fast, WATCH_POSITIONS, added, gone)

    order_metrics = ExecutorMetrics()
    journal = Journal(store, redis, events_log, release, max_batch=t.journal_batch,
                      min_interval_s=t.journal_min_interval_s, append=append, observe=order_metrics.observe,
                      durable_after_s=t.events_durable_after_s, server_id=fast.run_id, change_watch=change_watch)

    cfg = BreakerConfig(t.breaker_threshold, int(t.breaker_open_s * 1000))
    venues: dict[str, Venue] = {PAPER: PaperVenue(redis, holdings=PaperHoldings(pool), fee_bps=settings.paper_fee_bps,
                                                  max_book_age_s=t.book_max_age_s)}
    gates = {PAPER: BreakerGate("paper", redis, cfg, _now_ms)}
    if settings.live_configured:
        insiders = InsidersVenue(settings.insiders_url, settings.insiders_token,
                                 post_timeout_s=t.post_timeout_s, query_timeout_s=t.query_timeout_s,
                                 max_connections=t.http_connections)
        venues[INSIDERS] = insiders
        gates[INSIDERS] = BreakerGate("insiders", redis, cfg, _now_ms)
        if t.http_warm_connections:
            await insiders.warm_up(t.http_warm_connections)
    else:
        log.error("TT_INSIDERS_API_URL is not set: LIVE orders are REFUSED (REJECTED, reason "
                  "LIVE_VENUE_NOT_CONFIGURED); paper orders still run")
    for gate in gates.values():
        await gate.load()

    runner = OrderRunner(journal=journal, venues=venues, gates=gates, redis=redis, config=RunnerConfig(
        max_submit_attempts=t.max_submit_attempts,
        retry_backoff=Backoff(t.retry_base_s, t.retry_cap_s),
        breaker_wait_s=t.breaker_wait_s, poll_initial_s=t.poll_initial_s,
        poll_max_s=t.poll_max_s, settle_interval_s=t.settle_interval_s,
        lost_after=t.lost_after, placed_lost_after_s=t.placed_lost_after_s,
        resubmit_max_age_s=t.resubmit_max_age_s,
        max_inflight=t.max_inflight, max_status_queries=t.max_status_queries,
        answer_defer_s=t.answer_defer_s, gc_pause_max_s=t.gc_pause_max_s), rng=random.Random(),
        lease_confirmed=lease.confirmed)
    admission = OrderAdmission(runner, store, fast, IntakeRules(
        live_configured=settings.live_configured, max_order_age_ns=int(t.max_order_age_s * 1e9),
        min_depth_ratio=t.min_depth_ratio, max_order_usd=settings.max_order_usd),
        books=FreshBooks(fast, max_age_s=t.book_max_age_s, wait_s=t.book_wait_s),
        max_open=t.max_open_orders, room_wait_s=t.admission_wait_max_s, repairs=journal.repairs)

    tasks: list[asyncio.Task[Any]] = [asyncio.create_task(journal.run(), name="journal"),
                                      asyncio.create_task(lease.watch(), name="lease"),
                                      asyncio.create_task(t.trimmer(stream_redis, [ORDER_EVENTS]).run(),
                                                          name="log-trim"),
                                      asyncio.create_task(AlertPublisher(stream_redis, "executor").run(),
                                                          name="alerts")]
    # the fills not booked whose report a stopped process left undone (a commit's answer lost), then the late ones
    await store.unbooked.sweep()
    tasks.append(asyncio.create_task(store.unbooked.run(), name="unbooked"))
    given_up = GivenUp(store.open_among, runner.resume)
    runner.on_give_up = given_up.add
    tasks.append(asyncio.create_task(given_up.run(), name="given-up"))
    resumed = await runner.resume(await store.open_orders())
    if resumed:
        log.info("resumed unfinished orders", extra={"count": resumed})

    redemptions_log = DurableLog(stream_redis, REDEMPTION_EVENTS)
    life = _position_life(settings, pool, redis, fast, stream_redis, redemptions_log, admission, gates,
                          venues.get(INSIDERS), lease)
    # a PAPER SELL the paper venue refused for lack of shares is re-sized as a LIVE one (on the booked position)
    paper_resizes = paper_resizer(ReconcileStore(pool, on_write_error=lease.notice_refusal), PaperHoldings(pool),
                                  known=admission.store.known, resubmit=admission.submit)
    journal.observe = observe_all([order_metrics.observe, paper_resizes.observe,
                                   life.reconciler.observe if life.reconciler is not None else None])
    tasks += [*life.tasks, asyncio.create_task(paper_resizes.run(), name="paper-resizes")]

    servicer = ExecutorServicer(admission, runner, store, events_log, submit_wait_s=t.submit_wait_s,
                                redemptions_log=redemptions_log)
    grpc_server = await server.start(servicer, settings.grpc_port, settings.host, settings.security)

    channel = grpc_channel(settings.router_target, settings.security)
    stub = egrpc.RouterServiceStub(channel)

    async def from_router(after: str) -> AsyncIterator[tuple[str, epb.RoutedTrade]]:
        call = stub.StreamRoutedTrades(epb.StreamRoutedTradesRequest(after_cursor=after,
                                                                     consumer=t.consumer_name))
        async for resp in call:
            yield resp.cursor, expand(resp.routed)

    # the same entries and cursors either way; the log read costs neither process a gRPC message per trade
    open_stream = (read_log_items(DurableLog(stream_redis, ROUTED_TRADES), parse_routed)
                   if t.routed_source == "log" else from_router)

    consumer: ResumableConsumer[epb.RoutedTrade] = ResumableConsumer(
        t.consumer_name, open_stream, admission.handle, FastCursorStore(fast),
        start=START_OLDEST if t.start_oldest else START_NEW,
        dead_letter=releasing_dead_letters(
            DeadLetters(stream_redis, t.consumer_name, lambda rt: rt.SerializeToString()), redis,
            forget=lambda rt: admission.forget(rt.orders)),
        save_interval_s=t.cursor_save_interval_s, handle_batch=admission.handle_batch,
        max_batch=t.consumer_max_batch, item_bytes=epb.RoutedTrade.ByteSize, stream=ROUTED_TRADES)
    tasks.append(asyncio.create_task(consumer.run(), name="consumer"))

    async def close_venues() -> None:
        for venue in venues.values():
            await venue.close()

    # closed in reverse: the lease last, once everything this process wrote is written
    closers = [lease.close, pool.close, store.close, redis.aclose, fast.aclose, stream_redis.aclose, channel.close,
               life.channel.close, close_venues]
    log.info("executor started", extra={
        "port": grpc_server.port, "router": settings.router_target, "routed_source": t.routed_source,
        "live": settings.live_configured, "lease_epoch": lease.epoch, "ingest": settings.ingest_target,
        "auto_redeem": settings.auto_redeem, "reconcile_interval_s": settings.reconcile_interval_s})
    return Running(grpc_server, runner, admission, journal, consumer, gates, lease, tasks, closers,
                   life.settler, life.redeemer, life.reconciler, life.resolutions)


@dataclass
class _Life:
    settler: Settler
    redeemer: Redeemer
    reconciler: Reconciler | None
    resolutions: ResumableConsumer[mpb.MarketResolution]
    channel: grpc.aio.Channel
    tasks: list[asyncio.Task[Any]]


def _position_life(settings: Settings, pool: Any, redis: aioredis.Redis, fast: FastRedis,
                   stream_redis: aioredis.Redis, redemptions_log: DurableLog, admission: OrderAdmission,
                   gates: dict[str, BreakerGate], insiders: Venue | None, lease: Lease) -> _Life:
    """Positions after the copy: settlement by ingest's resolutions, redemption, reconciliation with the venue. Their
    writes tell the lease of a refusal; their venue calls wait for its confirmation."""
    api = insiders if isinstance(insiders, InsidersVenue) else None
    told = lease.notice_refusal
    redeemer = Redeemer(RedemptionStore(pool, on_write_error=told), api, gates.get(INSIDERS), redemptions_log,
                        enabled=settings.auto_redeem, lease_confirmed=lease.confirmed,
                        not_found_s=settings.tuning.redeem_not_found_s, retry=redeem_retry(settings))
    # a resting order on a resolved market that the venue did not cancel would hold its position back for ever
    settler = Settler(SettlementStore(pool, on_write_error=told), on_redemptions=redeemer.wake,
                      venues={INSIDERS: insiders} if insiders is not None else None, lease_confirmed=lease.confirmed)
    reconciler = None
    if api is not None and settings.reconcile_interval_s > 0:
        leftovers = LeftoverRedemptions(LeftoverStore(pool, on_write_error=told),
                                        grace_s=settings.tuning.leftover_redeem_grace_s, on_recorded=redeemer.wake)
        reconciler = Reconciler(ReconcileStore(pool, on_write_error=told), api, redis,
                                interval_s=settings.reconcile_interval_s, known=admission.store.known,
                                resubmit=admission.submit, refresh_s=settings.tuning.reconcile_refresh_s,
                                leftovers=leftovers.check)
    channel = grpc_channel(settings.ingest_target, settings.security)
    stub = mgrpc.IngestServiceStub(channel)
    name = f"{settings.tuning.consumer_name}-resolutions"

    async def resolutions(after: str) -> AsyncIterator[tuple[str, mpb.MarketResolution]]:
        call = stub.StreamMarketResolutions(mpb.StreamMarketResolutionsRequest(after_cursor=after, consumer=name))
        async for resp in call:
            yield resp.cursor, resp.resolution

    consumer: ResumableConsumer[mpb.MarketResolution] = ResumableConsumer(
        name, resolutions, settler.handle, FastCursorStore(fast), start=START_OLDEST,
        dead_letter=DeadLetters(stream_redis, name, lambda m: m.SerializeToString()), stream=MARKET_RESOLUTIONS)
    tasks = [asyncio.create_task(consumer.run(), name="resolutions"),
             asyncio.create_task(settler.run_sweeps(SETTLE_SWEEP_S), name="settlement-sweep"),
             asyncio.create_task(redeemer.run(), name="redeemer")]
    if reconciler is not None:
        tasks.append(asyncio.create_task(reconciler.run(), name="reconciler"))
    return _Life(settler, redeemer, reconciler, consumer, channel, tasks)
