"""Each service's Settings.from_env: a value it cannot run with fails start-up naming the variable, and the
settings line every service logs at start-up shows no credential."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from common.config import ConfigError
from tests.helpers import INTERNAL_ENV

STORE = {"DATABASE_URL": "postgresql://tt@127.0.0.1:5432/tt", "REDIS_URL": "redis://127.0.0.1:6379/0",
         "TT_RUN_DIR": "/nonexistent-tt-config-test"}
BASE = {**STORE, **INTERNAL_ENV, "CONTROL_API_TOKEN": "ab" * 32}
LIVE = {"TT_INSIDERS_API_TOKEN": "k" * 32}
SERVICES = ("control", "ingest", "router", "executor", "guard")


def _settings(service: str, env: dict[str, str]) -> Any:
    mod = importlib.import_module(f"services.{service}.config")
    cls = getattr(mod, "Settings", None) or mod.IngestSettings
    return cls.from_env({**BASE, **env})


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_starts_on_the_defaults(service: str) -> None:
    assert _settings(service, {}) is not None


@pytest.mark.parametrize(("service", "name"), [
    ("executor", "TT_RECONCILE_INTERVAL_S"),  # nan > 0 is False: LIVE reconciliation silently off
    ("router", "TT_ROUTER_MAX_TRADE_AGE_S"),
    ("executor", "TT_TUNE_EXECUTOR_RESUBMIT_MAX_AGE_S"),
    ("executor", "TT_TUNE_EXECUTOR_MAX_ORDER_AGE_S"),
    ("guard", "TT_TUNE_GUARD_TICK_MAX_AGE_S"),
    ("ingest", "TT_TUNE_INGEST_MARKET_CHECK_INTERVAL_S"),  # has a maximum, which nan passed
    ("router", "TT_TUNE_ROUTER_HTTP_TIMEOUT_S"),
    ("control", "TT_TUNE_CONTROL_ALERT_RETENTION_S"),
])
@pytest.mark.parametrize("raw", ["nan", "NaN", "inf", "-inf", "1e400"])
def test_a_duration_that_is_not_finite_fails_start_up(service: str, name: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=name):
        _settings(service, {name: raw})


BAD_URLS = ["https://", "https://exa mple.com", "http://:443", "https://insiders.example:0", "insiders.example"]


@pytest.mark.parametrize("service", ["control", "router", "executor"])
@pytest.mark.parametrize("raw", BAD_URLS)
def test_an_insiders_api_url_without_a_valid_host_fails_start_up(service: str, raw: str) -> None:
    """control would accept LIVE subscriptions and the executor route LIVE orders to a venue that cannot exist."""
    with pytest.raises(ConfigError, match="TT_INSIDERS_API_URL"):
        _settings(service, {"TT_INSIDERS_API_URL": raw, **LIVE})


@pytest.mark.parametrize(("name", "raw"), [
    ("TT_RTDS_URL", "wss://"), ("TT_RTDS_URL", "wss://ws live.example"), ("TT_CLOB_WS_URL", "ws://:9202/ws/market"),
    ("TT_CLOB_WS_URL", "https://ws.example/ws/market"), ("TT_CLOB_API_URL", "https://"),
    ("TT_DATA_API_URL", "http://data.example:99999"),
])
def test_a_feed_url_without_a_valid_host_fails_ingest_start_up(name: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=name):
        _settings("ingest", {name: raw})


@pytest.mark.parametrize("service", ["control", "router", "executor"])
def test_the_start_up_settings_line_hides_the_insiders_url_credentials(service: str) -> None:
    settings = _settings(service, {"TT_INSIDERS_API_URL": "https://desk:S3cretPw@insiders.example", **LIVE})
    text = repr(settings)
    assert "S3cretPw" not in text and "k" * 32 not in text
    assert "insiders.example" in text  # the URL is still shown, without its password


@pytest.mark.parametrize(("raw", "ok"), [("0", True), ("100", True), ("1000", True), ("1000.5", False),
                                         ("10000", False), ("20000", False), ("-1", False), ("NaN", False)])
def test_the_paper_fee_is_at_most_ten_percent(raw: str, ok: bool) -> None:
    """A fee above 100 % booked negative shares on a paper BUY; above 10 % it is a typo (venue fees are a few %)."""
    if ok:
        assert str(_settings("executor", {"TT_PAPER_FEE_BPS": raw}).paper_fee_bps) == raw
    else:
        with pytest.raises(ConfigError, match="TT_PAPER_FEE_BPS"):
            _settings("executor", {"TT_PAPER_FEE_BPS": raw})


@pytest.mark.parametrize("raw", [
    "hooks.slack.com/services/T0AAA/B0BBB/XsEcReTwEbHoOkToKeN",  # pasted without its scheme
    "https://hooks.slack .com/services/T0AAA/B0BBB/XsEcReTwEbHoOkToKeN",
    "ftp://hooks.slack.com/services/T0AAA/B0BBB/XsEcReTwEbHoOkToKeN",
])
def test_a_refused_alert_webhook_url_is_not_quoted(raw: str) -> None:
    """deploy/README.md: a webhook's URL is itself a credential."""
    with pytest.raises(ConfigError, match="TT_ALERT_WEBHOOK_URL") as info:
        _settings("control", {"TT_ALERT_WEBHOOK_URL": raw})
    assert "XsEcReTwEbHoOkToKeN" not in str(info.value)


@pytest.mark.parametrize(("raw", "ok"), [("0.5", True), ("2", True), ("2.5", False), ("4", False)])
def test_the_executors_lease_check_leaves_its_venue_gate_open(raw: str, ok: bool) -> None:
    """A venue call waits for a lease check once the last confirmation is 4 s old (common.lease.FRESH_S): checks
    further apart than 2 s would hold POSTs back."""
    env = {"TT_TUNE_EXECUTOR_LEASE_CHECK_S": raw}
    if ok:
        assert _settings("executor", env).tuning.lease_check_s == float(raw)
    else:
        with pytest.raises(ConfigError, match="TT_TUNE_EXECUTOR_LEASE_CHECK_S"):
            _settings("executor", env)
