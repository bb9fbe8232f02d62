"""Ingest settings from the environment (one frozen dataclass; invalid values raise ConfigError).

The operator's variables (feed URLs, recording, the gRPC and metrics ports) are in the Configuration table of
``services/ingest/README.md``; the rest are the tuning constants of :class:`Tuning` below (``common.tuning``).
``TT_ROUTER_MAX_TRADE_AGE_S`` is the router's: how far back the poller reaches is derived from it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from common.config import ConfigError, env_float_seconds, env_str, env_url, grpc_port, settings_repr
from common.grpcauth import GrpcSecurity
from common.logtrim import TrimTuning
from common.metrics import METRICS_OFF, MetricsSettings
from common.tuning import tune, tuning_from_env

DEFAULT_RTDS_URL = "wss://ws-live-data.polymarket.com"
DEFAULT_CLOB_WS_URL = "wss://ws-subscriptions-clob.polymarket.com/ws/market"
DEFAULT_CLOB_API_URL = "https://clob.polymarket.com"
DEFAULT_DATA_API_URL = "https://data-api.polymarket.com"
WS_SCHEMES = ("ws", "wss")
DEFAULT_USER_AGENT = "tradingtools-ingest/2.0 (+copy-trading safety net)"
DEFAULT_MAX_TRADE_AGE_S = 300.0  # the router's default (tests/ingest/test_config.py keeps them equal)
MAX_TRADE_AGE_VAR = "TT_ROUTER_MAX_TRADE_AGE_S"


@dataclass(frozen=True, slots=True)
class Tuning(TrimTuning):
    """Ingest's tuning constants (``common.tuning``); durations in seconds, sizes in bytes."""

    # RTDS leader feed
    rtds_ping_interval_s: float = tune(5.0, "application ping of the leader feed", minimum=0.001)
    rtds_ping_text: str = tune("PING", "the ping's text (the venue answers 'ping' too)")
    rtds_stall_s: float = tune(15.0, "no data for this long and the leader socket is closed and reopened: a "
                               "socket can stay open and silent; activity/trades alone silent this long too "
                               "(once it delivered), then each further silence is polled for", minimum=0.001)
    rtds_extra_topics: str = tune("", "extra topic:type subscriptions, e.g. crypto_prices:update as a liveness "
                                  "topic")
    reconnect_base_s: float = tune(0.25, "first wait before a reconnect (doubling, jittered)", minimum=0.001)
    reconnect_cap_s: float = tune(30.0, "longest wait before a reconnect", minimum=0.001)
    max_frame_bytes: int = tune(1_048_576, "larger leader-trade frames are counted TOO_LARGE; a book frame may be 16 "
                                "times this (a subscription's snapshots come in one), which also closes a socket",
                                minimum=1024)
    # CLOB book feed
    clob_enabled: bool = tune(True, "the book feed (off: no books, no price ticks)")
    clob_ping_interval_s: float = tune(10.0, "PING of the book socket", minimum=0.001)
    clob_stall_s: float = tune(30.0, "book socket silent this long: reconnect", minimum=0.001)
    book_stale_s: float = tune(30.0, "a book not updated this long is stale", minimum=0.001)
    book_snapshot_grace_s: float = tune(2.0, "a book without a snapshot this long after (re)subscribing is read "
                                        "from REST", minimum=0.001)
    book_beat_interval_s: float = tune(1.0, "the feed's beat (tt:bookfeed) is written this often while the socket "
                                       "is up", minimum=0.001)
    book_depth_levels: int = tune(100, "levels per side stored in Redis", minimum=1)
    clob_rest_rate_per_s: float = tune(20.0, "CLOB REST requests per second for market info and book resyncs (one "
                                       "bucket, a second's worth banked): Polymarket allows 1,500 per 10 s on /book "
                                       "and 9,000 per 10 s on the CLOB API in all, shared with the router's "
                                       "reads and the orders of the same address", minimum=0.001, maximum=150.0)
    clob_rest_concurrency: int = tune(4, "CLOB REST fetches in flight at once (market info first, then the books "
                                      "of positions and armed triggers, then the rest), and one more kept for "
                                      "market info", minimum=1, maximum=64)
    tick_filter: bool = tune(True, "log only the price ticks guard's bands say may matter (tickgate); false: "
                             "every one")
    tick_heartbeat_s: float = tune(5.0, "while filtering, each asset's changed top of book still goes out at least "
                                   "this often", minimum=0.001)
    recent_asset_ttl_s: float = tune(3600.0, "a leader-trade asset stays watched this long", minimum=0.001)
    watch_refresh_s: float = tune(30.0, "the watch set is reloaded whole this often, behind its messages",
                                  minimum=0.001)
    # data-api poller
    poll_enabled: bool = tune(True, "the data-api poller, the leader feed's safety net")
    poll_interval_s: float = tune(60.0, "regular round of the poller", minimum=0.001)
    poll_endpoint: str = tune("activity", "activity (windows, non-trade rows) or trades (takerOnly=false)",
                              choices=("activity", "trades"))
    poll_rate_per_s: float = tune(20.0, "token bucket rate: the data-api allows 200 requests per 10 s on /trades, "
                                  "1000 per 10 s overall", minimum=0.001)
    poll_burst: int = tune(20, "token bucket size", minimum=1)
    poll_concurrency: int = tune(4, "polls in flight at once", minimum=1, maximum=64)
    poll_reach_margin_s: float = tune(30.0, "polls reach back the router's TT_ROUTER_MAX_TRADE_AGE_S plus this "
                                      "(clocks, delivery): each window starts that long before the previous "
                                      "one's end, a newly followed leader is polled from max(createTime, now - "
                                      "that)")
    poll_max_lookback_s: float = tune(86_400.0, "never poll further back than this", minimum=0.001)
    poll_gap_followup_s: float = tune(15.0, "the follow-up poll after a feed gap (data-api indexes 5-10 s late)")
    poll_page_limit: int = tune(500, "/activity page size", minimum=1, maximum=10_000)
    poll_max_offset: int = tune(5000, "deepest /activity offset", minimum=0)
    http_timeout_s: float = tune(10.0, "REST timeout (the whole request)", minimum=0.001)
    user_agent: str = tune(DEFAULT_USER_AGENT, "Cloudflare refuses Python's default agent")
    # market resolutions: the REST safety net over held markets
    market_check_interval_s: float = tune(3600.0, "each held market's CLOB REST check at least this often (the "
                                          "issue: at least hourly)", minimum=1.0, maximum=3600.0)
    market_check_rate_per_s: float = tune(4.0, "its requests per second (one bucket): a round covers rate x "
                                          "interval markets", minimum=0.001)
    resolution_unclear_alert_s: float = tune(21_600.0, "a held market closed this long without a clear winner (a "
                                             "50/50 or voided result, a dispute) raises one RESOLUTION_UNCLEAR "
                                             "alert: its positions are not settled automatically", minimum=1.0)
    # leader trade sanity
    max_clock_skew_s: float = tune(60.0, "a leader trade stamped further ahead of our clock is refused")
    # dedupe, identity, hot index, persistence
    dedupe_ttl_s: int = tune(7 * 86_400, "lifetime of a leader trade's dedupe key: longer than any replay window",
                             minimum=60)
    occurrence_ttl_s: float = tune(900.0, "RTDS occurrence counters are kept this long", minimum=0.001)
    index_check_s: float = tune(5.0, "hot-index version check, behind its change messages", minimum=0.001)
    persist_batch: int = tune(500, "leader trades written to PostgreSQL in one batch", minimum=1, maximum=10_000)
    stream_maxlen: int = tune(1_000_000, "approximate cap of each Redis Stream", minimum=1000)

    def __post_init__(self) -> None:
        if self.reconnect_cap_s < self.reconnect_base_s:
            raise ValueError("TT_TUNE_INGEST_RECONNECT_CAP_S must be >= TT_TUNE_INGEST_RECONNECT_BASE_S")
        if self.rtds_ping_interval_s >= self.rtds_stall_s:
            raise ValueError("TT_TUNE_INGEST_RTDS_PING_INTERVAL_S must be < TT_TUNE_INGEST_RTDS_STALL_S")
        if self.dedupe_ttl_s < self.poll_max_lookback_s:  # a trade polled again after its key expired: appended twice
            raise ValueError("TT_TUNE_INGEST_DEDUPE_TTL_S must be >= TT_TUNE_INGEST_POLL_MAX_LOOKBACK_S")


