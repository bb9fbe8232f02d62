"""Ingest settings from the environment (one frozen dataclass; invalid values raise ConfigError).

Every variable, its default and its meaning: the Configuration table of ``services/ingest/README.md``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from common.config import (
    ConfigError,
    env_bool,
    env_float_seconds,
    env_int,
    env_str,
    env_url,
    grpc_port,
)
from common.grpcauth import GrpcSecurity
from common.metrics import METRICS_OFF, MetricsSettings

DEFAULT_RTDS_URL = "wss://ws-live-data.polymarket.com"
DEFAULT_CLOB_WS_URL = "wss://ws-subscriptions-clob.polymarket.com/ws/market"
DEFAULT_CLOB_API_URL = "https://clob.polymarket.com"
DEFAULT_DATA_API_URL = "https://data-api.polymarket.com"
WS_SCHEMES = ("ws", "wss")
DEFAULT_USER_AGENT = "tradingtools-ingest/2.0 (+copy-trading safety net)"


@dataclass(frozen=True, slots=True)
class IngestSettings:
    """Everything ingest needs to run; durations in seconds, sizes in bytes."""

    security: GrpcSecurity
    rtds_url: str = DEFAULT_RTDS_URL
    clob_ws_url: str = DEFAULT_CLOB_WS_URL
    clob_api_url: str = DEFAULT_CLOB_API_URL
    data_api_url: str = DEFAULT_DATA_API_URL
    record_dir: str = ""
    grpc_port: int = 50051
    grpc_host: str = "127.0.0.1"
    # RTDS leader feed
    rtds_ping_interval_s: float = 5.0
    rtds_ping_text: str = "PING"
    rtds_stall_s: float = 15.0
    rtds_extra_topics: str = ""
    reconnect_base_s: float = 0.25
    reconnect_cap_s: float = 30.0
    max_frame_bytes: int = 1_048_576
    # CLOB book feed
    clob_enabled: bool = True
    clob_ping_interval_s: float = 10.0
    clob_stall_s: float = 30.0
    book_stale_s: float = 30.0
    book_snapshot_grace_s: float = 2.0
    book_beat_interval_s: float = 1.0
    book_depth_levels: int = 100
    tick_filter: bool = True
    tick_heartbeat_s: float = 5.0
    recent_asset_ttl_s: float = 3600.0
    watch_refresh_s: float = 30.0
    # data-api poller
    poll_enabled: bool = True
    poll_interval_s: float = 60.0
    poll_endpoint: str = "activity"
    poll_rate_per_s: float = 20.0
    poll_burst: int = 20
    poll_concurrency: int = 4
    poll_overlap_s: float = 120.0
    poll_max_lookback_s: float = 86_400.0
    poll_new_leader_lookback_s: float = 120.0
    poll_gap_followup_s: float = 15.0
    poll_page_limit: int = 500
    poll_max_offset: int = 5000
    http_timeout_s: float = 10.0
    user_agent: str = DEFAULT_USER_AGENT
    # market resolutions: the REST safety net over held markets
    market_check_interval_s: float = 3600.0
    market_check_rate_per_s: float = 4.0
    # leader trade sanity
    max_clock_skew_s: float = 60.0
    # dedupe, identity, hot index, persistence
    dedupe_ttl_s: int = 7 * 86_400
    occurrence_ttl_s: float = 900.0
    index_check_s: float = 5.0
    persist_batch: int = 500
    stream_maxlen: int = 1_000_000
    metrics: MetricsSettings = METRICS_OFF

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> IngestSettings:
        """Read ``TT_*`` variables; raise ConfigError naming the bad variable."""
        env = os.environ if env is None else env
        endpoint = env_str(env, "TT_INGEST_POLL_ENDPOINT", "activity").lower()
        if endpoint not in {"activity", "trades"}:
            raise ConfigError(f"TT_INGEST_POLL_ENDPOINT must be 'activity' or 'trades', got {endpoint!r}")
        security = GrpcSecurity.from_env(env)
        grpc_host = env_str(env, "TT_INGEST_GRPC_HOST", "127.0.0.1")
        security.check_bind(grpc_host, "TT_INGEST_GRPC_HOST")
        settings = cls(
            security=security,
            rtds_url=env_url(env, "TT_RTDS_URL", DEFAULT_RTDS_URL, schemes=WS_SCHEMES),
            clob_ws_url=env_url(env, "TT_CLOB_WS_URL", DEFAULT_CLOB_WS_URL, schemes=WS_SCHEMES),
            clob_api_url=env_url(env, "TT_CLOB_API_URL", DEFAULT_CLOB_API_URL),
            data_api_url=env_url(env, "TT_DATA_API_URL", DEFAULT_DATA_API_URL),
            record_dir=env_str(env, "TT_RECORD_DIR"),
            grpc_port=grpc_port(env, "ingest"),
            grpc_host=grpc_host,
            metrics=MetricsSettings.from_env(env, "ingest"),
            rtds_ping_interval_s=_pos(env, "TT_INGEST_RTDS_PING_INTERVAL_S", 5.0),
            rtds_ping_text=env_str(env, "TT_INGEST_RTDS_PING_TEXT", "PING"),
            rtds_stall_s=_pos(env, "TT_INGEST_RTDS_STALL_S", 15.0),
            rtds_extra_topics=env_str(env, "TT_INGEST_RTDS_EXTRA_TOPICS"),
            reconnect_base_s=_pos(env, "TT_INGEST_RECONNECT_BASE_S", 0.25),
            reconnect_cap_s=_pos(env, "TT_INGEST_RECONNECT_CAP_S", 30.0),
            max_frame_bytes=env_int(env, "TT_INGEST_MAX_FRAME_BYTES", 1_048_576, minimum=1024),
            clob_enabled=env_bool(env, "TT_INGEST_CLOB_ENABLED", True),
            clob_ping_interval_s=_pos(env, "TT_INGEST_CLOB_PING_INTERVAL_S", 10.0),
            clob_stall_s=_pos(env, "TT_INGEST_CLOB_STALL_S", 30.0),
            book_stale_s=_pos(env, "TT_INGEST_BOOK_STALE_S", 30.0),
            book_snapshot_grace_s=_pos(env, "TT_INGEST_BOOK_SNAPSHOT_GRACE_S", 2.0),
            book_beat_interval_s=_pos(env, "TT_INGEST_BOOK_BEAT_INTERVAL_S", 1.0),
            book_depth_levels=env_int(env, "TT_INGEST_BOOK_DEPTH_LEVELS", 100, minimum=1),
            tick_filter=env_bool(env, "TT_INGEST_TICK_FILTER", True),
            tick_heartbeat_s=_pos(env, "TT_INGEST_TICK_HEARTBEAT_S", 5.0),
            recent_asset_ttl_s=_pos(env, "TT_INGEST_RECENT_ASSET_TTL_S", 3600.0),
            watch_refresh_s=_pos(env, "TT_INGEST_WATCH_REFRESH_S", 30.0),
            poll_enabled=env_bool(env, "TT_INGEST_POLL_ENABLED", True),
            poll_interval_s=_pos(env, "TT_INGEST_POLL_INTERVAL_S", 60.0),
            poll_endpoint=endpoint,
            poll_rate_per_s=_pos(env, "TT_INGEST_POLL_RATE_PER_S", 20.0),
            poll_burst=env_int(env, "TT_INGEST_POLL_BURST", 20, minimum=1),
            poll_concurrency=env_int(env, "TT_INGEST_POLL_CONCURRENCY", 4, minimum=1, maximum=64),
            poll_overlap_s=env_float_seconds(env, "TT_INGEST_POLL_OVERLAP_S", 120.0),
            poll_max_lookback_s=_pos(env, "TT_INGEST_POLL_MAX_LOOKBACK_S", 86_400.0),
            poll_new_leader_lookback_s=env_float_seconds(env, "TT_INGEST_POLL_NEW_LEADER_LOOKBACK_S", 120.0),
            poll_gap_followup_s=env_float_seconds(env, "TT_INGEST_POLL_GAP_FOLLOWUP_S", 15.0),
            poll_page_limit=env_int(env, "TT_INGEST_POLL_PAGE_LIMIT", 500, minimum=1, maximum=10_000),
            poll_max_offset=env_int(env, "TT_INGEST_POLL_MAX_OFFSET", 5000, minimum=0),
            http_timeout_s=_pos(env, "TT_INGEST_HTTP_TIMEOUT_S", 10.0),
            user_agent=env_str(env, "TT_INGEST_USER_AGENT", DEFAULT_USER_AGENT),
            market_check_interval_s=env_float_seconds(env, "TT_INGEST_MARKET_CHECK_INTERVAL_S", 3600.0,
                                                      minimum=1.0),
            market_check_rate_per_s=_pos(env, "TT_INGEST_MARKET_CHECK_RATE_PER_S", 4.0),
            max_clock_skew_s=env_float_seconds(env, "TT_INGEST_MAX_CLOCK_SKEW_S", 60.0),
            dedupe_ttl_s=env_int(env, "TT_INGEST_DEDUPE_TTL_S", 7 * 86_400, minimum=60),
            occurrence_ttl_s=_pos(env, "TT_INGEST_OCCURRENCE_TTL_S", 900.0),
            index_check_s=_pos(env, "TT_INGEST_INDEX_CHECK_S", 5.0),
            persist_batch=env_int(env, "TT_INGEST_PERSIST_BATCH", 500, minimum=1, maximum=10_000),
            stream_maxlen=env_int(env, "TT_INGEST_STREAM_MAXLEN", 1_000_000, minimum=1000),
        )
        if settings.reconnect_cap_s < settings.reconnect_base_s:
            raise ConfigError("TT_INGEST_RECONNECT_CAP_S must be >= TT_INGEST_RECONNECT_BASE_S")
        if settings.market_check_interval_s > 3600.0:
            raise ConfigError("TT_INGEST_MARKET_CHECK_INTERVAL_S must be <= 3600 (every held market at least hourly)")
        if settings.rtds_ping_interval_s >= settings.rtds_stall_s:
            raise ConfigError("TT_INGEST_RTDS_PING_INTERVAL_S must be < TT_INGEST_RTDS_STALL_S")
        return settings


def _pos(env: Mapping[str, str], name: str, default: float) -> float:
    value = env_float_seconds(env, name, default)
    if value <= 0:
        raise ConfigError(f"{name} must be > 0, got {value}")
    return value
