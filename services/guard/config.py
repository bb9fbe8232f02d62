"""Settings of the guard service, read once from the environment.

| variable | default | meaning |
|---|---|---|
| ``TT_GUARD_HOST`` | 127.0.0.1 | gRPC bind address |
| ``TT_GUARD_GRPC_PORT`` | 50054 | gRPC port (0 = any free port) |
| ``TT_INGEST_GRPC_TARGET`` / ``TT_EXECUTOR_GRPC_TARGET`` / ``TT_CONTROL_GRPC_TARGET`` | 127.0.0.1:<port> | upstreams |
| ``DATABASE_URL`` / ``REDIS_URL`` | embedded servers' files | storage |
| ``TT_INTERNAL_TOKEN`` | ``.run/internal_token`` | internal tokens (``common.grpcauth``): port, calls out |
| ``TT_GRPC_ALLOW_INSECURE_BIND`` / ``TT_GRPC_TLS_*`` | false / unset | a non-loopback host needs TLS or this opt-in |
| ``TT_GUARD_METRICS_HOST`` / ``_PORT`` | 127.0.0.1 / 9164 | Prometheus ``/metrics`` (``common.metrics``) |
| ``TT_GUARD_CRASH_AFTER`` | "" | test only: ``decision`` / ``submit`` exits the process (137) right after that step |

The rest are the tuning constants of :class:`Tuning` below (``common.tuning``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from common.config import ConfigError, StorageSettings, env_str, grpc_port, grpc_target
from common.grpcauth import GrpcSecurity
from common.metrics import METRICS_OFF, MetricsSettings
from common.streams import START_NEW, START_OLDEST
from common.tuning import tune, tuning_from_env
from services.guard.firing import CRASH_POINTS, UNRECORDED_MAX_AGE_S


@dataclass(frozen=True, slots=True)
class Tuning:
    """Guard's tuning constants (``common.tuning``); durations in seconds."""

    tick_source: str = tune("log", "log: ingest's tick log in Redis, read in batches (the fast path); grpc: "
                            "StreamPriceTicks", choices=("log", "grpc"))
    orders_source: str = tune("grpc", "grpc: StreamOrderEventBatches; log: the executor's log in Redis",
                              choices=("grpc", "log"))
    orders_gather_s: float = tune(0.025, "least time between order-event reads (log source), and the batch in "
                                  "which SELL answers settle")
    tick_max_age_s: float = tune(2.0, "a tick older than this since ingest received it never fires: a price that "
                                 "old may be gone", minimum=0.001)
    replay_margin_s: float = tune(0.002, "a price ingest left out and sends again is read only when it came this long "
                                  "after the asset's latest trigger arm or change: set it to how far guard's and "
                                  "ingest's clocks may differ (the prices of a band's few milliseconds in flight "
                                  "closer to the arm than this are missed)", minimum=0.0)
    book_max_age_s: float = tune(30.0, "at catch-up a stored book older than this never fires; nor do the perf "
                                 "rules trust its mark for a profit-scale or a resume baseline", minimum=0.001)
    perf_interval_s: float = tune(5.0, "performance rules (and stats.unrealizedPnlUsd) are evaluated this often",
                                  minimum=0.001)
    mark_flush_s: float = tune(10.0, "risen trailing high-water marks are persisted this often (the rises a crash "
                               "loses are taken back from the tick log at the next start, within "
                               "mark_replay_max_s)", minimum=0.001)
    mark_replay_max_s: float = tune(300.0, "at start-up, trailing marks a crash lost (or prices logged while guard "
                                    "was down would have lifted) are taken back from the tick log since the last "
                                    "complete mark save, reading at most this far back (about 12 µs a logged tick "
                                    "here: 5 minutes at 1,000 logged ticks/s add 3.6 s to the start)", minimum=0.0)
    mark_replay_arm_margin_s: float = tune(1.0, "the start-up mark replay counts a price for a stop only when it "
                                           "came this long after the stop's row last changed: the row's time is "
                                           "read before its transaction, and a live guard arms the stop once the "
                                           "change is committed and announced (a lift left out can only make a "
                                           "stop sell later, never earlier)",
                                           minimum=0.0)
    mark_replay_fallback_s: float = tune(60.0, "with no mark save recorded (a first start, Redis lost it), the "
                                         "start-up mark replay reads this much of the tick log", minimum=0.0)
    mark_flush_rows: int = tune(200, "risen marks written per statement (each its own transaction): a fire that "
                                "waits for one of those rows' locks waits for a few milliseconds", minimum=1)
    mark_flush_duty: float = tune(0.25, "largest share of a mark flush's time spent writing: after each statement "
                                  "it pauses, so a burst of risen marks (a restart, a market-wide move) leaves "
                                  "the cores to the fires", minimum=0.01, maximum=1.0)
    bookkeeping_interval_s: float = tune(0.05, "least time between two runs of the event outbox and the "
                                         "'SELL acknowledged' marker")
    submitted_mark_delay_s: float = tune(1.0, "an acknowledged SELL is marked this late (a settled one needs no "
                                         "mark)")
    trigger_check_s: float = tune(5.0, "safety-net comparison of tt:triggers:version, behind the change messages",
                                  minimum=0.001)
    watch_verify_s: float = tune(30.0, "the watched-asset set in Redis (tt:watch:triggers) is compared with what guard "
                                 "wrote this often: assets it lacks are written again", minimum=0.01)
    max_slippage_bps: int = tune(300, "slippage tolerance of trigger SELLs in the executor's depth check: an exit "
                                 "must go through", minimum=0, maximum=10_000)
    submit_timeout_s: float = tune(5.0, "deadline of SubmitOrder", minimum=0.001)
    unrecorded_sell_max_age_s: float = tune(UNRECORDED_MAX_AGE_S, "a SELL of a fire whose record failed, sent "
                                            "and not answered (a deadline), counts as in flight on its position "
                                            "until the executor's order of it is seen, or this long: past its "
                                            "max_order_age_s (60 s) the executor refuses the order", minimum=1.0)
    control_timeout_s: float = tune(5.0, "deadline of calls to control", minimum=0.001)
    fire_concurrency: int = tune(8, "fires recorded at once (each holds a PostgreSQL connection)", minimum=1,
                                 maximum=256)
    db_pool_max: int = tune(12, "PostgreSQL connections: the fires, plus the bookkeeping and the reads",
                            minimum=2, maximum=200)
    market_cache_s: float = tune(60.0, "market info (tick size, minimum size) is cached this long")
    orders_start: str = tune("oldest", "where a first start of the order-event consumer begins",
                             choices=("oldest", "new"))
    stream_maxlen: int = tune(1_000_000, "length cap of tt:stream:trigger_events", minimum=1000)
    grace_s: float = tune(5.0, "graceful-shutdown grace")
    stats_log_s: float = tune(60.0, "period of the 'guard stats' log line (counters, tick lag, fire stages)",
                              minimum=0.001)
    bands: bool = tune(True, "publish price bands (common.bands) so ingest logs only the ticks that may matter; "
                       "false: every tick is logged")
    band_beat_s: float = tune(1.0, "least often a band write goes out: it renews the lease and says how far "
                              "ticks were read", minimum=0.001)
    band_lease_s: float = tune(5.0, "no band write for this long and ingest logs every tick (more than twice the "
                               "beat)", minimum=0.001)

    def __post_init__(self) -> None:
        if self.fire_concurrency >= self.db_pool_max:
            raise ValueError("TT_TUNE_GUARD_FIRE_CONCURRENCY must be < TT_TUNE_GUARD_DB_POOL_MAX")
        if self.band_lease_s <= 2 * self.band_beat_s:
            raise ValueError("TT_TUNE_GUARD_BAND_LEASE_S must be more than twice TT_TUNE_GUARD_BAND_BEAT_S")

    @property
    def orders_start_cursor(self) -> str:
        """Where a first start of the order-event consumer begins."""
        return START_OLDEST if self.orders_start == "oldest" else START_NEW


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
    crash_after: str = ""
    tuning: Tuning = Tuning()
    metrics: MetricsSettings = METRICS_OFF

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the variables; raise ConfigError naming the bad one."""
        env = os.environ if env is None else env
        crash = env_str(env, "TT_GUARD_CRASH_AFTER").lower()
        if crash not in CRASH_POINTS:
            raise ConfigError(f"TT_GUARD_CRASH_AFTER must be one of {sorted(CRASH_POINTS)}, got {crash!r}")
        security = GrpcSecurity.from_env(env)
        host = env_str(env, "TT_GUARD_HOST", "127.0.0.1")
        security.check_bind(host, "TT_GUARD_HOST")
        return cls(
            storage=StorageSettings.from_env(env),
            security=security,
            host=host,
            grpc_port=grpc_port(env, "guard"),
            ingest_target=grpc_target(env, "ingest"),
            executor_target=grpc_target(env, "executor"),
            control_target=grpc_target(env, "control"),
            crash_after=crash,
            tuning=tuning_from_env(Tuning, "guard", env),
            metrics=MetricsSettings.from_env(env, "guard"),
        )
