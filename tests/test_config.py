"""common.config: every setting is checked at start-up, and no error or settings line shows a secret."""

from __future__ import annotations

from decimal import Decimal

import pytest

from common.config import ConfigError, StorageSettings, env_decimal, env_float_seconds, env_url, redact_url

WS = ("ws", "wss")
NOT_FINITE = ["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e400"]


@pytest.mark.parametrize("raw", NOT_FINITE)
def test_a_duration_must_be_a_finite_number_of_seconds(raw: str) -> None:
    with pytest.raises(ConfigError, match="TT_X_S"):
        env_float_seconds({"TT_X_S": raw}, "TT_X_S", 1.0)


@pytest.mark.parametrize(("raw", "expected"), [("", 1.0), (" 2.5 ", 2.5), ("0", 0.0), ("1e3", 1000.0)])
def test_a_duration_is_read_in_seconds(raw: str, expected: float) -> None:
    assert env_float_seconds({"TT_X_S": raw}, "TT_X_S", 1.0) == expected


@pytest.mark.parametrize(("raw", "maximum"), [("10.5", 10.0), ("-1", None), ("x", None)])
def test_a_duration_outside_its_bounds_is_refused(raw: str, maximum: float | None) -> None:
    with pytest.raises(ConfigError, match="TT_X_S"):
        env_float_seconds({"TT_X_S": raw}, "TT_X_S", 1.0, maximum=maximum)


@pytest.mark.parametrize(("raw", "ok"), [("10", True), ("10.01", False), ("NaN", False), ("-Infinity", False)])
def test_a_decimal_keeps_its_maximum(raw: str, ok: bool) -> None:
    env = {"TT_X": raw}
    if ok:
        assert env_decimal(env, "TT_X", Decimal(0), minimum=Decimal(0), maximum=Decimal(10)) == Decimal(raw)
    else:
        with pytest.raises(ConfigError, match="TT_X"):
            env_decimal(env, "TT_X", Decimal(0), minimum=Decimal(0), maximum=Decimal(10))


@pytest.mark.parametrize(("raw", "schemes"), [
    ("https://", ("http", "https")),
    ("https://exa mple.com", ("http", "https")),
    ("https://example.com\t/ws", ("http", "https")),
    ("https://example.com/a b", ("http", "https")),
    ("http://:443", ("http", "https")),
    ("https://user:pw@", ("http", "https")),
    ("https:example.com", ("http", "https")),
    ("example.com", ("http", "https")),
    ("http://example.com:99999", ("http", "https")),
    ("http://example.com:0", ("http", "https")),
    ("http://example.com:https", ("http", "https")),
    ("http://[::1", ("http", "https")),
    ("ftp://example.com", ("http", "https")),
    ("wss://", WS),
    ("wss://ws live.example/ws", WS),
    ("ws://:9201", WS),
    ("https://ws.example", WS),
])
def test_a_url_needs_its_scheme_a_host_and_a_valid_port(raw: str, schemes: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError, match="TT_X_URL"):
        env_url({"TT_X_URL": raw}, "TT_X_URL", "", schemes=schemes)


@pytest.mark.parametrize(("raw", "schemes", "expected"), [
    ("", ("http", "https"), ""),
    ("https://insiders.example/api/", ("http", "https"), "https://insiders.example/api"),
    ("HTTP://127.0.0.1:9204", ("http", "https"), "HTTP://127.0.0.1:9204"),
    ("https://desk:pw@insiders.example:8443", ("http", "https"), "https://desk:pw@insiders.example:8443"),
    ("http://[::1]:9204", ("http", "https"), "http://[::1]:9204"),
    ("wss://ws-subscriptions-clob.polymarket.com/ws/market", WS, "wss://ws-subscriptions-clob.polymarket.com/ws/market"),
    ("ws://127.0.0.1:9201", WS, "ws://127.0.0.1:9201"),
])
def test_a_well_formed_url_is_kept(raw: str, schemes: tuple[str, ...], expected: str) -> None:
    assert env_url({"TT_X_URL": raw}, "TT_X_URL", "", schemes=schemes) == expected


@pytest.mark.parametrize("raw", [
    "hooks.slack.com/services/T0AAA/B0BBB/S3cretPw",
    "https//desk:S3cretPw@insiders.example",
    "https://desk:S3cretPw@",
    "https://desk:S3cretPw@exa mple.com",
    "https://desk:S3cretPw@insiders.example:99999",
    "S3cretPw",
])
def test_a_refused_url_is_never_quoted_in_the_error(raw: str) -> None:
    with pytest.raises(ConfigError, match="TT_X_URL") as info:
        env_url({"TT_X_URL": raw}, "TT_X_URL", "")
    assert "S3cretPw" not in str(info.value)


STORE = {"DATABASE_URL": "postgresql://tt@127.0.0.1:5432/tt", "REDIS_URL": "redis://127.0.0.1:6379/0",
         "TT_RUN_DIR": "/nonexistent-tt-config-test"}


@pytest.mark.parametrize(("name", "raw"), [
    ("DATABASE_URL", "host=db.internal user=tt password=S3cretPw dbname=tt"),  # libpq keyword string
    ("DATABASE_URL", "postgresql//tt:S3cretPw@db.internal/tt"),  # typo: no ':'
    ("DATABASE_URL", "postgresql+psycopg://db.internal/tt?user=tt&password=S3cretPw"),
    ("DATABASE_URL", "mysql://tt:S3cretPw@db.internal/tt"),
    ("REDIS_URL", "redis//:S3cretPw@cache.internal:6379/0"),
    ("REDIS_URL", "cache.internal:6379?password=S3cretPw"),
    ("REDIS_URL", "http://:S3cretPw@cache.internal:6379/0"),
])
def test_a_refused_storage_url_is_named_never_quoted(name: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=name) as info:
        StorageSettings.from_env({**STORE, name: raw})
    assert "S3cretPw" not in str(info.value)


@pytest.mark.parametrize(("name", "raw"), [
    ("DATABASE_URL", "postgresql://tt:pw@db.internal:5432/tt"), ("DATABASE_URL", "postgres:///tt?host=/run/pg"),
    ("REDIS_URL", "rediss://:pw@cache.internal:6380/0"), ("REDIS_URL", "unix:///run/redis.sock"),
])
def test_storage_urls_are_accepted(name: str, raw: str) -> None:
    settings = StorageSettings.from_env({**STORE, name: raw})
    assert raw in (settings.database_url.value, settings.redis_url.value)
    assert "pw" not in repr(settings)


@pytest.mark.parametrize(("url", "expected"), [
    ("postgresql://u:pw@h/db", "postgresql://u:***@h/db"),
    ("https://desk:pw@insiders.example/a@b", "https://desk:***@insiders.example/a@b"),
    ("https://pw@insiders.example", "https://***@insiders.example"),
    ("https://insiders.example/api", "https://insiders.example/api"),
    ("", ""),
])
def test_redact_url_hides_the_credentials(url: str, expected: str) -> None:
    assert redact_url(url) == expected
