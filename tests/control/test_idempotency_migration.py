"""Migration 0350: idempotency keys become one per (method, key); keys claimed under several tokens keep
the oldest claim."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from common.storage import MIGRATIONS_DIR

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
MIGRATION = MIGRATIONS_DIR / "0350_idempotency_any_token.sql"


def test_duplicates_keep_the_oldest_claim_and_the_key_is_method_and_key(db_url: str) -> None:
    rows = [("tok_a", "CreateTrigger", "k1", T0 + timedelta(seconds=5)),
            ("tok_b", "CreateTrigger", "k1", T0),
            ("tok_c", "CreateTrigger", "k1", T0 + timedelta(seconds=9)),
            ("tok_b", "CreateSubscription", "k1", T0 + timedelta(seconds=1)),
            ("tok_a", "CreateTrigger", "k2", T0)]
    with psycopg.connect(db_url) as conn:
        # the table as it was before 0350, holding what per-token keys allowed
        conn.execute("ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey")
        conn.execute("ALTER TABLE idempotency_keys ADD PRIMARY KEY (token_id, method, key)")
        for token, method, key, at in rows:
            conn.execute("INSERT INTO idempotency_keys (token_id, method, key, request_hash, response, created_at)"
                         " VALUES (%s, %s, %s, 'h', 'r', %s)", (token, method, key, at))
        conn.execute(MIGRATION.read_bytes())
        kept = conn.execute("SELECT method, key, token_id FROM idempotency_keys ORDER BY method, key").fetchall()
        assert kept == [("CreateSubscription", "k1", "tok_b"), ("CreateTrigger", "k1", "tok_b"),
                        ("CreateTrigger", "k2", "tok_a")]
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO idempotency_keys (token_id, method, key, request_hash, created_at)"
                         " VALUES ('tok_z', 'CreateTrigger', 'k2', 'h', %s)", (T0,))
