"""Router settings: what an operator sets (environment), and the tuning constants (code, :class:`Tuning`).

| variable | default | meaning |
|---|---|---|
| ``TT_ROUTER_GRPC_HOST`` | 127.0.0.1 | gRPC bind address (not loopback: TLS or ``TT_GRPC_ALLOW_INSECURE_BIND``) |
| ``TT_ROUTER_GRPC_PORT`` | 50052 | gRPC port of ``StreamRoutedTrades`` (0 = any free port) |
| ``TT_INGEST_GRPC_TARGET`` | 127.0.0.1:<ingest port> | upstream ingest (``StreamLeaderTrades``) |
| ``TT_CLOB_API_URL`` | https://clob.polymarket.com | CLOB REST API: market info and books |
| ``TT_INSIDERS_API_URL`` / ``_TOKEN`` | unset | balance API for PERCENT_OF_BALANCE; unset: funded balances only |
| ``TT_MAX_ORDER_USD`` | 1000 | ceiling per order: copies are cut to it (SELL: size × leader price), noted |
| ``TT_ROUTER_MAX_TRADE_AGE_S`` | 300 | a leader BUY older than this (venue time) is skipped, TRADE_TOO_OLD |
| ``TT_ROUTER_MAX_EXIT_AGE_S`` | 21600 (*) | a leader SELL older than this is skipped, TRADE_TOO_OLD (>= the above) |
| ``TT_ROUTER_DEFAULT_MAX_SLIPPAGE_BPS`` | 200 | slippage tolerance of copies whose subscription sets none |
| ``TT_ROUTER_MARKETABLE_BUY_MIN_USD`` | 1 | BUY minimum is max(min size × price, this); smaller copies are skipped |
| ``TT_INTERNAL_TOKEN``, ``TT_GRPC_TLS_*`` | ``.run/internal_token`` | internal authentication (``common.grpcauth``) |
| ``DATABASE_URL`` / ``REDIS_URL`` | embedded servers' files | storage (``common.config.StorageSettings``) |
| ``TT_ROUTER_METRICS_HOST`` / ``_PORT`` | 127.0.0.1 / 9162 | Prometheus ``/metrics`` (``common.metrics``) |

(*) or ``TT_TUNE_ROUTER_DEDUPE_TTL_S`` (the routed marker's lifetime) when that is lower.

The rest are the tuning constants of :class:`Tuning` below (``common.tuning``).
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
    settings_repr,
)
from common.grpcauth import GrpcSecurity
from common.logtrim import TrimTuning
from common.metrics import METRICS_OFF, MetricsSettings
from common.streams import START_NEW, START_OLDEST
from common.tuning import tune, tuning_from_env

# 6 h: a leader's exit that comes this late (a backlog routed after the router or Redis was down for hours, one
# the poller brought after a long stall) is still mirrored, which covers an outage an operator is paged for and
# fixes; past it, what to do with the position is the operator's call (guard's TP/SL and settlement still apply).
# Far inside the routed marker's day (TT_TUNE_ROUTER_DEDUPE_TTL_S), which must outlive it.
DEFAULT_MAX_EXIT_AGE_S = 21_600.0


@dataclass(frozen=True, slots=True)
class Tuning(TrimTuning):
    """The router's tuning constants (``common.tuning``)."""

    start: str = tune("oldest", "a first start (no saved cursor) routes the trade log from its oldest entry, so "
                      "trades seen before the router ever ran are not lost (new: only later ones)",
                      choices=("oldest", "new"))
    consumer_name: str = tune("router", "names the consumer's cursor (tt:cursor:<name>) and dead letters")
    market_info_ttl_s: float = tune(300.0, "older market info (tick, minimum size) is still used and refreshed "
                                    "from the CLOB in the background: both change rarely", minimum=1.0)
    balance_cache_ttl_s: float = tune(30.0, "a wallet's balance from the balance API is reused this long: one "
                                      "GET per follower per trade would be the fan-out's cost")
    http_timeout_s: float = tune(2.0, "total timeout of one CLOB or balance API request on the routing path",
                                 minimum=0.05)
    dedupe_ttl_s: int = tune(86_400, "how long a routed leader trade's marker (tt:router:routed:{id}) is kept: "
                             "far past the poller's look-back and TRADE_TOO_OLD (at least "
                             "TT_ROUTER_MAX_EXIT_AGE_S)", minimum=60)
    stream_maxlen: int = tune(1_000_000, "approximate length cap of tt:stream:routed_trades, the last bound when "
                              "the trimming by readers (stream_keep_s) cannot trim: entries are 1 to 600 KB",
                              minimum=1000)
    index_check_interval_s: float = tune(5.0, "the hot index's version is checked after this long without a "
                                         "change message, so a lost message costs seconds", minimum=0.05)
    replan_interval_s: float = tune(2.0, "the routing statements' cached plans are dropped this often and made again "
                                    "on their next use (0: never): a plan made while a table was tiny can read a "
                                    "grown one through the wrong index until the next ANALYZE", minimum=0.0)
    outbox_interval_s: float = tune(2.0, "period of the outbox sweep that appends routed trades persisted but "
                                    "never appended (a crash between the two)", minimum=0.05)
    outbox_min_age_s: float = tune(2.0, "the sweep only takes rows routed at least this long ago, so it never "
                                   "races the normal path")
    handler_attempts: int = tune(20, "tries per leader trade (outages excepted) before it is dead-lettered, so one "
                                 "poison trade cannot stall the stream", minimum=1)
    redis_timeout_s: float = tune(5.0, "connect and command timeout of the hot-path Redis connection",
                                  minimum=0.05)
    max_batch: int = tune(256, "most leader trades routed together (one Redis round trip for a burst)",
                          minimum=1, maximum=10_000)


