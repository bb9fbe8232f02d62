"""Ingest settings from the environment."""

from __future__ import annotations

import pytest

from common.config import ConfigError
from services.ingest.config import IngestSettings
from services.router.config import Settings as RouterSettings
from tests.helpers import INTERNAL_ENV


def test_defaults_are_the_venue_and_documented_intervals() -> None:
    s = IngestSettings.from_env(INTERNAL_ENV)
    t = s.tuning
    assert s.rtds_url == "wss://ws-live-data.polymarket.com"
    assert s.clob_ws_url == "wss://ws-subscriptions-clob.polymarket.com/ws/market"
    assert (s.clob_api_url, s.data_api_url) == ("https://clob.polymarket.com", "https://data-api.polymarket.com")
    assert (s.grpc_port, t.rtds_ping_interval_s, t.rtds_stall_s, t.clob_ping_interval_s, t.poll_interval_s) == (
        50051, 5.0, 15.0, 10.0, 60.0)
    assert s.record_dir == "" and t.poll_rate_per_s <= 20  # data-api /trades allows 200 req / 10 s
    assert s.grpc_host == "127.0.0.1"  # loopback unless set, like every service
    assert (t.market_check_interval_s, t.market_check_rate_per_s) == (3600.0, 4.0)  # held markets at least hourly
    assert (t.book_snapshot_grace_s, t.book_beat_interval_s, t.max_clock_skew_s) == (2.0, 1.0, 60.0)
    assert (t.tick_filter, t.tick_heartbeat_s) == (True, 5.0)
    # market info and book resyncs: /book allows 1,500 req / 10 s, shared with the router's reads
    assert (t.clob_rest_rate_per_s, t.clob_rest_concurrency) == (20.0, 4)


def test_overrides() -> None:
    s = IngestSettings.from_env({**INTERNAL_ENV, "TT_RTDS_URL": "ws://127.0.0.1:1/", "TT_INGEST_GRPC_PORT": "0",
                                 "TT_TUNE_INGEST_RTDS_STALL_S": "0.5", "TT_TUNE_INGEST_RTDS_PING_INTERVAL_S": "0.1",
                                 "TT_TUNE_INGEST_POLL_ENDPOINT": "trades", "TT_RECORD_DIR": "/tmp/rec",
                                 "TT_TUNE_INGEST_CLOB_REST_RATE_PER_S": "50",
                                 "TT_TUNE_INGEST_CLOB_REST_CONCURRENCY": "8"})
    assert (s.rtds_url, s.grpc_port, s.tuning.rtds_stall_s, s.tuning.poll_endpoint, s.record_dir) == (
        "ws://127.0.0.1:1", 0, 0.5, "trades", "/tmp/rec")
    assert (s.tuning.clob_rest_rate_per_s, s.tuning.clob_rest_concurrency) == (50.0, 8)


