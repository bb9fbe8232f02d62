"""SQL for funded balances and performance actions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from services.control.db import Conn


@dataclass(frozen=True, slots=True)
class Funding:
    """A follower wallet's funded balance on record."""

    follower_wallet_id: str
    balance_usd: Decimal
    as_of: datetime


@dataclass(frozen=True, slots=True)
class PerfRecord:
    """A perf decision already applied."""

    decision_id: str
    subscription_id: str
    action: str
    multiplier: Decimal | None


async def get_funding(conn: Conn, follower_wallet_id: str, *, for_update: bool = False) -> Funding | None:
    """The balance on record, if any."""
    row = await (await conn.execute(
        "SELECT follower_wallet_id, balance_usd, as_of FROM funding WHERE follower_wallet_id = %s"
        + (" FOR UPDATE" if for_update else ""), (follower_wallet_id,))).fetchone()
    return None if row is None else Funding(row["follower_wallet_id"], row["balance_usd"], row["as_of"])


async def upsert_funding(conn: Conn, funding: Funding, now: datetime) -> bool:
    """Record a balance unless a reading as new or newer is on record; True when it was applied."""
    row = await (await conn.execute(
        "INSERT INTO funding (follower_wallet_id, balance_usd, as_of, updated_at) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (follower_wallet_id) DO UPDATE SET balance_usd = EXCLUDED.balance_usd,"
        " as_of = EXCLUDED.as_of, updated_at = EXCLUDED.updated_at WHERE funding.as_of < EXCLUDED.as_of"
        " RETURNING 1 AS applied", (funding.follower_wallet_id, funding.balance_usd, funding.as_of, now))).fetchone()
    return row is not None


async def get_perf(conn: Conn, decision_id: str) -> PerfRecord | None:
    """A perf decision applied before, if any."""
    row = await (await conn.execute(
        "SELECT decision_id, subscription_id, action, multiplier FROM perf_actions WHERE decision_id = %s",
        (decision_id,))).fetchone()
    if row is None:
        return None
    return PerfRecord(row["decision_id"], row["subscription_id"], row["action"], row["multiplier"])


async def insert_perf(conn: Conn, record: PerfRecord, reason: str, token_id: str, now: datetime) -> bool:
    """Record a decision; False when the same decision id was recorded concurrently (for another
    subscription: the caller's row lock serializes decisions on one subscription)."""
    row = await (await conn.execute(
        "INSERT INTO perf_actions (decision_id, subscription_id, action, multiplier, reason, token_id,"
        " applied_at) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1 AS recorded",
        (record.decision_id, record.subscription_id, record.action, record.multiplier, reason, token_id,
         now))).fetchone()
    return row is not None
