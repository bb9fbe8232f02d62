"""Router settings from the environment: defaults, overrides, and start-up errors naming the variable."""

from __future__ import annotations

from decimal import Decimal

import pytest

from common.config import ConfigError
from common.streams import START_NEW, START_OLDEST
from services.router.config import Settings
from tests.helpers import INTERNAL_ENV

BASE = {"DATABASE_URL": "postgresql://u@localhost/db", "REDIS_URL": "redis://127.0.0.1:6379/0", **INTERNAL_ENV}


def test_defaults() -> None:
    s = Settings.from_env(BASE)
    assert (s.grpc_port, s.ingest_target, s.clob_api_url) == (50052, "127.0.0.1:50051", "https://clob.polymarket.com")
    assert s.insiders_api_url == "" and not s.insiders_api_token
    assert (s.start_cursor, s.max_trade_age_s, s.tuning.dedupe_ttl_s, s.default_max_slippage_bps) == (
        START_OLDEST, 300.0, 86_400, 200)
    assert s.marketable_buy_min_usd == Decimal(1)
    assert (s.tuning.redis_timeout_s, s.tuning.max_batch) == (5.0, 256)
    assert s.max_order_usd == Decimal(1000)
    assert Settings.from_env({**BASE, "TT_MAX_ORDER_USD": "250.5"}).max_order_usd == Decimal("250.5")


def test_overrides() -> None:
    s = Settings.from_env({**BASE, "TT_ROUTER_GRPC_PORT": "0", "TT_INGEST_GRPC_PORT": "6000",
                           "TT_CLOB_API_URL": "http://127.0.0.1:9/", "TT_INSIDERS_API_URL": "http://127.0.0.1:8",
                           "TT_INSIDERS_API_TOKEN": "secret", "TT_TUNE_ROUTER_START": "new",
                           "TT_ROUTER_MAX_TRADE_AGE_S": "30", "TT_ROUTER_DEFAULT_MAX_SLIPPAGE_BPS": "50",
                           "TT_TUNE_ROUTER_REDIS_TIMEOUT_S": "0.5", "TT_TUNE_ROUTER_MAX_BATCH": "16"})
    assert (s.grpc_port, s.ingest_target, s.clob_api_url) == (0, "127.0.0.1:6000", "http://127.0.0.1:9")
    assert s.insiders_api_token.value == "secret" and "secret" not in repr(s)
    assert (s.start_cursor, s.max_trade_age_s, s.default_max_slippage_bps) == (START_NEW, 30.0, 50)
    assert (s.tuning.redis_timeout_s, s.tuning.max_batch) == (0.5, 16)


@pytest.mark.parametrize(
    ("name", "value"),
    [("TT_TUNE_ROUTER_START", "middle"), ("TT_ROUTER_MAX_TRADE_AGE_S", "soon"),
     ("TT_TUNE_ROUTER_DEDUPE_TTL_S", "5"), ("TT_ROUTER_MAX_BATCH", "16"),
     ("TT_CLOB_API_URL", "ftp://x"), ("TT_ROUTER_DEFAULT_MAX_SLIPPAGE_BPS", "-1"),
     ("TT_ROUTER_MARKETABLE_BUY_MIN_USD", "abc"), ("TT_ROUTER_GRPC_PORT", "70000"), ("REDIS_URL", "http://x"),
     ("TT_TUNE_ROUTER_MAX_BATCH", "0"), ("TT_TUNE_ROUTER_REDIS_TIMEOUT_S", "0"), ("TT_MAX_ORDER_USD", "0"),
     ("TT_MAX_ORDER_USD", "-5"), ("TT_MAX_ORDER_USD", "lots"), ("TT_MAX_ORDER_USD", "Infinity"),
     ("TT_TUNE_ROUTER_REPLAN_INTERVAL_S", "-1"), ("TT_TUNE_ROUTER_REPLAN_INTERVAL_S", "often")],
)
def test_invalid_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({**BASE, name: value})


def test_the_exit_age_defaults_to_six_hours_and_is_at_least_the_trade_age() -> None:
    """A leader's SELL is mirrored up to TT_ROUTER_MAX_EXIT_AGE_S old (``domain.filters``): 6 h unless set, never
    gated tighter than an entry (unset, it follows a TT_ROUTER_MAX_TRADE_AGE_S set above 6 h)."""
    assert Settings.from_env(BASE).max_exit_age_s == 21_600.0
    assert Settings.from_env({**BASE, "TT_ROUTER_MAX_EXIT_AGE_S": "3600"}).max_exit_age_s == 3600.0
    assert Settings.from_env({**BASE, "TT_ROUTER_MAX_TRADE_AGE_S": "30000"}).max_exit_age_s == 30_000.0
    same = Settings.from_env({**BASE, "TT_ROUTER_MAX_TRADE_AGE_S": "120", "TT_ROUTER_MAX_EXIT_AGE_S": "120"})
    assert (same.max_trade_age_s, same.max_exit_age_s) == (120.0, 120.0)  # exits gated as entries were


@pytest.mark.parametrize("env", [
    {"TT_ROUTER_MAX_EXIT_AGE_S": "later"},
    {"TT_ROUTER_MAX_EXIT_AGE_S": "nan"},
    {"TT_ROUTER_MAX_EXIT_AGE_S": "1e400"},
    {"TT_ROUTER_MAX_EXIT_AGE_S": "299"},  # below the trade age: an exit gated tighter than an entry
    {"TT_ROUTER_MAX_TRADE_AGE_S": "600", "TT_ROUTER_MAX_EXIT_AGE_S": "300"},
    {"TT_ROUTER_MAX_EXIT_AGE_S": "86401"},  # past the routed marker: a late second delivery would be copied again
    {"TT_ROUTER_MAX_EXIT_AGE_S": "7200", "TT_TUNE_ROUTER_DEDUPE_TTL_S": "3600"},
])
def test_an_exit_age_it_cannot_run_with_fails_start_up(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="TT_ROUTER_MAX_EXIT_AGE_S"):
        Settings.from_env({**BASE, **env})


@pytest.mark.parametrize("extra", [
    {"TT_TUNE_ROUTER_DEDUPE_TTL_S": "3600"},  # a deployment that shortened the routed marker (Redis memory)
    {"TT_TUNE_ROUTER_DEDUPE_TTL_S": "7200", "TT_ROUTER_MAX_TRADE_AGE_S": "600"},
])
def test_an_unset_exit_age_fits_a_shortened_routed_marker(extra: dict[str, str]) -> None:
    """A deployment that never set TT_ROUTER_MAX_EXIT_AGE_S still starts: the default stays within the marker."""
    s = Settings.from_env({**BASE, **extra})
    assert s.max_trade_age_s <= s.max_exit_age_s == s.tuning.dedupe_ttl_s
