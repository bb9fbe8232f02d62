"""Router settings from the environment (invalid values raise ConfigError at start-up).

| variable | default | meaning |
|---|---|---|
| ``TT_ROUTER_GRPC_HOST`` | 127.0.0.1 | gRPC bind address |
| ``TT_ROUTER_GRPC_PORT`` | 50052 | gRPC port of ``StreamRoutedTrades`` (0 = any free port) |
| ``TT_INGEST_GRPC_TARGET`` | 127.0.0.1:<port> | upstream ingest (``StreamLeaderTrades``) |
| ``TT_INGEST_GRPC_PORT`` | 50051 | the <port> above, used when ``TT_INGEST_GRPC_TARGET`` is unset |
| ``TT_INTERNAL_TOKEN`` | ``.run/internal_token`` | internal tokens (``common.grpcauth``): port, calls out |
| ``TT_GRPC_ALLOW_INSECURE_BIND`` / ``TT_GRPC_TLS_*`` | false / unset | a non-loopback host needs TLS or this opt-in |
| ``DATABASE_URL`` / ``REDIS_URL`` | embedded servers' files | storage (``common.config.StorageSettings``) |
| ``TT_RUN_DIR`` | ``.run/`` | where the embedded servers' URL files are read when the URLs are unset |
| ``TT_CLOB_API_URL`` | https://clob.polymarket.com | CLOB REST API: market info and books |
| ``TT_INSIDERS_API_URL`` | unset | balance API for PERCENT_OF_BALANCE; unset: only funded balances on record |
| ``TT_INSIDERS_API_TOKEN`` | unset | bearer token of the balance requests |
| ``TT_ROUTER_START`` | oldest | first start of the trade consumer (no saved cursor): ``oldest`` or ``new`` |
| ``TT_ROUTER_CONSUMER`` | router | consumer name: cursor ``tt:cursor:<name>``, dead letters ``tt:dlq:<name>`` |
| ``TT_ROUTER_MAX_TRADE_AGE_S`` | 300 | a leader trade older than this (venue time) is skipped, TRADE_TOO_OLD |
| ``TT_ROUTER_MARKET_INFO_TTL_S`` | 300 | older market info is used and refreshed from the CLOB in the background |
| ``TT_ROUTER_BALANCE_CACHE_TTL_S`` | 30 | how long a wallet's balance from the balance API is cached |
| ``TT_ROUTER_HTTP_TIMEOUT_S`` | 2 | total timeout of one CLOB or balance API request |
| ``TT_ROUTER_DEDUPE_TTL_S`` | 86400 | TTL of the ``tt:router:routed:{leader_trade_id}`` markers |
| ``TT_ROUTER_STREAM_MAXLEN`` | 1000000 | approximate length cap of ``tt:stream:routed_trades`` |
| ``TT_ROUTER_DEFAULT_MAX_SLIPPAGE_BPS`` | 200 | slippage tolerance of copied orders when the subscription sets none |
| ``TT_ROUTER_MARKETABLE_BUY_MIN_USD`` | 1 | BUY minimum is max(min size × price, this); smaller copies are skipped |
| ``TT_MAX_ORDER_USD`` | 1000 | operator ceiling per order: copies are cut to it (SELL: size × leader price), noted |
| ``TT_ROUTER_INDEX_CHECK_INTERVAL_S`` | 5 | hot-index version check after this long without a change message |
| ``TT_ROUTER_OUTBOX_INTERVAL_S`` | 2 | period of the outbox sweep (re-emits persisted, never appended trades) |
| ``TT_ROUTER_OUTBOX_MIN_AGE_S`` | 2 | the sweep only takes rows routed at least this long ago |
| ``TT_ROUTER_HANDLER_ATTEMPTS`` | 20 | tries per leader trade before it is dead-lettered |
| ``TT_ROUTER_REDIS_TIMEOUT_S`` | 5 | connect and command timeout of the hot-path Redis connection |
| ``TT_ROUTER_MAX_BATCH`` | 256 | most leader trades routed together |
| ``TT_ROUTER_LOG_LEVEL`` | INFO | log level |
| ``TT_ROUTER_METRICS_HOST`` / ``_PORT`` | 127.0.0.1 / 9162 | Prometheus ``/metrics`` (``common.metrics``) |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from common.config import (
    DEFAULT_MAX_ORDER_USD,
    ConfigError,
    Secret,
    StorageSettings,
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
from common.streams import START_NEW, START_OLDEST


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the router needs to run."""

    storage: StorageSettings
    security: GrpcSecurity
    grpc_port: int
    ingest_target: str
    clob_api_url: str
    insiders_api_url: str
    insiders_api_token: Secret
    start_cursor: str = START_OLDEST
    consumer_name: str = "router"
    max_trade_age_s: float = 300.0
    market_info_ttl_s: float = 300.0
    balance_cache_ttl_s: float = 30.0
    http_timeout_s: float = 2.0
    dedupe_ttl_s: int = 86_400
    stream_maxlen: int = 1_000_000
    default_max_slippage_bps: int = 200
    marketable_buy_min_usd: Decimal = Decimal(1)
    max_order_usd: Decimal = DEFAULT_MAX_ORDER_USD
    index_check_interval_s: float = 5.0
    outbox_interval_s: float = 2.0
    outbox_min_age_s: float = 2.0
    handler_attempts: int = 20
    redis_timeout_s: float = 5.0
    max_batch: int = 256
    grpc_host: str = "127.0.0.1"
    log_level: str = "INFO"
    metrics: MetricsSettings = METRICS_OFF

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate ``TT_ROUTER_*`` and the shared variables."""
        env = os.environ if env is None else env
        start = env_str(env, "TT_ROUTER_START", "oldest").lower()
        if start not in {"oldest", "new"}:
            raise ConfigError(f"TT_ROUTER_START must be 'oldest' or 'new', got {start!r}")
        security = GrpcSecurity.from_env(env)
        grpc_host = env_str(env, "TT_ROUTER_GRPC_HOST", "127.0.0.1")
        security.check_bind(grpc_host, "TT_ROUTER_GRPC_HOST")
        return cls(
            storage=StorageSettings.from_env(env),
            security=security,
            grpc_port=grpc_port(env, "router"),
            ingest_target=grpc_target(env, "ingest"),
            clob_api_url=env_url(env, "TT_CLOB_API_URL", "https://clob.polymarket.com"),
            insiders_api_url=env_url(env, "TT_INSIDERS_API_URL", ""),
            insiders_api_token=Secret(env_str(env, "TT_INSIDERS_API_TOKEN")),
            start_cursor=START_OLDEST if start == "oldest" else START_NEW,
            consumer_name=env_str(env, "TT_ROUTER_CONSUMER", "router"),
            max_trade_age_s=env_float_seconds(env, "TT_ROUTER_MAX_TRADE_AGE_S", 300.0, minimum=1.0),
            market_info_ttl_s=env_float_seconds(env, "TT_ROUTER_MARKET_INFO_TTL_S", 300.0, minimum=1.0),
            balance_cache_ttl_s=env_float_seconds(env, "TT_ROUTER_BALANCE_CACHE_TTL_S", 30.0),
            http_timeout_s=env_float_seconds(env, "TT_ROUTER_HTTP_TIMEOUT_S", 2.0, minimum=0.05),
            dedupe_ttl_s=env_int(env, "TT_ROUTER_DEDUPE_TTL_S", 86_400, minimum=60),
            stream_maxlen=env_int(env, "TT_ROUTER_STREAM_MAXLEN", 1_000_000, minimum=1000),
            default_max_slippage_bps=env_int(env, "TT_ROUTER_DEFAULT_MAX_SLIPPAGE_BPS", 200, minimum=0,
                                             maximum=10_000),
            marketable_buy_min_usd=env_decimal(env, "TT_ROUTER_MARKETABLE_BUY_MIN_USD", Decimal(1),
                                               minimum=Decimal(0)),
            max_order_usd=max_order_usd(env),
            index_check_interval_s=env_float_seconds(env, "TT_ROUTER_INDEX_CHECK_INTERVAL_S", 5.0,
                                                     minimum=0.05),
            outbox_interval_s=env_float_seconds(env, "TT_ROUTER_OUTBOX_INTERVAL_S", 2.0, minimum=0.05),
            outbox_min_age_s=env_float_seconds(env, "TT_ROUTER_OUTBOX_MIN_AGE_S", 2.0),
            handler_attempts=env_int(env, "TT_ROUTER_HANDLER_ATTEMPTS", 20, minimum=1),
            redis_timeout_s=env_float_seconds(env, "TT_ROUTER_REDIS_TIMEOUT_S", 5.0, minimum=0.05),
            max_batch=env_int(env, "TT_ROUTER_MAX_BATCH", 256, minimum=1, maximum=10_000),
            grpc_host=grpc_host,
            log_level=env_str(env, "TT_ROUTER_LOG_LEVEL", "INFO").upper(),
            metrics=MetricsSettings.from_env(env, "router"),
        )