@dataclass(frozen=True, slots=True, repr=False)
class Settings:
    """Everything the router needs to run: the operator's settings and the tuning constants."""

    storage: StorageSettings
    security: GrpcSecurity
    grpc_port: int
    ingest_target: str
    clob_api_url: str
    insiders_api_url: str
    insiders_api_token: Secret
    max_trade_age_s: float = 300.0
    max_exit_age_s: float = DEFAULT_MAX_EXIT_AGE_S
    default_max_slippage_bps: int = 200
    marketable_buy_min_usd: Decimal = Decimal(1)
    max_order_usd: Decimal = DEFAULT_MAX_ORDER_USD
    grpc_host: str = "127.0.0.1"
    tuning: Tuning = Tuning()
    metrics: MetricsSettings = METRICS_OFF

    def __post_init__(self) -> None:
        if self.max_exit_age_s < self.max_trade_age_s:
            raise ConfigError(f"TT_ROUTER_MAX_EXIT_AGE_S ({self.max_exit_age_s:g}) must be >= "
                              f"TT_ROUTER_MAX_TRADE_AGE_S ({self.max_trade_age_s:g}): a leader's exit would be "
                              "skipped where its entry was copied")
        if self.max_exit_age_s > self.tuning.dedupe_ttl_s:
            raise ConfigError(f"TT_ROUTER_MAX_EXIT_AGE_S ({self.max_exit_age_s:g}) must be <= "
                              f"TT_TUNE_ROUTER_DEDUPE_TTL_S ({self.tuning.dedupe_ttl_s}): a leader's SELL delivered "
                              "again after its routed marker expired would be copied again")

    def __repr__(self) -> str:  # logged at start-up: the URLs without their credentials
        return settings_repr(self)

    @property
    def start_cursor(self) -> str:
        """Where a first start of the trade consumer begins."""
        return START_OLDEST if self.tuning.start == "oldest" else START_NEW

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate the operator's variables and the tuning overrides."""
        env = os.environ if env is None else env
        security = GrpcSecurity.from_env(env)
        grpc_host = env_str(env, "TT_ROUTER_GRPC_HOST", "127.0.0.1")
        security.check_bind(grpc_host, "TT_ROUTER_GRPC_HOST")
        max_trade_age_s = env_float_seconds(env, "TT_ROUTER_MAX_TRADE_AGE_S", 300.0, minimum=1.0)
        tuning = tuning_from_env(Tuning, "router", env)
        # unset, the exit age fits a routed marker a deployment shortened (the router must still start)
        default_exit_age_s = max(max_trade_age_s, min(DEFAULT_MAX_EXIT_AGE_S, float(tuning.dedupe_ttl_s)))
        return cls(
            storage=StorageSettings.from_env(env),
            security=security,
            grpc_port=grpc_port(env, "router"),
            ingest_target=grpc_target(env, "ingest"),
            clob_api_url=env_url(env, "TT_CLOB_API_URL", "https://clob.polymarket.com"),
            insiders_api_url=env_url(env, "TT_INSIDERS_API_URL", ""),
            insiders_api_token=Secret(env_str(env, "TT_INSIDERS_API_TOKEN")),
            max_trade_age_s=max_trade_age_s,
            max_exit_age_s=env_float_seconds(env, "TT_ROUTER_MAX_EXIT_AGE_S", default_exit_age_s, minimum=1.0),
            default_max_slippage_bps=env_int(env, "TT_ROUTER_DEFAULT_MAX_SLIPPAGE_BPS", 200, minimum=0,
                                             maximum=10_000),
            marketable_buy_min_usd=env_decimal(env, "TT_ROUTER_MARKETABLE_BUY_MIN_USD", Decimal(1),
                                               minimum=Decimal(0)),
            max_order_usd=max_order_usd(env),
            grpc_host=grpc_host,
            tuning=tuning,
            metrics=MetricsSettings.from_env(env, "router"),
        )