@pytest.mark.parametrize(("env", "name"), [
    ({"TT_RTDS_URL": "http://x"}, "TT_RTDS_URL"),
    ({"TT_DATA_API_URL": "ftp://x"}, "TT_DATA_API_URL"),
    ({"TT_TUNE_INGEST_RTDS_STALL_S": "0"}, "TT_TUNE_INGEST_RTDS_STALL_S"),
    ({"TT_TUNE_INGEST_RTDS_STALL_S": "soon"}, "TT_TUNE_INGEST_RTDS_STALL_S"),
    ({"TT_TUNE_INGEST_POLL_ENDPOINT": "positions"}, "TT_TUNE_INGEST_POLL_ENDPOINT"),
    ({"TT_INGEST_GRPC_PORT": "70000"}, "TT_INGEST_GRPC_PORT"),
    ({"TT_TUNE_INGEST_RTDS_PING_INTERVAL_S": "20"}, "TT_TUNE_INGEST_RTDS_PING_INTERVAL_S"),
    ({"TT_TUNE_INGEST_CLOB_ENABLED": "maybe"}, "TT_TUNE_INGEST_CLOB_ENABLED"),
    ({"TT_TUNE_INGEST_MARKET_CHECK_INTERVAL_S": "7200"}, "TT_TUNE_INGEST_MARKET_CHECK_INTERVAL_S"),
    ({"TT_TUNE_INGEST_MARKET_CHECK_INTERVAL_S": "0.5"}, "TT_TUNE_INGEST_MARKET_CHECK_INTERVAL_S"),
    ({"TT_TUNE_INGEST_MARKET_CHECK_RATE_PER_S": "0"}, "TT_TUNE_INGEST_MARKET_CHECK_RATE_PER_S"),
    ({"TT_TUNE_INGEST_CLOB_REST_RATE_PER_S": "0"}, "TT_TUNE_INGEST_CLOB_REST_RATE_PER_S"),
    ({"TT_TUNE_INGEST_CLOB_REST_RATE_PER_S": "200"}, "TT_TUNE_INGEST_CLOB_REST_RATE_PER_S"),
    ({"TT_TUNE_INGEST_CLOB_REST_CONCURRENCY": "0"}, "TT_TUNE_INGEST_CLOB_REST_CONCURRENCY"),
    ({"TT_TUNE_INGEST_BOOK_SNAPSHOT_GRACE_S": "0"}, "TT_TUNE_INGEST_BOOK_SNAPSHOT_GRACE_S"),
    ({"TT_TUNE_INGEST_BOOK_BEAT_INTERVAL_S": "-1"}, "TT_TUNE_INGEST_BOOK_BEAT_INTERVAL_S"),
    ({"TT_TUNE_INGEST_MAX_CLOCK_SKEW_S": "-1"}, "TT_TUNE_INGEST_MAX_CLOCK_SKEW_S"),
    ({"TT_TUNE_INGEST_RECONNECT_CAP_S": "0.1"}, "TT_TUNE_INGEST_RECONNECT_CAP_S"),
    ({"TT_INGEST_RTDS_STALL_S": "20"}, "TT_INGEST_RTDS_STALL_S"),  # its former name: refused, not ignored
    # activity is subscribed already: naming it again would deliver its frames twice
    ({"TT_TUNE_INGEST_RTDS_EXTRA_TOPICS": "crypto_prices:update, activity:*"}, "TT_TUNE_INGEST_RTDS_EXTRA_TOPICS"),
    ({"TT_TUNE_INGEST_RTDS_EXTRA_TOPICS": "activity"}, "TT_TUNE_INGEST_RTDS_EXTRA_TOPICS"),
])
def test_invalid_values_name_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        IngestSettings.from_env({**INTERNAL_ENV, **env})


def test_the_poll_reach_is_derived_from_the_routers_trade_age_limit() -> None:
    """One setting: the poller reaches as far back as the router copies (plus a margin for clocks)."""
    default = IngestSettings.from_env(INTERNAL_ENV)
    router = RouterSettings.from_env({**INTERNAL_ENV, "DATABASE_URL": "postgresql://tt@127.0.0.1:5432/tt",
                                      "REDIS_URL": "redis://127.0.0.1:6379/0"})
    assert default.max_trade_age_s == router.max_trade_age_s == 300
    assert default.poll_reach_s == 300 + default.tuning.poll_reach_margin_s
    longer = IngestSettings.from_env({**INTERNAL_ENV, "TT_ROUTER_MAX_TRADE_AGE_S": "900"})
    assert longer.poll_reach_s == 900 + longer.tuning.poll_reach_margin_s


@pytest.mark.parametrize(("env", "name"), [
    ({"TT_TUNE_INGEST_POLL_OVERLAP_S": "120"}, "TT_TUNE_INGEST_POLL_OVERLAP_S"),  # retired: derived now
    ({"TT_TUNE_INGEST_POLL_NEW_LEADER_LOOKBACK_S": "120"}, "TT_TUNE_INGEST_POLL_NEW_LEADER_LOOKBACK_S"),
    ({"TT_ROUTER_MAX_TRADE_AGE_S": "0"}, "TT_ROUTER_MAX_TRADE_AGE_S"),
    ({"TT_ROUTER_MAX_TRADE_AGE_S": "90000"}, "TT_TUNE_INGEST_POLL_MAX_LOOKBACK_S"),
    ({"TT_TUNE_INGEST_POLL_MAX_LOOKBACK_S": "200"}, "TT_TUNE_INGEST_POLL_MAX_LOOKBACK_S"),
    # a dedupe key gone before a poll can still return its trade: the trade appended again
    ({"TT_TUNE_INGEST_DEDUPE_TTL_S": "3600"}, "TT_TUNE_INGEST_DEDUPE_TTL_S"),
])
def test_a_poll_reach_short_of_the_copy_horizon_fails_start_up(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        IngestSettings.from_env({**INTERNAL_ENV, **env})