@dataclass(frozen=True, slots=True, repr=False)
class IngestSettings:
    """Everything ingest needs to run."""

    security: GrpcSecurity
    rtds_url: str = DEFAULT_RTDS_URL
    clob_ws_url: str = DEFAULT_CLOB_WS_URL
    clob_api_url: str = DEFAULT_CLOB_API_URL
    data_api_url: str = DEFAULT_DATA_API_URL
    record_dir: str = ""
    grpc_port: int = 50051
    grpc_host: str = "127.0.0.1"
    max_trade_age_s: float = DEFAULT_MAX_TRADE_AGE_S  # the router's: older leader trades are not copied
    tuning: Tuning = Tuning()
    metrics: MetricsSettings = METRICS_OFF

    def __post_init__(self) -> None:
        t = self.tuning
        if any(item.split(":")[0].strip() == "activity" for item in t.rtds_extra_topics.split(",")):
            raise ConfigError(f"TT_TUNE_INGEST_RTDS_EXTRA_TOPICS ({t.rtds_extra_topics!r}) must not name activity: it "
                              "is subscribed already, and a second subscription would deliver its trades twice")
        if t.poll_max_lookback_s < self.poll_reach_s:
            raise ConfigError(f"TT_TUNE_INGEST_POLL_MAX_LOOKBACK_S ({t.poll_max_lookback_s:g}) must be >= "
                              f"{MAX_TRADE_AGE_VAR} + TT_TUNE_INGEST_POLL_REACH_MARGIN_S ({self.poll_reach_s:g}): "
                              "polls would not reach trades the router still copies")

    @property
    def poll_reach_s(self) -> float:
        """How far back every poll window reaches before the previous one's end (and a new leader's backfill):
        any trade the router would still copy is inside the next window, however late data-api indexed it."""
        return self.max_trade_age_s + self.tuning.poll_reach_margin_s

    def __repr__(self) -> str:  # logged at start-up: the feed URLs without any credentials
        return settings_repr(self)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> IngestSettings:
        """Read ``TT_*`` variables; raise ConfigError naming the bad variable."""
        env = os.environ if env is None else env
        security = GrpcSecurity.from_env(env)
        grpc_host = env_str(env, "TT_INGEST_GRPC_HOST", "127.0.0.1")
        security.check_bind(grpc_host, "TT_INGEST_GRPC_HOST")
        return cls(
            security=security,
            rtds_url=env_url(env, "TT_RTDS_URL", DEFAULT_RTDS_URL, schemes=WS_SCHEMES),
            clob_ws_url=env_url(env, "TT_CLOB_WS_URL", DEFAULT_CLOB_WS_URL, schemes=WS_SCHEMES),
            clob_api_url=env_url(env, "TT_CLOB_API_URL", DEFAULT_CLOB_API_URL),
            data_api_url=env_url(env, "TT_DATA_API_URL", DEFAULT_DATA_API_URL),
            record_dir=env_str(env, "TT_RECORD_DIR"),
            grpc_port=grpc_port(env, "ingest"),
            grpc_host=grpc_host,
            max_trade_age_s=env_float_seconds(env, MAX_TRADE_AGE_VAR, DEFAULT_MAX_TRADE_AGE_S, minimum=1.0),
            tuning=tuning_from_env(Tuning, "ingest", env),
            metrics=MetricsSettings.from_env(env, "ingest"),
        )
