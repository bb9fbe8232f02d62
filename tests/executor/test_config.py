"""Executor settings from the environment."""

from __future__ import annotations

from decimal import Decimal

import pytest

from common.config import ConfigError
from services.executor.config import Settings
from tests.helpers import INTERNAL_ENV


def test_defaults() -> None:
    s = Settings.from_env(INTERNAL_ENV)
    assert (s.grpc_port, s.router_target, s.insiders_url, s.live_configured) == (50053, "127.0.0.1:50052", "", False)
    t = s.tuning
    assert (t.breaker_threshold, t.breaker_open_s, t.lost_after, t.max_inflight) == (5, 60.0, 3, 2048)
    assert (t.max_status_queries, t.placed_lost_after_s) == (256, 300.0)
    assert (t.max_open_orders, t.admission_wait_max_s) == (15_000, 10.0)
    assert (s.max_order_usd, t.book_max_age_s, t.book_wait_s) == (Decimal(1000), 20.0, 1.0)
    live = Settings.from_env({**INTERNAL_ENV, "TT_INSIDERS_API_URL": "http://x",
                              "TT_INSIDERS_API_TOKEN": "s3cr3t-value"})
    assert live.live_configured and "s3cr3t-value" not in repr(live)


@pytest.mark.parametrize("env", [
    {"TT_INSIDERS_API_URL": "http://127.0.0.1:1"},  # no token
    {"TT_INSIDERS_API_URL": "ftp://x", "TT_INSIDERS_API_TOKEN": "t"},
    {"TT_TUNE_EXECUTOR_POST_TIMEOUT_S": "0"},
    {"TT_TUNE_EXECUTOR_MAX_INFLIGHT": "0"},
    {"TT_TUNE_EXECUTOR_MAX_STATUS_QUERIES": "0"},
    {"TT_TUNE_EXECUTOR_MAX_OPEN_ORDERS": "-1"},
    {"TT_TUNE_EXECUTOR_ADMISSION_WAIT_MAX_S": "0"},
    {"TT_TUNE_EXECUTOR_PLACED_LOST_AFTER_S": "-1"},
    {"TT_TUNE_EXECUTOR_PLACED_LOST_AFTER_S": "soon"},
    {"TT_TUNE_EXECUTOR_MIN_DEPTH_RATIO": "1.5"},
    {"TT_TUNE_EXECUTOR_POLL_INITIAL_S": "3", "TT_TUNE_EXECUTOR_POLL_MAX_S": "1"},
    {"TT_PAPER_FEE_BPS": "-1"},
    {"TT_EXECUTOR_GRPC_PORT": "70000"},
    {"TT_TUNE_EXECUTOR_LEASE_POLL_S": "0"},
    {"TT_TUNE_EXECUTOR_LEASE_CHECK_S": "soon"},
    {"TT_MAX_ORDER_USD": "0"},
    {"TT_MAX_ORDER_USD": "-1"},
    {"TT_MAX_ORDER_USD": "NaN"},
    {"TT_TUNE_EXECUTOR_BOOK_MAX_AGE_S": "0"},
    {"TT_TUNE_EXECUTOR_BOOK_WAIT_S": "-1"},
    {"TT_TUNE_EXECUTOR_ROUTED_SOURCE": "kafka"},
    {"TT_TUNE_EXECUTOR_BREAKER_OPEN": "2"},  # no such constant (a typo must not pass silently)
])
def test_invalid(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        Settings.from_env({**INTERNAL_ENV, **env})


def test_a_tuning_override_is_typed_and_bounded() -> None:
    s = Settings.from_env({**INTERNAL_ENV, "TT_TUNE_EXECUTOR_BREAKER_OPEN_S": "2.5",
                           "TT_TUNE_EXECUTOR_MIN_DEPTH_RATIO": "0.25", "TT_TUNE_EXECUTOR_START_OLDEST": "no",
                           "TT_TUNE_EXECUTOR_ROUTED_SOURCE": "LOG"})
    t = s.tuning
    assert (t.breaker_open_s, t.min_depth_ratio) == (2.5, Decimal("0.25"))
    assert (t.start_oldest, t.routed_source) == (False, "log")
    assert t.breaker_threshold == 5  # untouched constants keep their defaults


def test_a_former_variable_name_fails_start_up() -> None:
    with pytest.raises(ConfigError, match="TT_TUNE_EXECUTOR_BREAKER_OPEN_S"):
        Settings.from_env({**INTERNAL_ENV, "TT_EXECUTOR_BREAKER_OPEN_S": "2"})
