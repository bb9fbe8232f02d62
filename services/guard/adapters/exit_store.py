"""PostgreSQL adapter for copy exits: register a position's exits, resize them, close them with the position."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import Any

import orjson
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from common.decimals import MIN_HELD_SHARES, fmt
from services.guard.adapters.exit_fast_sql import (
    CANCEL_CLOSED_LIFE,
    LOCK,
    PEEK,
    REGISTER_EMPTY,
    REGISTER_EMPTY_MANY,
    RESIZE_EMPTY,
    RESIZE_OR_PEEK_MANY,
    SELL_PEEK,
)
from services.guard.adapters.exit_group_writes import (
    Opening,
    cancel_ended_lives,
    cancel_events,
    close_group,
    register,
    renew,
    reopened,
    used_up,
)
from services.guard.adapters.trigger_store import Clock, dict_pool, insert_events
from services.guard.domain import exit_plans
from services.guard.domain.exit_plans import CopyFill, ExitsChange
from services.guard.domain.trigger_model import Reason
from services.guard.domain.trigger_rows import TriggerRow, event


class ExitStore:
    """``guard_position_exits`` and the COPY triggers it groups. The triggers a change created, resized or
    cancelled are handed to ``announce`` once it committed (``adapters.guard_notices``: the other guards of a
    rollout reload them)."""

    def __init__(self, pool: AsyncConnectionPool[Any], clock: Clock,
                 announce: Callable[[Iterable[str]], None] | None = None) -> None:
        self.pool = dict_pool(pool)
        self.clock = clock
        self.announce = announce

    def _told(self, change: ExitsChange) -> ExitsChange:
        if self.announce is not None and (change.created or change.updated or change.cancelled):
            self.announce([r.id for r in (*change.created, *change.updated, *change.cancelled)])
        return change

    async def on_buy_fill(self, fill: CopyFill, tick_size: Decimal) -> ExitsChange:
        """Register the subscription's exits for the position the fill opened, or resize the open ones.

        Exits are priced from the position's average entry price and snapshot the subscription's
        ``exits`` at that moment, so a later PATCH applies to new positions only. A group whose exits
        were all used up (its closing exit fired) while shares remain is closed and a fresh one registered
        from the same snapshot, less the exits the user cancelled (none at all when the user cancelled
        every one: the group is only resized).
        """
        return self._told(await self._on_buy_fill(fill, tick_size))

    async def _on_buy_fill(self, fill: CopyFill, tick_size: Decimal) -> ExitsChange:
        now = self.clock()
        quick = await self._register_without_exits(fill, now)
        if quick is not None:
            return quick
        async with self.pool.connection() as conn, conn.transaction():
            pos, group = await _locked(conn, fill.follower_wallet_id, fill.asset_id)
            held: Decimal = pos["size"] if pos else fill.filled_size
            entry: Decimal = pos["avg_price"] if pos and pos["avg_price"] else fill.avg_price
            wallet: str = (pos["wallet"] if pos else fill.wallet).lower()
            if held <= 0:
                return ExitsChange("NO_POSITION")
            gone: list[TriggerRow] = []
            if group is not None and reopened((group["exits"] or {}).get("opened_at"), pos):
                gone = await close_group(conn, group["oco_group"], now,
                                         reopened=(fill.follower_wallet_id, fill.asset_id, pos["opened_at"]))
                group = None
            if group is not None:
                renewing = await used_up(conn, group)
                if renewing is None:
                    return await self._resize(conn, group, held, now)
                # exits used up, shares still held: the same position keeps its own exits (a PATCH is for
                # new positions), less those the user cancelled
                return await renew(conn, group, renewing, held=held, entry=entry, pos=pos, tick_size=tick_size,
                                    now=now)
            sub = await (await conn.execute("SELECT exits FROM subscriptions WHERE id = %s",
                                            (fill.subscription_id,))).fetchone()
            if sub is None:
                return ExitsChange("NO_SUBSCRIPTION", cancelled=tuple(gone))
            return await register(conn, Opening(
                oco_group=exit_plans.group_id(fill.follower_wallet_id, fill.asset_id, fill.client_order_id),
                follower_wallet_id=fill.follower_wallet_id, asset_id=fill.asset_id, wallet=wallet,
                subscription_id=fill.subscription_id, opening_order_id=fill.client_order_id, entry=entry,
                held=held, config_json=sub["exits"] or {}, opened_at=pos["opened_at"] if pos else None),
                frozenset(), tick_size, now, gone)

    async def renew_used(self, follower_wallet_id: str, asset_id: str, tick_size: Decimal) -> ExitsChange:
        """After a SELL fill left shares: when the position's open group has no exit left (the closing one
        fired and its SELL sold only part), the group is renewed from its own exits for the shares held."""
        return self._told(await self._renew_used(follower_wallet_id, asset_id, tick_size))

    async def _renew_used(self, follower_wallet_id: str, asset_id: str, tick_size: Decimal) -> ExitsChange:
        now = self.clock()
        async with self.pool.connection() as conn, conn.transaction():
            pos, group = await _locked(conn, follower_wallet_id, asset_id)
            if pos is None or pos["size"] < MIN_HELD_SHARES:
                return ExitsChange("OPEN")
            if group is None or reopened((group["exits"] or {}).get("opened_at"), pos):
                return ExitsChange("OPEN")
            renewing = await used_up(conn, group)
            if renewing is None:  # renewed by the other guard of a rollout since the caller's peek, maybe
                rows = await (await conn.execute(
                    "SELECT id FROM triggers WHERE oco_group = %s AND state = 'ARMED' AND source = 'COPY'"
                    " ORDER BY id", (group["oco_group"],))).fetchall()
                return ExitsChange("OPEN", armed=tuple(r["id"] for r in rows))
            return await renew(conn, group, renewing, held=pos["size"],
                                entry=pos["avg_price"] or group["entry_price"], pos=pos, tick_size=tick_size,
                                now=now)

    async def _register_without_exits(self, fill: CopyFill, now: Any) -> ExitsChange | None:
        """The common cases in two statements instead of a locked transaction of eight: a position whose
        open group has no exits (only its size basis changes), or no open group and a subscription without
        exits (the empty group is still recorded: a later PATCH of the exits applies to new positions
        only). None: anything else, for the full path to handle."""
        params = {"sub": fill.subscription_id, "w": fill.follower_wallet_id, "a": fill.asset_id}
        async with self.pool.connection() as conn:
            peek = await (await conn.execute(PEEK, params)).fetchone()
            if peek is None:
                return None
            if peek["open_planned"] == 0:
                row = await (await conn.execute(RESIZE_EMPTY, {**params, "filled": fill.filled_size,
                                                                "now": now})).fetchone()
                return ExitsChange("RESIZED") if row is not None else None
            if peek["open_planned"] is not None or not peek["has_sub"]:
                return None
            config_json = peek["exits"] or {}
            try:
                if not exit_plans.ExitsConfig.from_json(config_json).empty:
                    return None
            except (ValueError, ArithmeticError, AttributeError, TypeError):
                return None
            row = await (await conn.execute(REGISTER_EMPTY, {
                **params, "g": exit_plans.group_id(fill.follower_wallet_id, fill.asset_id, fill.client_order_id),
                "wallet": fill.wallet, "coid": fill.client_order_id, "avg": fill.avg_price,
                "filled": fill.filled_size, "doc": Jsonb({"config": config_json, "planned": []}), "now": now,
            })).fetchone()
        return ExitsChange("CREATED") if row is not None else None

    async def on_buy_fills_quick(self, fills: Sequence[CopyFill]) -> list[ExitsChange | None]:
        """:meth:`_register_without_exits` for a batch of fills (in stream order), with the results
        one-by-one handling would give, in one statement (two when a position is new).

        Positions are independent, so each is decided on its own: its first fill as the single-fill path
        would (a resize of an open group without exits, or the registration of an empty group), its later
        fills as resizes of that group. One statement resizes every position whose group exists (the
        usual case) and peeks at the others; one more registers the new ones. Each statement is atomic
        and re-checks what it relies on, so they run in autocommit (one round trip each). A position that
        needs more (exits to plan, no position, a race) gets None for all of its fills, for the caller to
        handle one by one, in order.
        """
        if not fills:
            return []
        by_position: dict[tuple[str, str], list[int]] = {}
        for i, fill in enumerate(fills):
            by_position.setdefault((fill.follower_wallet_id, fill.asset_id), []).append(i)
        positions = list(by_position.values())
        lasts = [fills[idx[-1]] for idx in positions]
        out: list[ExitsChange | None] = [None] * len(fills)
        now = self.clock()
        async with self.pool.connection() as conn:
            keys = orjson.dumps([{"i": n, "w": last.follower_wallet_id, "a": last.asset_id,
                                  "filled": str(last.filled_size), "sub": fills[idx[0]].subscription_id}
                                 for n, (idx, last) in enumerate(zip(positions, lasts, strict=True))]).decode()
            rows = await (await conn.execute(RESIZE_OR_PEEK_MANY, {"rows": keys, "now": now})).fetchall()
            register: list[tuple[int, dict[str, Any]]] = []  # positions whose empty group is recorded
            for row in rows:
                if row["resized"]:
                    for i in positions[row["i"]]:
                        out[i] = ExitsChange("RESIZED")
                # an open group without exits that was not resized has no position left: the full path says so
                elif row["open_planned"] is None and row["has_sub"]:
                    config_json = row["exits"] or {}
                    try:
                        if exit_plans.ExitsConfig.from_json(config_json).empty:
                            register.append((row["i"], config_json))
                    except (ValueError, ArithmeticError, AttributeError, TypeError):
                        pass
            if register:
                groups: dict[str, int] = {}
                cols: list[list[Any]] = [[] for _ in range(10)]
                for k, config_json in register:
                    first, last = fills[positions[k][0]], fills[positions[k][-1]]
                    g = exit_plans.group_id(first.follower_wallet_id, first.asset_id, first.client_order_id)
                    groups[g] = k
                    for col, value in zip(cols, (
                            g, first.follower_wallet_id, first.asset_id, first.wallet, first.subscription_id,
                            first.client_order_id, first.avg_price, first.filled_size, last.filled_size,
                            Jsonb({"config": config_json, "planned": []})), strict=True):
                        col.append(value)
                for row in await (await conn.execute(REGISTER_EMPTY_MANY, (now, now, *cols))).fetchall():
                    first_i, *later = positions[groups[row["oco_group"]]]
                    out[first_i] = ExitsChange("CREATED")
                    for i in later:
                        out[i] = ExitsChange("RESIZED")
        return out

    async def _resize(self, conn: Any, group: dict[str, Any], held: Decimal, now: Any) -> ExitsChange:
        """Resize the group's size-based exits to ``held``; every ARMED exit of the group is returned (``armed``),
        resized or not, for the caller to watch."""
        old: Decimal = group["position_size"]
        updated: list[TriggerRow] = []
        rows = await (await conn.execute(
            "SELECT id, size FROM triggers WHERE oco_group = %s AND state = 'ARMED' AND source = 'COPY' ORDER BY id"
            + (" FOR UPDATE" if held != old else ""), (group["oco_group"],))).fetchall()  # key order, as a fire
        armed = tuple(r["id"] for r in rows)
        if held != old:
            for r in rows:
                if r["size"] <= 0:
                    continue
                new_size = Decimal(fmt(exit_plans.resized(r["size"], old, held)))
                row = await (await conn.execute(
                    "UPDATE triggers SET size = %s, update_time = %s, version = version + 1 WHERE id = %s"
                    " RETURNING *", (new_size, now, r["id"]))).fetchone()
                updated.append(TriggerRow.from_row(row))
            await conn.execute("UPDATE guard_position_exits SET position_size = %s, updated_at = %s"
                               " WHERE oco_group = %s", (held, now, group["oco_group"]))
            await insert_events(conn, [event(r, "UPDATED", reason="POSITION_RESIZED") for r in updated])
        return ExitsChange("RESIZED", updated=tuple(updated), armed=armed)

    async def on_sell_fill(self, follower_wallet_id: str, asset_id: str) -> ExitsChange:
        """After a SELL filled: when the position is gone, cancel every ARMED trigger of the life that ended (its
        copy exits and manual ones alike: POSITION_CLOSED) and close its exits group. A trigger left armed would
        sell the next position a later copy opens in that asset; one set after the close (nothing held) is that
        next life's and stays (:data:`CANCEL_CLOSED_LIFE`). When the position was opened again since (this SELL is
        read late), the triggers of the life that ended are cancelled, with its group or without one. When
        shares are left but its group's exits are all used up: EXITS_USED, for :meth:`renew_used`."""
        return self._told(await self._on_sell_fill(follower_wallet_id, asset_id))

    async def _on_sell_fill(self, follower_wallet_id: str, asset_id: str) -> ExitsChange:
        # The usual cases in one autocommit statement: shares are left, or nothing is armed on the position
        # and it has no open group. Nothing changes in either.
        async with self.pool.connection() as conn:
            peek = await (await conn.execute(SELL_PEEK, {"w": follower_wallet_id, "a": asset_id})).fetchone()
        if peek is not None and peek["size"] is not None and peek["size"] >= MIN_HELD_SHARES:
            if (peek["has_group"] and reopened(peek["group_opened_at"], peek)) or peek["ended_life"]:
                return await self._close_reopened(follower_wallet_id, asset_id)
            # shares left and no exit guards them any more: the caller renews the group (renew_used)
            return ExitsChange("EXITS_USED") if peek["used_up"] else ExitsChange("OPEN", armed=tuple(peek["armed"]))
        if peek is not None and not peek["has_group"] and not peek["has_armed"]:
            return ExitsChange("NO_POSITION")
        now = self.clock()
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(LOCK, (follower_wallet_id, asset_id))
            pos = await (await conn.execute(
                "SELECT size FROM positions WHERE follower_wallet_id = %s AND asset_id = %s",
                (follower_wallet_id, asset_id))).fetchone()
            if pos is not None and pos["size"] >= MIN_HELD_SHARES:  # a smaller remainder can never be sold
                return ExitsChange("OPEN")
            group = await (await conn.execute(
                "UPDATE guard_position_exits SET state = 'CLOSED', closed_reason = %s, updated_at = %s"
                " WHERE follower_wallet_id = %s AND asset_id = %s AND state = 'OPEN' RETURNING oco_group",
                (Reason.POSITION_CLOSED.value, now, follower_wallet_id, asset_id))).fetchone()
            rows = await (await conn.execute(CANCEL_CLOSED_LIFE, {
                "reason": Reason.POSITION_CLOSED.value, "now": now, "a": asset_id, "w": follower_wallet_id,
            })).fetchall()
            if group is None and not rows:
                return ExitsChange("NO_POSITION")
            cancelled = await cancel_events(conn, rows)
        return ExitsChange("POSITION_CLOSED", cancelled=tuple(cancelled))

    async def _close_reopened(self, follower_wallet_id: str, asset_id: str) -> ExitsChange:
        """The position closed and was opened again since (this SELL event was read after the reopening BUY was
        booked): the exits group of the life that ended, if any, is closed, and every ARMED trigger made for an
        earlier life is cancelled with it (:func:`close_group`)."""
        now = self.clock()
        async with self.pool.connection() as conn, conn.transaction():
            pos, group = await _locked(conn, follower_wallet_id, asset_id)
            if pos is None or pos["opened_at"] is None:
                return ExitsChange("OPEN")
            life = (follower_wallet_id, asset_id, pos["opened_at"])
            closed = group is not None and reopened((group["exits"] or {}).get("opened_at"), pos)
            cancelled = await (close_group(conn, group["oco_group"], now, reopened=life) if closed
                               else cancel_ended_lives(conn, life, now))
        return ExitsChange("POSITION_CLOSED" if closed or cancelled else "OPEN", cancelled=tuple(cancelled))

    async def group(self, follower_wallet_id: str, asset_id: str) -> dict[str, Any] | None:
        """The OPEN exits group of a position (for inspection and tests)."""
        async with self.pool.connection() as conn:
            row = await (await conn.execute(
                "SELECT * FROM guard_position_exits WHERE follower_wallet_id = %s AND asset_id = %s"
                " AND state = 'OPEN'", (follower_wallet_id, asset_id))).fetchone()
        return None if row is None else dict(row)


async def _locked(conn: Any, follower_wallet_id: str, asset_id: str) -> tuple[Any, Any]:
    """In the caller's transaction: lock the position (advisory, as fires and fills do), then read it and its
    OPEN exits group (locked): (position row or None, group row or None)."""
    await conn.execute(LOCK, (follower_wallet_id, asset_id))
    pos = await (await conn.execute(
        "SELECT size, avg_price, wallet, opened_at FROM positions WHERE follower_wallet_id = %s AND asset_id = %s",
        (follower_wallet_id, asset_id))).fetchone()
    group = await (await conn.execute(
        "SELECT * FROM guard_position_exits WHERE follower_wallet_id = %s AND asset_id = %s"
        " AND state = 'OPEN' FOR UPDATE", (follower_wallet_id, asset_id))).fetchone()
    return pos, group
