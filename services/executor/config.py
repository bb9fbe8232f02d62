"""Executor settings: what an operator sets (environment), and the tuning constants (code, :class:`Tuning`).

| variable | default | meaning |
|---|---|---|
| ``TT_EXECUTOR_HOST`` | 127.0.0.1 | gRPC bind address (not loopback: TLS or ``TT_GRPC_ALLOW_INSECURE_BIND``) |
| ``TT_EXECUTOR_GRPC_PORT`` | 50053 | gRPC port (0 = any free port) |
| ``TT_ROUTER_GRPC_TARGET`` | 127.0.0.1:<router port> | where ``StreamRoutedTrades`` is read |
| ``TT_INGEST_GRPC_TARGET`` | 127.0.0.1:<ingest port> | where ``StreamMarketResolutions`` is read |
| ``TT_INSIDERS_API_URL`` / ``TT_INSIDERS_API_TOKEN`` | unset | the live venue; unset: LIVE orders are REJECTED |
| ``TT_MAX_ORDER_USD`` | 1000 | ceiling per order: larger is REJECTED ``MAX_ORDER_USD_EXCEEDED`` (an exit is cut) |
| ``TT_RECONCILE_INTERVAL_S`` | 300 | each LIVE wallet's venue positions are reconciled this often (0 = never) |
| ``TT_AUTO_REDEEM`` | true | redeem resolved LIVE positions' winning shares (false: recorded PENDING, not sent) |
| ``TT_PAPER_FEE_BPS`` | 0 | fee of paper fills (shares on BUYs, USD on SELLs): 0 to 1000 (10 %; more is a typo) |
| ``TT_INTERNAL_TOKEN``, ``TT_GRPC_TLS_*`` | ``.run/internal_token`` | internal authentication (``common.grpcauth``) |
| ``DATABASE_URL`` / ``REDIS_URL`` | embedded servers' files | storage (``common.config.StorageSettings``) |
| ``TT_EXECUTOR_METRICS_HOST`` / ``_PORT`` | 127.0.0.1 / 9163 | Prometheus ``/metrics`` (``common.metrics``) |

The rest are the tuning constants of :class:`Tuning` below (``common.tuning``).
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
from common.tuning import tune, tuning_from_env

ROUTED_SOURCES = ("log", "router")
MAX_PAPER_FEE_BPS = Decimal(1000)  # 10 %: the venue's fees are a few %; 100 % or more books no or negative shares


@dataclass(frozen=True, slots=True)
class Tuning(TrimTuning):
    """The executor's tuning constants (``common.tuning``)."""

    routed_source: str = tune("router", "router: RouterService.StreamRoutedTrades over gRPC (the contract); log: the "
                              "router's Redis log read directly, which saves both processes a gRPC message per trade",
                              choices=ROUTED_SOURCES)
    consumer_name: str = tune("executor", "names the consumer's cursor (tt:cursor:<name>) and dead letters")
    start_oldest: bool = tune(True, "a first start (no saved cursor) reads the routed log from its oldest entry, so "
                              "trades routed before the executor ever ran are not lost")
    consumer_max_batch: int = tune(256, "routed trades admitted together: one journal transaction for a burst",
                                   minimum=1)
    cursor_save_interval_s: float = tune(0.1, "a cursor saved at most this often; a restart re-reads at most this "
                                         "much, which intents make harmless")
    max_order_age_s: float = tune(60.0, "an order older than this since it was routed is REJECTED STALE_ORDER: a "
                                  "copy a minute late is a different trade (0 = off)")
    min_depth_ratio: Decimal = tune(Decimal("0.5"), "a copy with less than this share of its size within its "
                                    "slippage is skipped INSUFFICIENT_DEPTH rather than sent to fill badly",
                                    minimum=Decimal(0), maximum=Decimal(1))
    book_max_age_s: float = tune(20.0, "a stored book is priced on only when the venue confirmed it this lately "
                                 "(ingest re-confirms quiet books every few seconds)", minimum=0.1)
    book_wait_s: float = tune(1.0, "a stale book's resync is awaited this long, then a LIVE copy is priced on the "
                              "leader's price (0 = not awaited)")
    post_timeout_s: float = tune(5.0, "a POST unanswered this long is UNKNOWN, settled by query, never re-sent "
                                 "blindly", minimum=0.01)
    query_timeout_s: float = tune(5.0, "deadline of one status query", minimum=0.01)
    max_submit_attempts: int = tune(4, "POSTs of an order on retryable answers (5xx, 429) before it is settled by "
                                    "query", minimum=1, maximum=20)
    retry_base_s: float = tune(0.1, "first retry backoff (doubling, jittered)", minimum=0.001)
    retry_cap_s: float = tune(2.0, "retry backoff cap: a copy is worth little after a few seconds", minimum=0.001)
    breaker_threshold: int = tune(5, "consecutive venue failures that open the circuit breaker", minimum=1)
    breaker_open_s: float = tune(60.0, "open period before one half-open probe; long enough not to hammer a venue "
                                 "that is down", minimum=0.01)
    breaker_wait_s: float = tune(5.0, "least time an order waits at an open breaker before it is rejected")
    resubmit_max_age_s: float = tune(30.0, "an order may be re-POSTed or wait at the breaker until this old; later "
                                     "it is rejected rather than filled at a stale price")
    settle_interval_s: float = tune(1.0, "status query period of an UNKNOWN order", minimum=0.001)
    lost_after: int = tune(3, "consecutive not-found answers that settle an UNKNOWN order (LOST, or re-POST while "
                           "young)", minimum=1)
    placed_lost_after_s: float = tune(300.0, "a placed order found by neither id this long is LOST (0 = never)")
    poll_initial_s: float = tune(0.2, "first status query of a placed order: most fill within a second",
                                 minimum=0.001)
    poll_max_s: float = tune(2.0, "status query period of a placed order, backed off to this", minimum=0.001)
    max_status_queries: int = tune(256, "status queries of placed orders in flight at once", minimum=1)
    max_inflight: int = tune(2048, "POSTs in flight at once: bounds memory and the venue's load in a 10k fan-out",
                             minimum=1)
    max_open_orders: int = tune(15_000, "the next routed trade waits while this many orders are open here (running, "
                                "or placed and polled until final): the backlog of an outage waits in the routed "
                                "log, not in memory (a 10,000-follower fan-out never waits; 0 = no bound)", minimum=0)
    admission_wait_max_s: float = tune(10.0, "longest wait for that room; a trade still waiting is admitted anyway "
                                       "(logged, counted)", minimum=0.1)
    gc_pause_max_s: float = tune(3.0, "automatic garbage collection stays off at most this long while a fan-out's "
                                 "POSTs are written (a fifth of the executor's CPU at 10,000 followers); 0: never",
                                 minimum=0.0)
    answer_defer_s: float = tune(1.0, "while a fan-out's POSTs are written, answers to the first ones wait (unread) at "
                                 "most this long, unless POSTs wait for an in-flight slot", minimum=0.0)
    http_connections: int = tune(0, "cap of connections to the Insiders API (0 = no cap: a fan-out opens what it "
                                 "needs)", minimum=0)
    http_warm_connections: int = tune(0, "connections opened at start-up, so the first burst pays no handshakes",
                                      minimum=0)
    submit_wait_s: float = tune(10.0, "SubmitOrder waits this long for the order's first event")
    journal_batch: int = tune(1000, "state changes written in one transaction at most", minimum=1)
    events_durable_after_s: float = tune(2.0, "an appended order event leaves the outbox this long after its append, "
                                         "once Redis is seen to be the same server: appendfsync everysec has it on "
                                         "disk by then, and a server that changed gets it again", minimum=1.0)
    journal_min_interval_s: float = tune(0.05, "least time between two journal transactions under load: batches a "
                                         "burst's changes")
    grace_s: float = tune(5.0, "graceful-shutdown grace: no POST starts once stopping; those at the venue get this "
                          "long to be answered (after gRPC calls in progress got as long to end)")
    lease_poll_s: float = tune(0.5, "a standby tries to take the lease this often", minimum=0.01)
    lease_check_s: float = tune(1.0, "the active executor checks its lease this often and exits once another took "
                                "it (at most 2: a venue call waits for a check once the last is 4 s old)",
                                minimum=0.01, maximum=2.0)
    reconcile_refresh_s: float = tune(60.0, "the LIVE wallets to reconcile are read again this often (or every "
                                      "TT_RECONCILE_INTERVAL_S, when shorter)", minimum=0.1)
    redeem_not_found_s: float = tune(600.0, "a submitted redemption whose status queries the venue answers 404, "
                                     "three at least and all in a row for this long, ends FAILED "
                                     "REDEMPTION_NOT_FOUND (alerted)", minimum=0)
    redeem_overdue_failures: int = tune(100, "a redemption whose calls (its POST, or its status queries) fail this "
                                         "many times in a row (5xx, 408/425/429, a 409 naming no final refusal, "
                                         "timeouts, the breaker open...; retried with the same Idempotency-Key, "
                                         "1 s to 5 min apart) is overdue: alerted once, still PENDING/SUBMITTED "
                                         "and retried every 5 min until an answer", minimum=1)
    redeem_overdue_s: float = tune(21600.0, "... or once its first failure in a row is this old, whichever comes "
                                   "first (a submitted redemption still not final this long after the venue took it "
                                   "is overdue too): a venue outage of hours is waited out in silence, a day of "
                                   "winnings not redeemed is not", minimum=1.0)
    leftover_redeem_grace_s: float = tune(120.0, "winning shares still redeemable at the venue this long after the "
                                          "market's last redemption round ended get another round", minimum=0)

    def __post_init__(self) -> None:
        if self.poll_max_s < self.poll_initial_s:
            raise ValueError("TT_TUNE_EXECUTOR_POLL_MAX_S must be >= TT_TUNE_EXECUTOR_POLL_INITIAL_S")


