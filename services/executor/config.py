"""Executor settings from the environment (one frozen dataclass; invalid values raise ConfigError).

| variable | default | meaning |
|---|---|---|
| ``TT_EXECUTOR_HOST`` | 127.0.0.1 | gRPC bind address |
| ``TT_EXECUTOR_GRPC_PORT`` | 50053 | gRPC port (0 = any free port) |
| ``TT_ROUTER_GRPC_TARGET`` | 127.0.0.1:<router port> | where ``StreamRoutedTrades`` is read |
| ``TT_INGEST_GRPC_TARGET`` | 127.0.0.1:<ingest port> | where ``StreamMarketResolutions`` is read |
| ``TT_RECONCILE_INTERVAL_S`` | 300 | each LIVE wallet's venue positions are reconciled this often (0 = never) |
| ``TT_AUTO_REDEEM`` | true | redeem resolved LIVE positions' winning shares (false: recorded PENDING, not sent) |
| ``TT_INTERNAL_TOKEN`` | ``.run/internal_token`` | internal tokens (``common.grpcauth``): port, calls out |
| ``TT_GRPC_ALLOW_INSECURE_BIND`` / ``TT_GRPC_TLS_*`` | false / unset | a non-loopback host needs TLS or this opt-in |
| ``DATABASE_URL`` / ``REDIS_URL`` | embedded servers' files | storage (``common.config.StorageSettings``) |
| ``TT_INSIDERS_API_URL`` / ``TT_INSIDERS_API_TOKEN`` | unset | the live venue; unset: LIVE orders are REJECTED |
| ``TT_EXECUTOR_ROUTED_SOURCE`` | router | ``router``: the gRPC stream; ``log``: the router's log read from Redis |
| ``TT_EXECUTOR_CONSUMER`` | executor | consumer name (its cursor and dead letters) |
| ``TT_EXECUTOR_START_OLDEST`` | true | first start reads the routed log from its oldest entry (false: new ones) |
| ``TT_EXECUTOR_CONSUMER_MAX_BATCH`` | 256 | routed trades admitted together at most |
| ``TT_EXECUTOR_CURSOR_SAVE_INTERVAL_S`` | 0.1 | least time between two cursor saves |
| ``TT_EXECUTOR_MAX_ORDER_AGE_S`` | 60 | an order older than this (since routed) is REJECTED ``STALE_ORDER``; 0 = off |
| ``TT_EXECUTOR_MIN_DEPTH_RATIO`` | 0.5 | less of a copy's size within slippage: ``INSUFFICIENT_DEPTH`` |
| ``TT_MAX_ORDER_USD`` | 1000 | operator ceiling: an order worth more is REJECTED ``MAX_ORDER_USD_EXCEEDED`` |
| ``TT_EXECUTOR_BOOK_MAX_AGE_S`` | 20 | a stored book is priced on only when the venue confirmed it this lately |
| ``TT_EXECUTOR_BOOK_WAIT_S`` | 1 | a stale book's resync is awaited this long (0 = not), then LIVE: reference price |
| ``TT_PAPER_FEE_BPS`` | 0 | fee of paper BUY fills, taken in shares |
| ``TT_EXECUTOR_POST_TIMEOUT_S`` / ``TT_EXECUTOR_QUERY_TIMEOUT_S`` | 5 / 5 | venue deadlines (a POST timeout: UNKNOWN) |
| ``TT_EXECUTOR_MAX_SUBMIT_ATTEMPTS`` | 4 | POSTs of an order on retryable answers before settling it by query |
| ``TT_EXECUTOR_RETRY_BASE_S`` / ``TT_EXECUTOR_RETRY_CAP_S`` | 0.1 / 2 | retry backoff (doubling, jittered, capped) |
| ``TT_EXECUTOR_BREAKER_THRESHOLD`` | 5 | consecutive venue failures that open the breaker |
| ``TT_EXECUTOR_BREAKER_OPEN_S`` | 60 | open period before the half-open probe |
| ``TT_EXECUTOR_BREAKER_WAIT_S`` | 5 | least time an order waits at an open breaker (see ``RESUBMIT_MAX_AGE_S``) |
| ``TT_EXECUTOR_RESUBMIT_MAX_AGE_S`` | 30 | an order may be re-POSTed or wait at the breaker until this old |
| ``TT_EXECUTOR_SETTLE_INTERVAL_S`` | 1 | status query period of an UNKNOWN order |
| ``TT_EXECUTOR_LOST_AFTER`` | 3 | consecutive not-found that settle an UNKNOWN order (LOST or re-POST) |
| ``TT_EXECUTOR_PLACED_LOST_AFTER_S`` | 300 | a placed order found by neither id for this long (0 = never) |
| ``TT_EXECUTOR_POLL_INITIAL_S`` / ``TT_EXECUTOR_POLL_MAX_S`` | 0.2 / 2 | placed order's status queries |
| ``TT_EXECUTOR_MAX_STATUS_QUERIES`` | 256 | status queries of placed orders in flight at once |
| ``TT_EXECUTOR_MAX_INFLIGHT`` | 2048 | POSTs in flight at once |
| ``TT_EXECUTOR_HTTP_CONNECTIONS`` | 0 | cap of connections to the Insiders API (0 = no cap) |
| ``TT_EXECUTOR_HTTP_WARM_CONNECTIONS`` | 0 | connections opened at start-up |
| ``TT_EXECUTOR_SUBMIT_WAIT_S`` | 10 | ``SubmitOrder`` waits this long for the order's first event |
| ``TT_EXECUTOR_JOURNAL_BATCH`` | 1000 | state changes written in one transaction at most |
| ``TT_EXECUTOR_JOURNAL_MIN_INTERVAL_S`` | 0.05 | least time between two journal transactions under load |
| ``TT_EXECUTOR_GRACE_S`` | 5 | graceful-shutdown grace |
| ``TT_EXECUTOR_LEASE_POLL_S`` | 0.5 | a standby (another executor holds the lease) tries to take it this often |
| ``TT_EXECUTOR_LEASE_CHECK_S`` | 1 | the active executor checks its lease this often (exits when another took it) |
| ``TT_EXECUTOR_METRICS_HOST`` / ``_PORT`` | 127.0.0.1 / 9163 | Prometheus ``/metrics`` (``common.metrics``) |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from common.config import (
    ConfigError,
    Secret,
    env_bool,
    env_decimal,
    env_float_seconds,
    env_int,
    env_str,
    env_url,
    grpc_port,
    grpc_target,
    max_order_usd,
)
from common.grpcauth import GrpcSecurity
from common.metrics import METRICS_OFF, MetricsSettings

ROUTED_SOURCES = ("log", "router")


def _routed_source(env: Mapping[str, str]) -> str:
    """Where routed trades are read: ``log`` (tt:stream:routed_trades in Redis, directly) or ``router``
    (RouterService.StreamRoutedTrades over gRPC)."""
    value = env_str(env, "TT_EXECUTOR_ROUTED_SOURCE", "router").lower()
    if value not in ROUTED_SOURCES:
        raise ConfigError(f"TT_EXECUTOR_ROUTED_SOURCE must be one of {', '.join(ROUTED_SOURCES)}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the executor can be tuned with."""

    host: str
    security: GrpcSecurity
    grpc_port: int
    router_target: str
    ingest_target: str
    reconcile_interval_s: float
    auto_redeem: bool
    insiders_url: str
    insiders_token: Secret
    post_timeout_s: float
    query_timeout_s: float
    max_submit_attempts: int
    retry_base_s: float
    retry_cap_s: float
    breaker_threshold: int
    breaker_open_s: float
    breaker_wait_s: float
    poll_initial_s: float
    poll_max_s: float
    settle_interval_s: float
    lost_after: int
    placed_lost_after_s: float
    resubmit_max_age_s: float
    max_order_age_s: float
    max_inflight: int
    max_status_queries: int
    http_connections: int
    http_warm_connections: int
    paper_fee_bps: Decimal
    min_depth_ratio: Decimal
    book_max_age_s: float
    book_wait_s: float
    max_order_usd: Decimal
    submit_wait_s: float
    consumer_name: str
    start_oldest: bool
    journal_batch: int
    journal_min_interval_s: float
    consumer_max_batch: int
    cursor_save_interval_s: float
    routed_source: str
    grace_s: float
    lease_poll_s: float
    lease_check_s: float
    metrics: MetricsSettings = METRICS_OFF

    @property
    def live_configured(self) -> bool:
        """True when live orders have somewhere to go."""
        return bool(self.insiders_url)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate ``TT_EXECUTOR_*`` and the shared variables."""
        env = os.environ if env is None else env
        url = env_url(env, "TT_INSIDERS_API_URL", "")
        token = Secret(env_str(env, "TT_INSIDERS_API_TOKEN"))
        if url and not token:
            raise ConfigError("TT_INSIDERS_API_TOKEN must be set when TT_INSIDERS_API_URL is")
        ratio = env_decimal(env, "TT_EXECUTOR_MIN_DEPTH_RATIO", Decimal("0.5"), minimum=Decimal(0))
        if ratio > 1:
            raise ConfigError(f"TT_EXECUTOR_MIN_DEPTH_RATIO must be <= 1, got {ratio}")
        poll_initial = env_float_seconds(env, "TT_EXECUTOR_POLL_INITIAL_S", 0.2, minimum=0.001)
        poll_max = env_float_seconds(env, "TT_EXECUTOR_POLL_MAX_S", 2.0, minimum=0.001)
        if poll_max < poll_initial:
            raise ConfigError("TT_EXECUTOR_POLL_MAX_S must be >= TT_EXECUTOR_POLL_INITIAL_S")
        security = GrpcSecurity.from_env(env)
        host = env_str(env, "TT_EXECUTOR_HOST", "127.0.0.1")
        security.check_bind(host, "TT_EXECUTOR_HOST")
        return cls(
            host=host,
            security=security,
            grpc_port=grpc_port(env, "executor"),
            router_target=grpc_target(env, "router"),
            ingest_target=grpc_target(env, "ingest"),
            reconcile_interval_s=env_float_seconds(env, "TT_RECONCILE_INTERVAL_S", 300.0),
            auto_redeem=env_bool(env, "TT_AUTO_REDEEM", True),
            insiders_url=url,
            insiders_token=token,
            post_timeout_s=env_float_seconds(env, "TT_EXECUTOR_POST_TIMEOUT_S", 5.0, minimum=0.01),
            query_timeout_s=env_float_seconds(env, "TT_EXECUTOR_QUERY_TIMEOUT_S", 5.0, minimum=0.01),
            max_submit_attempts=env_int(env, "TT_EXECUTOR_MAX_SUBMIT_ATTEMPTS", 4, minimum=1, maximum=20),
            retry_base_s=env_float_seconds(env, "TT_EXECUTOR_RETRY_BASE_S", 0.1, minimum=0.001),
            retry_cap_s=env_float_seconds(env, "TT_EXECUTOR_RETRY_CAP_S", 2.0, minimum=0.001),
            breaker_threshold=env_int(env, "TT_EXECUTOR_BREAKER_THRESHOLD", 5, minimum=1),
            breaker_open_s=env_float_seconds(env, "TT_EXECUTOR_BREAKER_OPEN_S", 60.0, minimum=0.01),
            breaker_wait_s=env_float_seconds(env, "TT_EXECUTOR_BREAKER_WAIT_S", 5.0),
            poll_initial_s=poll_initial,
            poll_max_s=poll_max,
            settle_interval_s=env_float_seconds(env, "TT_EXECUTOR_SETTLE_INTERVAL_S", 1.0, minimum=0.001),
            lost_after=env_int(env, "TT_EXECUTOR_LOST_AFTER", 3, minimum=1),
            placed_lost_after_s=env_float_seconds(env, "TT_EXECUTOR_PLACED_LOST_AFTER_S", 300.0),
            resubmit_max_age_s=env_float_seconds(env, "TT_EXECUTOR_RESUBMIT_MAX_AGE_S", 30.0),
            max_order_age_s=env_float_seconds(env, "TT_EXECUTOR_MAX_ORDER_AGE_S", 60.0),
            max_inflight=env_int(env, "TT_EXECUTOR_MAX_INFLIGHT", 2048, minimum=1),
            max_status_queries=env_int(env, "TT_EXECUTOR_MAX_STATUS_QUERIES", 256, minimum=1),
            http_connections=env_int(env, "TT_EXECUTOR_HTTP_CONNECTIONS", 0, minimum=0),
            http_warm_connections=env_int(env, "TT_EXECUTOR_HTTP_WARM_CONNECTIONS", 0, minimum=0),
            paper_fee_bps=env_decimal(env, "TT_PAPER_FEE_BPS", Decimal(0), minimum=Decimal(0)),
            min_depth_ratio=ratio,
            book_max_age_s=env_float_seconds(env, "TT_EXECUTOR_BOOK_MAX_AGE_S", 20.0, minimum=0.1),
            book_wait_s=env_float_seconds(env, "TT_EXECUTOR_BOOK_WAIT_S", 1.0),
            max_order_usd=max_order_usd(env),
            submit_wait_s=env_float_seconds(env, "TT_EXECUTOR_SUBMIT_WAIT_S", 10.0),
            consumer_name=env_str(env, "TT_EXECUTOR_CONSUMER", "executor"),
            start_oldest=env_bool(env, "TT_EXECUTOR_START_OLDEST", True),
            journal_batch=env_int(env, "TT_EXECUTOR_JOURNAL_BATCH", 1000, minimum=1),
            journal_min_interval_s=env_float_seconds(env, "TT_EXECUTOR_JOURNAL_MIN_INTERVAL_S", 0.05),
            consumer_max_batch=env_int(env, "TT_EXECUTOR_CONSUMER_MAX_BATCH", 256, minimum=1),
            cursor_save_interval_s=env_float_seconds(env, "TT_EXECUTOR_CURSOR_SAVE_INTERVAL_S", 0.1),
            routed_source=_routed_source(env),
            grace_s=env_float_seconds(env, "TT_EXECUTOR_GRACE_S", 5.0),
            lease_poll_s=env_float_seconds(env, "TT_EXECUTOR_LEASE_POLL_S", 0.5, minimum=0.01),
            lease_check_s=env_float_seconds(env, "TT_EXECUTOR_LEASE_CHECK_S", 1.0, minimum=0.01),
            metrics=MetricsSettings.from_env(env, "executor"),
        )
