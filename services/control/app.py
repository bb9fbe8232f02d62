"""Assembly of the control service: migrations, pool, Redis, hot-index rebuild, gRPC server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from common.alerts import AlertPublisher
from common.cancel import stop_tasks
from common.fastredis import FastRedis
from common.grpcclient import channel as grpc_channel
from common.grpcserver import GrpcServer
from common.storage import apply_migrations, create_redis
from common.streams import create_stream_redis
from services.control import idempotency
from services.control.alert_delivery import AlertDeliverer, WebhookSender
from services.control.config import Settings
from services.control.db import Database, create_pool
from services.control.errors import is_redis_outage, short_reason
from services.control.hotsync import IndexSync
from services.control.internal import InternalUseCases
from services.control.pagination import PageTokens
from services.control.positions import PositionServicer, PositionUseCases, RedisMarketReads
from services.control.readiness import Readiness
from services.control.server import start_grpc
from services.control.servicer import InternalServicer, ProbeServicer, SubscriptionServicer, TriggerServicer
from services.control.subscriptions import SubscriptionUseCases
from services.control.triggers import TriggerUseCases

log = logging.getLogger(__name__)

REDIS_TIMEOUT_S = 2.0  # connect and reply timeout of the request path's Redis commands (as create_redis's)
# At stop, the background tasks are cancelled again and again for at most this long (a library can swallow one
# cancellation); one still running then is logged and left behind, so the stop ends within grace + about this.
STOP_TASKS_S = 2.0


def utc_now() -> datetime:
    """The wall clock, UTC."""
    return datetime.now(UTC)


async def page_token_key(db: Database) -> bytes:
    """The key page tokens are signed with (``control_keys``, drawn by migration 0430)."""
    async with db.read() as conn:
        row = await (await conn.execute("SELECT secret FROM control_keys WHERE name = 'page_token'")).fetchone()
    if row is None:
        raise RuntimeError("control_keys has no page_token key (migration 0430 not applied?)")
    return bytes(row["secret"])


@dataclass
class RunningControl:
    """A started control service."""

    server: GrpcServer
    sync: IndexSync
    db: Database
    redis: Any
    grace_s: float

    @property
    def port(self) -> int:
        """The bound gRPC port."""
        return self.server.port

    async def stop(self) -> None:
        """Stop taking calls, finish in-flight ones, stop the resync loop, close pool and Redis."""
        await self.server.stop(self.grace_s)


async def start(settings: Settings, *, now: Callable[[], datetime] = utc_now) -> RunningControl:
    """Apply migrations, open PostgreSQL and Redis, rebuild the hot index, start gRPC."""
    t = settings.tuning
    url = settings.storage.database_url.value
    await asyncio.to_thread(apply_migrations, url)
    pool = await create_pool(url, max_size=t.db_pool_max, acquire_timeout_s=t.db_timeout_s,
                             statement_timeout_s=max(t.db_timeout_s, 5.0))
    redis = create_redis(settings.storage.redis_url.value)
    hot = FastRedis(settings.storage.redis_url.value, timeout_s=REDIS_TIMEOUT_S)
    ttl = timedelta(seconds=t.idempotency_ttl_s)
    try:
        db = Database(pool)
        tokens = PageTokens(await page_token_key(db))
        sync = IndexSync(db, redis, interval_s=t.index_resync_s, retry_interval_s=t.index_retry_s,
                         full_interval_s=t.index_full_resync_s, sweep_interval_s=t.index_sweep_s, hot=hot)
        try:
            await sync.resync()
        except Exception as exc:
            if not is_redis_outage(exc):
                raise
            sync.mark_dirty()
            log.warning("redis unreachable at start-up; the index will be rebuilt when it is back",
                        extra={"error": short_reason(exc)})
        readiness = Readiness(db, redis, url, timeout_s=t.ready_timeout_s,
                              services=settings.ready_services,
                              open_channel=lambda target: grpc_channel(target, settings.security),
                              breaker_venues=("insiders", "paper") if settings.live_enabled else ("paper",))
        server = await start_grpc(
            settings,
            subscriptions=SubscriptionServicer(SubscriptionUseCases(
                db, sync, live_enabled=settings.live_enabled, now=now, idempotency_ttl=ttl, page_tokens=tokens,
                list_cache_entries=t.list_cache_entries, page_cache_bytes=t.page_cache_mb << 20)),
            triggers=TriggerServicer(TriggerUseCases(db, sync, now=now, idempotency_ttl=ttl, page_tokens=tokens)),
            positions=PositionServicer(PositionUseCases(db, RedisMarketReads(redis), page_tokens=tokens)),
            probes=ProbeServicer(readiness),
            internal=InternalServicer(InternalUseCases(db, sync, now=now)),
        )
    except BaseException:
        await pool.close()
        await redis.aclose()
        hot.close()
        raise

    async def housekeeping() -> None:
        async with db.transaction() as conn:
            await idempotency.purge(conn, now(), ttl)

    tasks = [asyncio.create_task(sync.run(housekeeping), name="control-index-resync")]
    alerts_redis = create_stream_redis(settings.storage.redis_url.value)
    tasks.append(asyncio.create_task(AlertPublisher(alerts_redis, "control").run(), name="alert-publisher"))
    sender = None
    if settings.alerts.webhook_url:
        sender = WebhookSender(settings.alerts.webhook_url, settings.alerts.webhook_secret.value,
                               timeout_s=settings.alerts.timeout_s)
        deliverer = AlertDeliverer(alerts_redis, sender, settings.alerts)
        tasks.append(asyncio.create_task(deliverer.run(), name="alert-deliverer"))
    else:
        log.warning("TT_ALERT_WEBHOOK_URL is not set: alerts are only logged")

    async def close() -> None:
        await stop_tasks(tasks, timeout_s=STOP_TASKS_S)
        if sender is not None:
            await sender.close()
        await alerts_redis.aclose()
        await pool.close()
        await redis.aclose()
        hot.close()

    server.on_stop(close)
    log.info("control started", extra={"port": server.port, "live_enabled": settings.live_enabled})
    return RunningControl(server=server, sync=sync, db=db, redis=redis, grace_s=t.grace_s)
