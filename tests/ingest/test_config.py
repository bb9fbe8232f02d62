"""Ingest settings from the environment."""

from __future__ import annotations

import pytest

from common.config import ConfigError
from services.ingest.config import IngestSettings
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


def test_overrides() -> None:
    s = IngestSettings.from_env({**INTERNAL_ENV, "TT_RTDS_URL": "ws://127.0.0.1:1/", "TT_INGEST_GRPC_PORT": "0",
                                 "TT_TUNE_INGEST_RTDS_STALL_S": "0.5", "TT_TUNE_INGEST_RTDS_PING_INTERVAL_S": "0.1",
                                 "TT_TUNE_INGEST_POLL_ENDPOINT": "trades", "TT_RECORD_DIR": "/tmp/rec"})
    assert (s.rtds_url, s.grpc_port, s.tuning.rtds_stall_s, s.tuning.poll_endpoint, s.record_dir) == (
        "ws://127.0.0.1:1", 0, 0.5, "trades", "/tmp/rec")


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
    ({"TT_TUNE_INGEST_BOOK_SNAPSHOT_GRACE_S": "0"}, "TT_TUNE_INGEST_BOOK_SNAPSHOT_GRACE_S"),
    ({"TT_TUNE_INGEST_BOOK_BEAT_INTERVAL_S": "-1"}, "TT_TUNE_INGEST_BOOK_BEAT_INTERVAL_S"),
    ({"TT_TUNE_INGEST_MAX_CLOCK_SKEW_S": "-1"}, "TT_TUNE_INGEST_MAX_CLOCK_SKEW_S"),
    ({"TT_TUNE_INGEST_RECONNECT_CAP_S": "0.1"}, "TT_TUNE_INGEST_RECONNECT_CAP_S"),
    ({"TT_INGEST_RTDS_STALL_S": "20"}, "TT_INGEST_RTDS_STALL_S"),  # its former name: refused, not ignored
])
def test_invalid_values_name_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        IngestSettings.from_env({**INTERNAL_ENV, **env})
