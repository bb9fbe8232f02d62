"""Rows of ``positions`` (a wallet's current life in a token) and ``position_history`` (ended lives) as the
executor's booking, settlement and reconciliation write them (migration 0500), for tests."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
FOLLOWER = "0x6af75d4e4aaf700450efbac3708cce1665810ff1"
ASSET = "50346041826216327542356284779626421946911040306225417226009706093563136506499"
CONDITION = "0xfa38" + "0" * 60

_BOTH = ("id", "follower_wallet_id", "asset_id", "condition_id", "wallet", "state", "origin", "subscription_id",
         "venue", "outcome", "size", "avg_price", "cost_usd", "realized_pnl_usd", "resolved_shares",
         "resolved_cost_usd", "payout_per_share", "winning_asset_id", "resolved_at", "venue_shares", "reconciled_at",
         "opened_at", "closed_at", "updated_at")
COLUMNS = {"positions": (*_BOTH, "realized_base_usd"), "position_history": _BOTH}


def life(minutes: int = 0, **over: Any) -> dict[str, Any]:
    """An OPEN copied life opened ``minutes`` after :data:`T0`; keyword overrides set columns."""
    opened = T0 + timedelta(minutes=minutes)
    row: dict[str, Any] = {
        "id": "pos_" + secrets.token_hex(8), "follower_wallet_id": "w_456", "asset_id": ASSET,
        "condition_id": CONDITION, "wallet": FOLLOWER, "state": "OPEN", "origin": "COPY", "subscription_id": None,
        "venue": "INSIDERS", "outcome": "No", "size": Decimal("714.28"), "avg_price": Decimal("0.0349"),
        "cost_usd": Decimal("24.93"), "realized_pnl_usd": Decimal(0), "realized_base_usd": Decimal(0),
        "resolved_shares": None, "resolved_cost_usd": None, "payout_per_share": None, "winning_asset_id": None,
        "resolved_at": None,
        "venue_shares": None, "reconciled_at": None, "opened_at": opened, "closed_at": None,
        "updated_at": opened + timedelta(seconds=30),
    }
    row.update(over)
    return row


def insert_sql(table: str, row: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The INSERT of ``row`` into ``positions`` or ``position_history``."""
    cols = COLUMNS[table]
    return (f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(f'%({c})s' for c in cols)})",
            {c: row[c] for c in cols})


def insert(db_url: str, table: str, row: dict[str, Any]) -> dict[str, Any]:
    """Insert ``row`` and commit; returns it."""
    with psycopg.connect(db_url) as conn:
        conn.execute(*insert_sql(table, row))
    return row


async def insert_async(conn: psycopg.AsyncConnection[Any], table: str, row: dict[str, Any]) -> dict[str, Any]:
    """Insert ``row`` on an autocommit connection; returns it."""
    await conn.execute(*insert_sql(table, row))
    return row
