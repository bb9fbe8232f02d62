"""The shared foundation: settings helpers, ids, decimals, migrations, real servers."""

from __future__ import annotations

import os
import re
from decimal import Decimal

import psycopg
import pytest
import redis

from common.config import ConfigError, Secret, env_int, env_url, load_tokens, redact_url
from common.decimals import fmt, parse_decimal
from common.embedded import EMBEDDED_PG_SETTINGS
from common.ids import hash_id, new_id, ulid
from common.storage import apply_migrations


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", Decimal(1)), ("0.050", Decimal("0.050")), (0.1, Decimal("0.1")), (5, Decimal(5)),
     ("  2.5 ", Decimal("2.5"))],
)
def test_parse_decimal_accepts(raw: object, expected: Decimal) -> None:
    assert parse_decimal(raw) == expected


@pytest.mark.parametrize("raw", ["", "abc", "NaN", "Infinity", None, True, "1" * 80, "1e999999999"])
def test_parse_decimal_rejects(raw: object) -> None:
    with pytest.raises(ValueError):
        parse_decimal(raw)


@pytest.mark.parametrize(
    ("value", "text"),
    [(Decimal("1.500"), "1.5"), (Decimal("0"), "0"), (Decimal("1E+2"), "100"), (Decimal("0.0001"), "0.0001")],
)
def test_fmt_is_canonical(value: Decimal, text: str) -> None:
    assert fmt(value) == text


def test_ids() -> None:
    assert new_id("sub").startswith("sub_") and len(new_id("sub")) == 30
    assert ulid(1, b"\0" * 10) < ulid(2, b"\0" * 10)
    assert hash_id("lt", "a", "b") == hash_id("lt", "a", "b") != hash_id("lt", "ab", "")


def test_secret_is_redacted() -> None:
    assert "hunter2" not in repr(Secret("hunter2"))
    assert redact_url("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"


@pytest.mark.parametrize(
    ("env", "error"),
    [({"X": "abc"}, "X must be an integer"), ({"X": "-1"}, "X must be >= 0")],
)
def test_env_int_errors_name_the_variable(env: dict[str, str], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        env_int(env, "X", 1, minimum=0)


def test_env_url_rejects_wrong_scheme() -> None:
    with pytest.raises(ConfigError, match="TT_RTDS_URL"):
        env_url({"TT_RTDS_URL": "http://x"}, "TT_RTDS_URL", "", schemes=("ws", "wss"))


def test_tokens_must_be_64_hex(tmp_path) -> None:  # type: ignore[no-untyped-def]
    good = "a" * 64
    assert [t.value for t in load_tokens({"CONTROL_API_TOKEN": f"{good}, {'b' * 64}"})] == [good, "b" * 64]
    with pytest.raises(ConfigError, match="entry 1"):
        load_tokens({"CONTROL_API_TOKEN": f"{good},short"})
    with pytest.raises(ConfigError):
        load_tokens({"TT_RUN_DIR": str(tmp_path)})


@pytest.mark.integration
def test_migrations_are_idempotent(db_url: str) -> None:
    assert apply_migrations(db_url) == []
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] >= 0  # type: ignore[index]


@pytest.mark.integration
def test_embedded_postgres_has_its_settings(pg_server_url: str) -> None:
    """The embedded server runs with EMBEDDED_PG_SETTINGS (seen by a new session), whatever it was started with."""
    if os.environ.get("DATABASE_URL"):
        pytest.skip("DATABASE_URL: not the embedded server")
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        for name, value in EMBEDDED_PG_SETTINGS.items():
            assert conn.execute(f"SHOW {name}").fetchone() == (value,), name


@pytest.mark.integration
def test_redis_is_real(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    assert client.set("k", "v", nx=True) and not client.set("k", "w", nx=True)


# What a fill booking writes to a position (the lock, then the new values): the hottest rows there are.
# Columns every booking changes. Those a booking changes only when a position's life opens or ends (id, state,
# opened_at, a blank condition_id filled in) may be indexed: PostgreSQL keeps an update HOT when the indexed
# values stay the same, so the fills between an opening and a close stay on their page.
_BOOKING_WRITES = ("size", "avg_price", "cost_usd", "realized_pnl_usd", "pnl_day_realized_usd", "pnl_day",
                   "updated_at")


@pytest.mark.integration
def test_position_bookings_can_be_hot_updates(db_url: str) -> None:
    """No index of ``positions`` reads a column a booking writes (key, included or predicate column), and its
    pages keep room: so a booking's new row version stays on its page with no new index entries."""
    with psycopg.connect(db_url) as conn:
        defs = [r[0] for r in conn.execute(
            "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = 'positions'::regclass").fetchall()]
        options = conn.execute("SELECT reloptions FROM pg_class WHERE oid = 'positions'::regclass").fetchone()
    assert defs
    for d in defs:
        columns = set(re.findall(r"[a-z_]+", d.split(" USING ", 1)[1]))
        assert not columns & set(_BOOKING_WRITES), d
    assert options is not None and any(o.startswith("fillfactor=") and int(o.split("=")[1]) <= 70
                                       for o in options[0] or [])


@pytest.mark.integration
def test_analyze_skips_the_payload_of_orders_and_fills(db_url: str) -> None:
    """Statistics are gathered for what queries filter on (keys, state), not for payload no query reads by value."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO orders (client_order_id, state, venue, origin, follower_wallet_id, asset_id, side,"
                     " order_type, order_proto, amount_usd, detail) SELECT 'co_' || g, 'FILLED', 'PAPER', 'COPY',"
                     " 'w_1', 'a_1', 'BUY', 'FOK', '\\x0a01', g, 'x' FROM generate_series(1, 50) g")
        conn.execute("ANALYZE orders")
        kept = {r[0] for r in conn.execute("SELECT attname FROM pg_stats WHERE tablename = 'orders'").fetchall()}
    assert {"client_order_id", "state", "follower_wallet_id", "terminal_at"} <= kept
    assert not kept & {"order_proto", "amount_usd", "detail", "venue_order_id"}
