"""One exits group inside the caller's transaction (the position locked): register, renew, close."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from psycopg.types.json import Jsonb

from services.guard.adapters.exit_fast_sql import ended_life
from services.guard.adapters.trigger_store import insert_events
from services.guard.domain import exit_plans
from services.guard.domain.exit_plans import ExitsChange
from services.guard.domain.trigger_model import Reason
from services.guard.domain.trigger_rows import TriggerRow, event


@dataclass(frozen=True, slots=True)
class Opening:
    """What a new exits group is registered for."""

    oco_group: str
    follower_wallet_id: str
    asset_id: str
    wallet: str
    subscription_id: str
    opening_order_id: str
    entry: Decimal
    held: Decimal
    config_json: Any
    opened_at: datetime | None


# A group is used up when none of its exits is ARMED or FIRED and a closing exit (one that sells the whole
# position: a sell fraction of 1) fired: its SELL sold only part, or shares were bought since. Ladder rungs
# (fractions below 1) that fired alone leave the rest of the position to the exits the user kept: renewed, a
# rung at a price already reached would fire again at once, and again, until the whole position was sold.
USED_UP_SQL = ("SELECT count(*) FILTER (WHERE state IN ('ARMED', 'FIRED')) AS live,"
               " count(*) FILTER (WHERE state IN ('DONE', 'FAILED') AND sell_fraction >= 1) AS closed"
               " FROM triggers WHERE oco_group = %s")


async def used_up(conn: Any, group: Any) -> frozenset[str] | None:
    """The exits the user cancelled when ``group`` is used up (see :data:`USED_UP_SQL`) and at least one exit is
    left to renew; None when the group is to be kept (exits live, none planned, no closing exit fired, or all
    cancelled)."""
    planned = (group["exits"] or {}).get("planned", [])
    if not planned:
        return None
    counts = await (await conn.execute(USED_UP_SQL, (group["oco_group"],))).fetchone()
    if counts is None or counts["live"] > 0 or counts["closed"] == 0:
        return None
    removed = await removed_by_user(conn, group["oco_group"], planned)
    return None if len(removed) == len(planned) else removed


async def renew(conn: Any, group: Any, removed: frozenset[str], *, held: Decimal, entry: Decimal, pos: Any,
                 tick_size: Decimal, now: Any) -> ExitsChange:
    """Close a used-up group (EXITS_USED) and register its renewal from its own exits for the shares held."""
    await conn.execute(
        "UPDATE guard_position_exits SET state = 'CLOSED', closed_reason = 'EXITS_USED', updated_at = %s"
        " WHERE oco_group = %s", (now, group["oco_group"]))
    doc = group["exits"] or {}
    return await register(conn, Opening(
        oco_group=exit_plans.renewal_id(group["oco_group"]), follower_wallet_id=group["follower_wallet_id"],
        asset_id=group["asset_id"], wallet=group["wallet"], subscription_id=group["subscription_id"],
        opening_order_id=group["opening_order_id"], entry=entry, held=held,
        config_json=doc.get("config", {}), opened_at=pos["opened_at"] if pos else None),
        removed, tick_size, now, [])


async def register(conn: Any, o: Opening, removed: frozenset[str], tick_size: Decimal, now: Any,
                    gone: list[TriggerRow]) -> ExitsChange:
    """Insert an exits group and its triggers (ARMED, source COPY); ALREADY_REGISTERED when it exists."""
    plan = exit_plans.without(exit_plans.plan(exit_plans.ExitsConfig.from_json(o.config_json),
                                              oco_group=o.oco_group, entry_price=o.entry, tick_size=tick_size),
                              removed, Reason.CANCELLED_BY_USER.value)
    inserted = await (await conn.execute(
        "INSERT INTO guard_position_exits (oco_group, follower_wallet_id, asset_id, wallet, subscription_id,"
        " opening_order_id, entry_price, position_size, exits, skipped, state, created_at, updated_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'OPEN', %s, %s)"
        " ON CONFLICT (oco_group) DO NOTHING RETURNING oco_group",
        (o.oco_group, o.follower_wallet_id, o.asset_id, o.wallet, o.subscription_id, o.opening_order_id, o.entry,
         o.held,
         Jsonb({"config": o.config_json, "planned": [e.name for e in plan.exits],
                **({"opened_at": o.opened_at.isoformat()} if o.opened_at else {})}),
         Jsonb([{"exit": n, "reason": r} for n, r in plan.skipped]), now, now))).fetchone()
    if inserted is None:
        return ExitsChange("ALREADY_REGISTERED", cancelled=tuple(gone))
    created: list[TriggerRow] = []
    for e in plan.exits:
        row = await (await conn.execute(
            "INSERT INTO triggers (id, wallet, follower_wallet_id, subscription_id, asset_id, kind,"
            " trigger_price, trail_pct, activation_price, size, sell_fraction, oco_group, price_source,"
            " state, state_reason, high_water_mark, source, create_time, update_time, position_opened_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 0, 0, %s, %s, 'BEST_BID', 'ARMED', '', %s, 'COPY',"
            " %s, %s, %s) ON CONFLICT (id) DO NOTHING RETURNING *",
            (e.id, o.wallet, o.follower_wallet_id, o.subscription_id, o.asset_id, e.kind.value,
             e.trigger_price, e.trail_pct, e.sell_fraction, o.oco_group, e.high_water_mark, now,
             now, o.opened_at))).fetchone()
        if row is not None:
            created.append(TriggerRow.from_row(row))
    await insert_events(conn, [event(r, "ARMED", reason=Reason.ARMED.value) for r in created])
    return ExitsChange("CREATED", created=tuple(created), cancelled=tuple(gone), skipped=plan.skipped)


def reopened(recorded: Any, pos: Any) -> bool:
    """True when the position was opened again after its exits group was registered: the opening time the
    group ``recorded`` is not the position's ``opened_at`` now (groups registered before opening times were
    recorded never are)."""
    opened = pos["opened_at"] if pos else None
    return isinstance(recorded, str) and opened is not None and datetime.fromisoformat(recorded) != opened


async def removed_by_user(conn: Any, oco_group: str, planned: list[str]) -> frozenset[str]:
    """The exits of a group (by name) that the user cancelled: a renewal of the group leaves them out."""
    ids = {exit_plans.exit_id(oco_group, name): name for name in planned}
    rows = await (await conn.execute(
        "SELECT id FROM triggers WHERE id = ANY(%s) AND state = 'CANCELLED' AND state_reason = %s",
        (list(ids), Reason.CANCELLED_BY_USER.value))).fetchall()
    return frozenset(ids[r["id"]] for r in rows)


# A position's ARMED trigger made for a life that ended (``exit_fast_sql.ended_life``). Parameters: w (wallet id),
# a (asset), opened (the position's opening time now).
_POSITION = "follower_wallet_id = %(w)s AND asset_id = %(a)s"
_WALLET = f"(SELECT wallet FROM positions WHERE {_POSITION})"
_ENDED_LIFE = ended_life("t", w="%(w)s", a="%(a)s", opened="%(opened)s", wallet=_WALLET, proven=False)


def _cancel(which: str) -> str:
    """Cancel the ARMED triggers ``which`` picks, their rows locked in key order first (as a fire and a hold take
    them: tests/guard/test_lock_order_exits.py)."""
    return ("WITH l AS MATERIALIZED (SELECT t.id FROM triggers t WHERE t.state = 'ARMED' AND " + which
            + " ORDER BY t.id FOR UPDATE OF t)"
            " UPDATE triggers t SET state = 'CANCELLED', state_reason = %(reason)s, update_time = %(now)s,"
            " version = t.version + 1 FROM l WHERE t.id = l.id AND t.state = 'ARMED' AND " + which + " RETURNING t.*")


async def close_group(conn: Any, oco_group: str, now: Any, *,
                      reopened: tuple[str, str, datetime] | None = None) -> list[TriggerRow]:
    """Close an exits group whose position is gone and cancel its ARMED triggers (POSITION_CLOSED).

    ``reopened`` (wallet id, asset, opened at): the position was opened again since; every ARMED trigger on it
    made for an earlier life (manual ones too: :data:`_ENDED_LIFE`) ended with that life and is cancelled with it,
    as when the closing SELL is read before the reopening. Left armed, a stop set for the old life would sell the
    new one."""
    await conn.execute(
        "UPDATE guard_position_exits SET state = 'CLOSED', closed_reason = %s, updated_at = %s WHERE oco_group = %s",
        (Reason.POSITION_CLOSED.value, now, oco_group))
    which = "oco_group = %(g)s"
    args: dict[str, Any] = {"g": oco_group, "reason": Reason.POSITION_CLOSED.value, "now": now}
    if reopened is not None:
        which = f"(oco_group = %(g)s OR {_POSITION} AND {_ENDED_LIFE})"
        args.update(zip(("w", "a", "opened"), reopened, strict=True))
    rows = await (await conn.execute(_cancel(which), args)).fetchall()
    return await cancel_events(conn, rows)


async def cancel_ended_lives(conn: Any, life: tuple[str, str, datetime], now: Any) -> list[TriggerRow]:
    """Cancel (POSITION_CLOSED) the ARMED triggers of a position made for a life that ended (:data:`_ENDED_LIFE`;
    ``life``: wallet id, asset, the position's opening time now), whether or not it had an exits group (one
    bought through the terminal has none). Only when one of them is known to be an ended life's (the proof that
    the position was opened again): without it, a trigger that recorded no life and was set before any life was
    archived may be one set before the position first opened, for the life that is open now."""
    w, a, opened = life
    proof = ended_life("e", w="%(w)s", a="%(a)s", opened="%(opened)s", wallet=_WALLET, proven=True)
    rows = await (await conn.execute(
        _cancel(_POSITION + " AND " + _ENDED_LIFE + " AND EXISTS (SELECT 1 FROM triggers e"
                " WHERE e.follower_wallet_id = %(w)s AND e.asset_id = %(a)s AND e.state = 'ARMED' AND " + proof + ")"),
        {"reason": Reason.POSITION_CLOSED.value, "now": now, "w": w, "a": a, "opened": opened})).fetchall()
    return await cancel_events(conn, rows)


async def cancel_events(conn: Any, rows: list[Any]) -> list[TriggerRow]:
    """Trigger rows just cancelled for POSITION_CLOSED, in id order, with their CANCELLED events written."""
    cancelled = sorted((TriggerRow.from_row(r) for r in rows), key=lambda r: r.id)
    await insert_events(conn, [event(r, "CANCELLED", reason=Reason.POSITION_CLOSED.value) for r in cancelled])
    return cancelled
