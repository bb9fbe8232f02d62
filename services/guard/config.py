"""Settings of the guard service, read once from the environment.

| variable | default | meaning |
|---|---|---|
| ``TT_GUARD_HOST`` | 127.0.0.1 | gRPC bind address |
| ``TT_GUARD_GRPC_PORT`` | 50054 | gRPC port (0 = any free port) |
| ``TT_INGEST_GRPC_TARGET`` / ``TT_EXECUTOR_GRPC_TARGET`` / ``TT_CONTROL_GRPC_TARGET`` | 127.0.0.1:<port> | upstreams |
| ``DATABASE_URL`` / ``REDIS_URL`` | embedded servers' files | storage |
| ``TT_INTERNAL_TOKEN`` | ``.run/internal_token`` | internal tokens (``common.grpcauth``): port, calls out |
| ``TT_GRPC_ALLOW_INSECURE_BIND`` / ``TT_GRPC_TLS_*`` | false / unset | a non-loopback host needs TLS or this opt-in |
| ``TT_GUARD_TICK_SOURCE`` | log | ``log``: ingest's tick log in Redis, batched; ``grpc``: ``StreamPriceTicks`` |
| ``TT_GUARD_ORDERS_SOURCE`` | grpc | ``grpc``: ``StreamOrderEventBatches``; ``log``: the executor's log in Redis |
| ``TT_GUARD_ORDERS_GATHER_S`` | 0.025 | least time between order-event reads (log source); SELL answers' settle batch |
| ``TT_GUARD_TICK_MAX_AGE_S`` | 2 | a tick older than this (since ingest received it) never fires |
| ``TT_GUARD_BOOK_MAX_AGE_S`` | 30 | catch-up: a stored book older than this never fires |
| ``TT_GUARD_PERF_INTERVAL_S`` | 5 | performance-rule evaluation period (and of ``stats.unrealizedPnlUsd``) |
| ``TT_GUARD_MARK_FLUSH_S`` | 10 | how often risen trailing high-water marks are persisted (lost on a crash since) |
| ``TT_GUARD_BOOKKEEPING_INTERVAL_S`` | 0.05 | least time between two runs of the event outbox / "SELL acked" marker |
| ``TT_GUARD_SUBMITTED_MARK_DELAY_S`` | 1 | an acknowledged SELL is marked this late (a settled one needs no mark) |
| ``TT_GUARD_TRIGGER_CHECK_S`` | 5 | safety-net comparison of ``tt:triggers:version`` |
| ``TT_GUARD_MAX_SLIPPAGE_BPS`` | 300 | slippage tolerance of trigger SELLs (executor's depth check) |
| ``TT_GUARD_SUBMIT_TIMEOUT_S`` / ``TT_GUARD_CONTROL_TIMEOUT_S`` | 5 / 5 | RPC deadlines |
| ``TT_GUARD_FIRE_CONCURRENCY`` | 8 | fires recorded concurrently |
| ``TT_GUARD_DB_POOL_MAX`` | 12 | PostgreSQL pool size |
| ``TT_GUARD_MARKET_CACHE_S`` | 60 | market info (tick, minimum size) cache |
| ``TT_GUARD_ORDERS_START`` | oldest | first start of the order-event consumer: ``oldest`` or ``new`` |
| ``TT_GUARD_STREAM_MAXLEN`` | 1000000 | length cap of ``tt:stream:trigger_events`` |
| ``TT_GUARD_BANDS`` | true | publish price bands (``common.bands``): ingest then logs only the ticks that may matter |
| ``TT_GUARD_BAND_BEAT_S`` | 1 | least often a band write goes out (renews the lease, tells how far ticks were read) |
| ``TT_GUARD_BAND_LEASE_S`` | 5 | no band write for this long: ingest forwards every tick (more than twice the beat) |
| ``TT_GUARD_STATS_LOG_S`` | 60 | period of the "guard stats" log line (counters, tick lag, fire stages) |
| ``TT_GUARD_GRACE_S`` | 5 | graceful-shutdown grace |
| ``TT_GUARD_METRICS_HOST`` / ``_PORT`` | 127.0.0.1 / 9164 | Prometheus ``/metrics`` (``common.metrics``) |
| ``TT_GUARD_CRASH_AFTER`` | "" | test only: ``decision`` / ``submit`` exits the process (137) right after that step |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from common.config import (
    ConfigError,
    StorageSettings,
    env_bool,
    env_float_seconds,
    env_int,
    env_str,
    grpc_port,
    grpc_target,
)
from common.grpcauth import GrpcSecurity
from common.metrics import METRICS_OFF, MetricsSettings
from common.streams import START_NEW, START_OLDEST
from services.guard.firing import CRASH_POINTS


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything guard needs from its environment; durations in seconds."""

    storage: StorageSettings
    security: GrpcSecurity
    host: str = "127.0.0.1"
    grpc_port: int = 50054
    ingest_target: str = "127.0.0.1:50051"
    executor_target: str = "127.0.0.1:50053"
    control_target: str = "127.0.0.1:50055"
    tick_source: str = "log"
    orders_source: str = "grpc"
    orders_gather_s: float = 0.025
    tick_max_age_s: float = 2.0
    book_max_age_s: float = 30.0
    perf_interval_s: float = 5.0
    mark_flush_s: float = 10.0
    bookkeeping_interval_s: float = 0.05
    submitted_mark_delay_s: float = 1.0
    trigger_check_s: float = 5.0
    max_slippage_bps: int = 300
    submit_timeout_s: float = 5.0
    control_timeout_s: float = 5.0
    fire_concurrency: int = 8
    db_pool_max: int = 12
    market_cache_s: float = 60.0
    orders_start: str = START_OLDEST
    stream_maxlen: int = 1_000_000
    grace_s: float = 5.0
    stats_log_s: float = 60.0
    bands: bool = True
    band_beat_s: float = 1.0
    band_lease_s: float = 5.0
    crash_after: str = ""
    metrics: MetricsSettings = METRICS_OFF

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the variables; raise ConfigError naming the bad one."""
        env = os.environ if env is None else env
        start = env_str(env, "TT_GUARD_ORDERS_START", "oldest").lower()
        if start not in {"oldest", "new"}:
            raise ConfigError(f"TT_GUARD_ORDERS_START must be 'oldest' or 'new', got {start!r}")
        tick_source = env_str(env, "TT_GUARD_TICK_SOURCE", "log").lower()
        if tick_source not in {"grpc", "log"}:
            raise ConfigError(f"TT_GUARD_TICK_SOURCE must be 'grpc' or 'log', got {tick_source!r}")
        orders_source = env_str(env, "TT_GUARD_ORDERS_SOURCE", "grpc").lower()
        if orders_source not in {"grpc", "log"}:
            raise ConfigError(f"TT_GUARD_ORDERS_SOURCE must be 'grpc' or 'log', got {orders_source!r}")
        crash = env_str(env, "TT_GUARD_CRASH_AFTER").lower()
        if crash not in CRASH_POINTS:
            raise ConfigError(f"TT_GUARD_CRASH_AFTER must be one of {sorted(CRASH_POINTS)}, got {crash!r}")
        security = GrpcSecurity.from_env(env)
        host = env_str(env, "TT_GUARD_HOST", "127.0.0.1")
        security.check_bind(host, "TT_GUARD_HOST")
        settings = cls(
            storage=StorageSettings.from_env(env),
            security=security,
            host=host,
            grpc_port=grpc_port(env, "guard"),
            ingest_target=grpc_target(env, "ingest"),
            executor_target=grpc_target(env, "executor"),
            control_target=grpc_target(env, "control"),
            tick_source=tick_source,
            orders_source=orders_source,
            orders_gather_s=env_float_seconds(env, "TT_GUARD_ORDERS_GATHER_S", 0.025),
            tick_max_age_s=_positive(env, "TT_GUARD_TICK_MAX_AGE_S", 2.0),
            book_max_age_s=_positive(env, "TT_GUARD_BOOK_MAX_AGE_S", 30.0),
            perf_interval_s=_positive(env, "TT_GUARD_PERF_INTERVAL_S", 5.0),
            mark_flush_s=_positive(env, "TT_GUARD_MARK_FLUSH_S", 10.0),
            bookkeeping_interval_s=env_float_seconds(env, "TT_GUARD_BOOKKEEPING_INTERVAL_S", 0.05),
            submitted_mark_delay_s=env_float_seconds(env, "TT_GUARD_SUBMITTED_MARK_DELAY_S", 1.0),
            trigger_check_s=_positive(env, "TT_GUARD_TRIGGER_CHECK_S", 5.0),
            max_slippage_bps=env_int(env, "TT_GUARD_MAX_SLIPPAGE_BPS", 300, minimum=0, maximum=10_000),
            submit_timeout_s=_positive(env, "TT_GUARD_SUBMIT_TIMEOUT_S", 5.0),
            control_timeout_s=_positive(env, "TT_GUARD_CONTROL_TIMEOUT_S", 5.0),
            fire_concurrency=env_int(env, "TT_GUARD_FIRE_CONCURRENCY", 8, minimum=1, maximum=256),
            db_pool_max=env_int(env, "TT_GUARD_DB_POOL_MAX", 12, minimum=2, maximum=200),
            market_cache_s=env_float_seconds(env, "TT_GUARD_MARKET_CACHE_S", 60.0),
            orders_start=START_OLDEST if start == "oldest" else START_NEW,
            stream_maxlen=env_int(env, "TT_GUARD_STREAM_MAXLEN", 1_000_000, minimum=1000),
            grace_s=env_float_seconds(env, "TT_GUARD_GRACE_S", 5.0),
            stats_log_s=_positive(env, "TT_GUARD_STATS_LOG_S", 60.0),
            bands=env_bool(env, "TT_GUARD_BANDS", True),
            band_beat_s=_positive(env, "TT_GUARD_BAND_BEAT_S", 1.0),
            band_lease_s=_positive(env, "TT_GUARD_BAND_LEASE_S", 5.0),
            crash_after=crash,
            metrics=MetricsSettings.from_env(env, "guard"),
        )
        if settings.fire_concurrency >= settings.db_pool_max:
            raise ConfigError("TT_GUARD_FIRE_CONCURRENCY must be < TT_GUARD_DB_POOL_MAX")
        if settings.band_lease_s <= 2 * settings.band_beat_s:
            raise ConfigError("TT_GUARD_BAND_LEASE_S must be more than twice TT_GUARD_BAND_BEAT_S")
        return settings


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    value = env_float_seconds(env, name, default)
    if value <= 0:
        raise ConfigError(f"{name} must be > 0, got {value}")
    return value
