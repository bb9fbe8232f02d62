"""SQL for triggers and the positions they guard."""

from __future__ import annotations

from datetime import datetime

from services.control import codec
from services.control.db import Conn
from services.control.pagination import Cursor
from services.control.trigger_rules import GroupMember, HeldPosition
from tradingtools.control.v1 import subscription_pb2 as spb
from tradingtools.control.v1 import trigger_pb2 as tpb

_COLUMNS = ("id", "wallet", "follower_wallet_id", "subscription_id", "asset_id", "kind", "trigger_price",
            "trail_pct", "activation_price", "size", "sell_fraction", "oco_group", "price_source", "state",
            "state_reason", "high_water_mark", "source", "create_time", "update_time")
_UPDATABLE = ("trigger_price", "trail_pct", "activation_price", "size", "sell_fraction", "state",
              "state_reason", "update_time")


async def get(conn: Conn, trigger_id: str, *, for_update: bool = False) -> tpb.Trigger | None:
    """One trigger; locks the row when ``for_update``."""
    sql = "SELECT * FROM triggers WHERE id = %s" + (" FOR UPDATE" if for_update else "")
    row = await (await conn.execute(sql, (trigger_id,))).fetchone()
    return None if row is None else codec.trigger_from_row(row)


# The life of the position the trigger is made for, on the database's clock (migration 0690): guard cancels a
# trigger of a life that ended when it reads the closing SELL late, after the position was opened again. Only an
# OPEN position's: a trigger set while nothing is held (the row CLOSED or resolved, keeping its ended life's
# opening time) is for the next life, and records none.
_POSITION_LIFE = ("(SELECT opened_at FROM positions"
                  " WHERE follower_wallet_id = %(follower_wallet_id)s AND asset_id = %(asset_id)s AND state = 'OPEN')")
# The close such a trigger saw (migration 0790), read in the same statement (one snapshot): the row's closed_at
# when it is not OPEN, 'epoch' when there is no row (never held: no close, before any). Guard keeps it for the next
# life only while that close is the position's latest, and no clock of control's decides it.
_CLOSE_SEEN = ("(SELECT CASE WHEN p.state IS NULL THEN 'epoch'::timestamptz WHEN p.state <> 'OPEN' THEN p.closed_at"
               " END FROM (SELECT 1) one LEFT JOIN positions p ON p.follower_wallet_id = %(follower_wallet_id)s"
               " AND p.asset_id = %(asset_id)s)")


async def insert(conn: Conn, trigger: tpb.Trigger) -> None:
    """Insert a new trigger, with the opening time of the position it guards (or the close it saw)."""
    sql = (f"INSERT INTO triggers ({', '.join(_COLUMNS)}, position_opened_at, position_closed_seen) VALUES"
           f" ({', '.join('%(' + c + ')s' for c in _COLUMNS)}, {_POSITION_LIFE}, {_CLOSE_SEEN})")
    await conn.execute(sql, codec.trigger_params(trigger))


async def update(conn: Conn, trigger: tpb.Trigger) -> None:
    """Write the changeable columns and bump the version guard reloads on. The high-water mark is only ever
    lowered here (a PATCH resetting it: ``trigger_rules.mark_after_patch``); guard raises it."""
    sets = ", ".join(f"{c} = %({c})s" for c in _UPDATABLE)
    sql = (f"UPDATE triggers SET {sets}, high_water_mark = LEAST(high_water_mark, %(high_water_mark)s),"
           " version = version + 1 WHERE id = %(id)s")
    await conn.execute(sql, codec.trigger_params(trigger))


async def cancel_armed_of_subscription(conn: Conn, subscription_id: str, reason: str,
                                       now: datetime) -> list[tpb.Trigger]:
    """Cancel every ARMED trigger of a subscription; returns them as they were before."""
    before = await (await conn.execute(
        "SELECT * FROM triggers WHERE subscription_id = %s AND state = 'ARMED' ORDER BY id FOR UPDATE",
        (subscription_id,))).fetchall()
    if before:
        await conn.execute(
            "UPDATE triggers SET state = 'CANCELLED', state_reason = %s, update_time = %s,"
            " version = version + 1 WHERE subscription_id = %s AND state = 'ARMED'",
            (reason, now, subscription_id))
    return [codec.trigger_from_row(r) for r in before]


async def cancelled_by_stop(conn: Conn, sub: spb.Subscription, reason: str) -> list[str]:
    """Ids of the triggers the stop of ``sub`` cancelled (with ``reason``). Read through the wallet's index (no
    index holds a subscription's cancelled triggers): a subscription's triggers are on its follower proxy."""
    rows = await (await conn.execute(
        "SELECT id FROM triggers WHERE wallet = %s AND subscription_id = %s AND state = 'CANCELLED'"
        " AND state_reason = %s ORDER BY id", (sub.follower_proxy, sub.id, reason))).fetchall()
    return [r["id"] for r in rows]


async def list_page(conn: Conn, *, wallet: str, state: str, after: Cursor | None,
                    limit: int) -> list[codec.Row]:
    """Up to ``limit`` trigger rows of a wallet after ``after``, oldest first."""
    where = ["wallet = %(w)s"]
    if state:
        where.append("state = %(state)s")
    if after is not None:
        where.append("(create_time, id) > (%(t)s, %(i)s)")
    sql = f"SELECT * FROM triggers WHERE {' AND '.join(where)} ORDER BY create_time, id LIMIT %(limit)s"
    params = {"w": wallet, "state": state, "limit": limit,
              "t": after.time if after else None, "i": after.id if after else None}
    return await (await conn.execute(sql, params)).fetchall()


async def armed_elsewhere_in_group(conn: Conn, trigger: tpb.Trigger) -> GroupMember | None:
    """An ARMED trigger of ``trigger``'s OCO group on another position, if any. Takes a lock on the group until
    the transaction ends first, so two creates joining one group from two positions cannot both find none."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('trigger-oco/' || %s, 0))",
                       (trigger.oco_group,))
    row = await (await conn.execute(
        "SELECT id, wallet, follower_wallet_id, asset_id FROM triggers WHERE oco_group = %s AND state = 'ARMED'"
        " AND (wallet <> %s OR follower_wallet_id <> %s OR asset_id <> %s) ORDER BY id LIMIT 1",
        (trigger.oco_group, trigger.wallet, trigger.follower_wallet_id, trigger.asset_id))).fetchone()
    return None if row is None else GroupMember(row["id"], row["wallet"], row["follower_wallet_id"], row["asset_id"])


async def position_of(conn: Conn, follower_wallet_id: str, asset_id: str) -> HeldPosition | None:
    """The wallet's current position in ``asset_id`` (whatever its origin), or None when it never held one."""
    row = await (await conn.execute(
        "SELECT state, size, wallet FROM positions WHERE follower_wallet_id = %s AND asset_id = %s",
        (follower_wallet_id, asset_id))).fetchone()
    return None if row is None else HeldPosition(row["state"], row["size"], row["wallet"] or "")