@dataclass(frozen=True, slots=True, repr=False)
class Settings:
    """Everything the executor runs with: the operator's settings and the tuning constants."""

    host: str
    security: GrpcSecurity
    grpc_port: int
    router_target: str
    ingest_target: str
    reconcile_interval_s: float
    auto_redeem: bool
    insiders_url: str
    insiders_token: Secret
    paper_fee_bps: Decimal
    max_order_usd: Decimal
    tuning: Tuning = Tuning()
    metrics: MetricsSettings = METRICS_OFF

    def __repr__(self) -> str:  # logged at start-up: the Insiders API URL without its credentials
        return settings_repr(self)

    @property
    def live_configured(self) -> bool:
        """True when live orders have somewhere to go."""
        return bool(self.insiders_url)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate the operator's variables and the tuning overrides."""
        env = os.environ if env is None else env
        url = env_url(env, "TT_INSIDERS_API_URL", "")
        token = Secret(env_str(env, "TT_INSIDERS_API_TOKEN"))
        if url and not token:
            raise ConfigError("TT_INSIDERS_API_TOKEN must be set when TT_INSIDERS_API_URL is")
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
            paper_fee_bps=env_decimal(env, "TT_PAPER_FEE_BPS", Decimal(0), minimum=Decimal(0),
                                      maximum=MAX_PAPER_FEE_BPS),
            max_order_usd=max_order_usd(env),
            tuning=tuning_from_env(Tuning, "executor", env),
            metrics=MetricsSettings.from_env(env, "executor"),
        )
