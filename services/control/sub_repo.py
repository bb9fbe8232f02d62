"""SQL for subscriptions and their fills.

Writes raise ``psycopg.errors.UniqueViolation`` on index ``subscriptions_one_active`` when a second
ACTIVE subscription for one (follower wallet, leader) would appear; callers map it with
:func:`is_duplicate_active` / :func:`duplicate_active` after their transaction rolled back.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg.errors

from services.control import codec
from services.control.db import Conn
from services.control.errors import AlreadyExists
from services.control.pagination import Cursor
from tradingtools.control.v1 import subscription_pb2 as spb

ONE_ACTIVE_INDEX = "subscriptions_one_active"
_FIELDS = (
    "s.id, s.follower_user_id, s.follower_wallet_id, s.follower_proxy, s.leader_proxy, s.label, s.state,"
    " s.mode, s.applied_multiplier, s.paused_reason, s.version, s.create_time, s.update_time, s.config_pb,"
    " CASE WHEN s.config_pb IS NULL THEN jsonb_build_object('sizing', s.sizing, 'filters', s.filters,"
    " 'risk', s.risk, 'exits', s.exits, 'perf', s.perf) END AS config_json"
)
_SELECT = (
    f"SELECT {_FIELDS}, st.copied, st.skipped, st.exposure_usd, st.realized_pnl_usd, st.unrealized_pnl_usd"
    " FROM subscriptions s LEFT JOIN subscription_stats st ON st.subscription_id = s.id"
)
_COLUMNS = ("id", "follower_user_id", "follower_wallet_id", "follower_proxy", "leader_proxy", "label",
            "state", "mode", "sizing", "filters", "risk", "exits", "perf", "config_pb", "applied_multiplier",
            "paused_reason", "create_time", "update_time")
_UPDATABLE = ("label", "state", "mode", "sizing", "filters", "risk", "exits", "perf", "config_pb",
              "applied_multiplier", "paused_reason", "update_time")


@dataclass(frozen=True, slots=True)
class Stored:
    """A subscription as read, with its row version (bumped on every change)."""

    sub: spb.Subscription
    version: int


def _stored(row: codec.Row) -> Stored:
    return Stored(codec.subscription_from_row(row), int(row["version"]))


async def get(conn: Conn, subscription_id: str, *, for_update: bool = False) -> Stored | None:
    """One subscription with its stats; locks the row when ``for_update``."""
    sql = _SELECT + " WHERE s.id = %s" + (" FOR UPDATE OF s" if for_update else "")
    row = await (await conn.execute(sql, (subscription_id,))).fetchone()
    return None if row is None else _stored(row)


async def insert(conn: Conn, sub: spb.Subscription) -> int:
    """Queue the insert of a new subscription; returns its version (1)."""
    sql = (f"INSERT INTO subscriptions ({', '.join(_COLUMNS)}) VALUES"
           f" ({', '.join('%(' + c + ')s' for c in _COLUMNS)})")
    await conn.execute(sql, codec.subscription_params(sub))
    return 1


async def update(conn: Conn, sub: spb.Subscription, locked_version: int) -> int:
    """Queue the write of the changeable columns of a subscription read ``FOR UPDATE`` at
    ``locked_version`` in this transaction; returns the new version."""
    sets = ", ".join(f"{c} = %({c})s" for c in _UPDATABLE)
    stop = ""
    if sub.state == spb.SUBSCRIPTION_STATE_STOPPED:
        stop = ", stop_time = COALESCE(stop_time, %(update_time)s)"
    sql = f"UPDATE subscriptions SET {sets}{stop}, version = version + 1 WHERE id = %(id)s"
    await conn.execute(sql, codec.subscription_params(sub))
    return locked_version + 1


def is_duplicate_active(exc: BaseException) -> bool:
    """True when ``exc`` is the one-ACTIVE-per-wallet-and-leader violation."""
    return (isinstance(exc, psycopg.errors.UniqueViolation)
            and exc.diag.constraint_name == ONE_ACTIVE_INDEX)


async def active_id(conn: Conn, follower_wallet_id: str, leader_proxy: str) -> str | None:
    """Id of the ACTIVE subscription of this wallet to this leader, if any."""
    row = await (await conn.execute(
        "SELECT id FROM subscriptions WHERE follower_wallet_id = %s AND leader_proxy = %s AND state = 'ACTIVE'",
        (follower_wallet_id, leader_proxy))).fetchone()
    return None if row is None else str(row["id"])


def duplicate_active(follower_wallet_id: str, leader_proxy: str, existing: str | None) -> AlreadyExists:
    """The 409 for a second ACTIVE subscription."""
    which = f" ({existing})" if existing else ""
    return AlreadyExists(f"an ACTIVE subscription{which} already copies leaderProxy {leader_proxy} "
                         f"for followerWalletId {follower_wallet_id}")


async def list_page(conn: Conn, *, follower_proxy: str, leader_proxy: str, state: str,
                    after: Cursor | None, limit: int) -> list[codec.Row]:
    """Up to ``limit`` subscription rows of a follower after ``after``, oldest first
    (decode with ``codec.subscription_from_row``)."""
    where = ["s.follower_proxy = %(fp)s"]
    if leader_proxy:
        where.append("s.leader_proxy = %(lp)s")
    if state:
        where.append("s.state = %(state)s")
    if after is not None:
        where.append("(s.create_time, s.id) > (%(t)s, %(i)s)")
    sql = f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY s.create_time, s.id LIMIT %(limit)s"
    params = {"fp": follower_proxy, "lp": leader_proxy, "state": state, "limit": limit,
              "t": after.time if after else None, "i": after.id if after else None}
    return await (await conn.execute(sql, params)).fetchall()


async def active_of_leader(conn: Conn, leader_proxy: str) -> list[Stored]:
    """Every ACTIVE subscription copying ``leader_proxy`` (stats not read: the index omits them)."""
    rows = await (await conn.execute(
        f"SELECT {_FIELDS} FROM subscriptions s WHERE s.leader_proxy = %s AND s.state = 'ACTIVE'",
        (leader_proxy,))).fetchall()
    return [_stored(r) for r in rows]


async def active_leaders(conn: Conn) -> set[str]:
    """Every leader with at least one ACTIVE subscription."""
    rows = await (await conn.execute(
        "SELECT DISTINCT leader_proxy FROM subscriptions WHERE state = 'ACTIVE'")).fetchall()
    return {str(r["leader_proxy"]) for r in rows}


async def fills_page(conn: Conn, subscription_id: str, *, after: Cursor | None,
                     limit: int) -> list[codec.Row]:
    """Up to ``limit`` fill rows of a subscription after ``after``, newest first."""
    cond = " AND (fill_time, id) < (%(t)s, %(i)s)" if after is not None else ""
    return await (await conn.execute(
        f"SELECT * FROM fills WHERE subscription_id = %(sid)s{cond}"
        " ORDER BY fill_time DESC, id DESC LIMIT %(limit)s",
        {"sid": subscription_id, "limit": limit,
         "t": after.time if after else None, "i": after.id if after else None})).fetchall()
