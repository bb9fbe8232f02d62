"""Copy fills register a position's exits; a mirrored exit cancels them."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.guard.conftest import GuardFactory
from tests.guard.standins import (
    ASSET,
    BUY,
    SELL,
    WALLET_ID,
    StandIns,
    add_market,
    copy_fill,
    db,
    insert_subscription,
    set_position,
    wait_connected,
)
from tests.helpers import eventually
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration

EXITS = {"takeProfitPct": "40", "stopLossPct": "25", "trailingStopPct": "10",
         "ladder": [{"gainPct": "20", "sellFraction": "0.5"}, {"gainPct": "300", "sellFraction": "1"}]}


async def _copy_triggers(conn: Any, state: str | None = None) -> list[dict[str, Any]]:
    sql = "SELECT * FROM triggers WHERE source = 'COPY'" + (" AND state = %s" if state else "") + " ORDER BY id"
    return [dict(r) for r in await (await conn.execute(sql, (state,) if state else ())).fetchall()]


async def test_copy_fill_registers_exits_and_a_mirrored_exit_cancels_them(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    conn = await db(db_url)
    await insert_subscription(conn, "sub_1", exits=EXITS)
    await add_market(redis)
    running = await make_guard()
    guard = running.guard
    # the executor books the copy BUY (position) and emits FILLED
    await set_position(conn, "100", "0.40")
    await standins.executor.emit(copy_fill("co_buy1", BUY, filled="100", price="0.40"))

    async def registered() -> list[dict[str, Any]]:
        return await _copy_triggers(conn, "ARMED")

    rows = await eventually(lambda: _count(registered, 4))
    by_price = {(r["kind"], r["trigger_price"], r["trail_pct"], r["sell_fraction"], r["high_water_mark"]) for r in rows}
    assert by_price == {
        ("TAKE_PROFIT", Decimal("0.56"), Decimal(0), Decimal(1), Decimal(0)),
        ("STOP_LOSS", Decimal("0.3"), Decimal(0), Decimal(1), Decimal(0)),
        ("TRAILING_STOP", Decimal(0), Decimal(10), Decimal(1), Decimal(0)),
        ("TAKE_PROFIT", Decimal("0.48"), Decimal(0), Decimal("0.5"), Decimal(0)),
    }
    assert len({r["oco_group"] for r in rows}) == 1 and all(r["subscription_id"] == "sub_1" for r in rows)
    group = await running.guard.exit_store.group(WALLET_ID, ASSET)
    assert group is not None and group["skipped"] == [{"exit": "ladder_1", "reason": "PRICE_ABOVE_MAX"}]
    assert {r["id"] for r in rows} <= guard.engine.ids()
    await eventually(lambda: _watching(redis))

    # a replay of the same event and a later BUY change nothing but the size basis (fraction-based exits)
    await standins.executor.emit(copy_fill("co_buy1", BUY, filled="100", price="0.40"))
    await set_position(conn, "150", "0.42")
    await standins.executor.emit(copy_fill("co_buy2", BUY, filled="50", price="0.46"))
    await _handled(running, 3)
    await guard.drain()
    assert len(await _copy_triggers(conn)) == 4
    group = await running.guard.exit_store.group(WALLET_ID, ASSET)
    assert group is not None and group["position_size"] == Decimal(150)

    # the leader exits; the mirrored SELL closes the position: the exits are cancelled
    await set_position(conn, "0", "0.42")
    await standins.executor.emit(copy_fill("co_sell1", SELL, filled="150", price="0.35"))

    async def closed() -> bool:
        rows = await _copy_triggers(conn)
        return all(r["state"] == "CANCELLED" and r["state_reason"] == "POSITION_CLOSED" for r in rows)

    await eventually(closed)
    assert guard.engine.ids() == set()
    assert await running.guard.exit_store.group(WALLET_ID, ASSET) is None

    # PATCH of the subscription's exits applies to the next position only
    await conn.execute("UPDATE subscriptions SET exits = %s::jsonb WHERE id = 'sub_1'", ('{"stopLossPct": "50"}',))
    await set_position(conn, "10", "0.60")
    await standins.executor.emit(copy_fill("co_buy3", BUY, filled="10", price="0.60"))
    rows = await eventually(lambda: _count(registered, 1))
    assert [(r["kind"], r["trigger_price"]) for r in rows] == [("STOP_LOSS", Decimal("0.3"))]
    await conn.close()


async def test_a_position_opened_without_exits_keeps_none_after_a_patch(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    conn = await db(db_url)
    await insert_subscription(conn, "sub_1", exits={})
    await add_market(redis)
    running = await make_guard()
    await set_position(conn, "100", "0.40")
    await standins.executor.emit(copy_fill("co_buy1", BUY, filled="100", price="0.40"))

    async def grouped() -> dict[str, Any] | None:
        return await running.guard.exit_store.group(WALLET_ID, ASSET)

    group = await eventually(grouped)  # recorded with no exits (the two-statement path)
    assert (group["exits"]["planned"], group["skipped"], group["position_size"], group["entry_price"]) == (
        [], [], Decimal(100), Decimal("0.40"))
    # exits added later apply to new positions only: more shares of this one create nothing
    await conn.execute("UPDATE subscriptions SET exits = %s::jsonb WHERE id = 'sub_1'", ('{"stopLossPct": "50"}',))
    await set_position(conn, "150", "0.42")
    await standins.executor.emit(copy_fill("co_buy2", BUY, filled="50", price="0.46"))

    async def resized() -> bool:
        group = await grouped()
        return group is not None and group["position_size"] == Decimal(150)

    await eventually(resized)  # the fill was handled: its size basis is in the group
    assert await _copy_triggers(conn) == []
    await conn.close()


async def _count(fetch: Any, n: int) -> list[dict[str, Any]] | None:
    rows = await fetch()
    return rows if len(rows) == n else None


async def _handled(running: Any, n: int) -> None:
    """Until the order-event consumer has handled ``n`` events to the end (``guard.stats.order_events`` counts an
    event as its handling starts, before the exits it changes are committed)."""
    await eventually(lambda: running.orders.stats.handled >= n)


async def _watching(redis: Any) -> bool:
    return ASSET in await redis.smembers("tt:watch:triggers")


async def test_copy_exit_fires_and_partial_rung_leaves_the_rest_armed(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    conn = await db(db_url)
    await insert_subscription(conn, "sub_1", exits={"stopLossPct": "50", "ladder": [
        {"gainPct": "25", "sellFraction": "0.5"}]})
    await add_market(redis, min_size="1")
    running = await make_guard()
    await set_position(conn, "20", "0.40")
    await standins.executor.emit(copy_fill("co_buy1", BUY, filled="20", price="0.40"))
    await eventually(lambda: len(running.guard.engine) == 2)
    await wait_connected(standins.ingest)
    await standins.ingest.tick(bid="0.50", ask="0.52")  # the 25% rung: sells half
    await eventually(lambda: len(standins.executor.sells) == 1)
    sell = standins.executor.sells[0]
    assert (sell.size, sell.subscription_id, sell.mode) == ("10", "sub_1", 2)  # PAPER like the subscription
    await eventually(lambda: len(running.guard.engine) == 1)  # the stop-loss guards the rest
    await standins.ingest.tick(bid="0.20", ask="0.22")
    await eventually(lambda: len(standins.executor.sells) == 2)
    assert standins.executor.sells[1].size == "10"
    await conn.close()


def test_order_outcomes() -> None:
    from services.guard.domain import sell_orders
    from services.guard.domain.trigger_model import Move

    def ev(kind: int, filled: str = "", reason: str = "") -> epb.OrderEvent:
        return epb.OrderEvent(type=kind, filled_size=filled, avg_price="0.5", reason=reason)  # type: ignore[arg-type]

    assert sell_orders.outcome(ev(epb.ORDER_EVENT_TYPE_FILLED, "10")).move is Move.FILL
    assert sell_orders.outcome(ev(epb.ORDER_EVENT_TYPE_CANCELLED, "4")).move is Move.FILL
    assert sell_orders.outcome(ev(epb.ORDER_EVENT_TYPE_CANCELLED)).reason == "ORDER_CANCELLED"
    rejected = ev(epb.ORDER_EVENT_TYPE_REJECTED, reason="INSUFFICIENT_DEPTH")
    assert sell_orders.outcome(rejected).reason == "INSUFFICIENT_DEPTH"
    assert sell_orders.outcome(ev(epb.ORDER_EVENT_TYPE_LOST)).move is Move.FAIL
    assert sell_orders.outcome(ev(epb.ORDER_EVENT_TYPE_PLACED)).move is None
    assert sell_orders.outcome(ev(epb.ORDER_EVENT_TYPE_PARTIALLY_FILLED, "3")).move is None


@pytest.mark.parametrize("source", ["grpc", "log"])
async def test_order_events_arrive_from_either_source(source: str, db_url: str, redis: Any, standins: StandIns,
                                                      make_guard: GuardFactory) -> None:
    conn = await db(db_url)
    await insert_subscription(conn, "sub_1", exits={})
    await add_market(redis)
    running = await make_guard(orders_source=source)
    await set_position(conn, "100", "0.40")
    await standins.executor.emit(copy_fill("co_buy1", BUY, filled="100", price="0.40"))

    async def grouped() -> dict[str, Any] | None:
        return await running.guard.exit_store.group(WALLET_ID, ASSET)

    group: Any = await eventually(grouped)
    assert group["opening_order_id"] == "co_buy1" and running.orders.stats.batches >= 1
    await conn.close()

async def _open_group(conn: Any) -> dict[str, Any] | None:
    row = await (await conn.execute(
        "SELECT * FROM guard_position_exits WHERE follower_wallet_id = %s AND asset_id = %s AND state = 'OPEN'",
        (WALLET_ID, ASSET))).fetchone()
    return None if row is None else dict(row)


async def _n(conn: Any, n: int) -> list[dict[str, Any]] | None:
    rows = await _copy_triggers(conn, "ARMED")
    return rows if len(rows) == n else None


async def test_a_position_closed_and_reopened_before_guard_reads_the_events_gets_new_exits(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    """The mirrored SELL closed the position and a new copy reopened it before guard handled those events
    (guard restarted or lagging). Guard reads ``positions`` at handling time and sees shares: the group
    records when its position was opened, so the SELL still closes the old exits (priced from the old
    entry: a stop at 0.30 would fire at once on the new position bought at 0.28) and the BUY gets new ones."""
    conn = await db(db_url)
    await insert_subscription(conn, "sub_1", exits={"stopLossPct": "25"})
    await add_market(redis, min_size="1")
    running = await make_guard()
    guard = running.guard
    await set_position(conn, "100", "0.40")
    await standins.executor.emit(copy_fill("co_buy1", BUY, filled="100", price="0.40"))
    await eventually(lambda: _n(conn, 1))
    old = await _open_group(conn)
    assert old is not None and old["opening_order_id"] == "co_buy1"

    # the executor books the mirrored SELL (position closed) and, later, a new copy BUY (reopened at 0.28)
    # before guard gets to their events
    await set_position(conn, "0", "0.40")
    await set_position(conn, "50", "0.28")
    await conn.execute("UPDATE positions SET opened_at = now() WHERE follower_wallet_id = %s", (WALLET_ID,))
    await standins.executor.emit(copy_fill("co_sell1", SELL, filled="100", price="0.35"))
    await standins.executor.emit(copy_fill("co_buy2", BUY, filled="50", price="0.28"))
    await eventually(lambda: running.orders.stats.handled >= 3)
    await guard.drain()

    # a tick at the new position's entry: the new position's exits (stop at 0.21) must not fire
    await wait_connected(standins.ingest)
    seen = guard.stats.ticks
    await standins.ingest.tick(bid="0.28", ask="0.30")
    await eventually(lambda: guard.stats.ticks > seen)  # evaluated: a fire it started is a task drain waits for
    assert guard.stats.ignored_ticks == 0  # the asset is watched (the new stop is armed in the engine)
    await guard.drain()
    sells = [(s.size, s.trigger_id) for s in standins.executor.sells]
    group = await _open_group(conn)
    old_rows = [r for r in await _copy_triggers(conn) if r["oco_group"] == old["oco_group"]]
    assert sells == [], f"the old opening's stop-loss sold the NEW position: {sells}"
    assert group is not None and group["opening_order_id"] == "co_buy2", (
        f"open group still the closed opening's: {group and (group['opening_order_id'], group['entry_price'])}")
    assert all(r["state"] == "CANCELLED" for r in old_rows), [(r["kind"], r["state"]) for r in old_rows]
    await conn.close()


async def test_exits_renewed_on_a_position_still_held_keep_its_configuration(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    """The stop-loss fired and its FAK SELL filled in part: shares remain and the group's exits are used up.
    The next copy BUY of that same position renews its exits from the position's own configuration, not from
    a PATCH made meanwhile (contract: PATCH of the exits applies to new positions only)."""
    conn = await db(db_url)
    await insert_subscription(conn, "sub_1", exits={"stopLossPct": "25"})
    await add_market(redis)
    await make_guard()
    await set_position(conn, "100", "0.40")
    await standins.executor.emit(copy_fill("co_buy1", BUY, filled="100", price="0.40"))
    [sl] = await eventually(lambda: _n(conn, 1))
    await conn.execute("UPDATE triggers SET state = 'DONE', state_reason = 'ORDER_FILLED', filled_size = 40"
                       " WHERE id = %s", (sl["id"],))
    await set_position(conn, "60", "0.40")
    await conn.execute("UPDATE subscriptions SET exits = %s::jsonb WHERE id = 'sub_1'",
                       ('{"stopLossPct": "50", "takeProfitPct": "10"}',))
    await set_position(conn, "110", "0.42")
    await standins.executor.emit(copy_fill("co_buy2", BUY, filled="50", price="0.45"))
    [renewed] = await eventually(lambda: _n(conn, 1))
    assert (renewed["kind"], renewed["trigger_price"]) == ("STOP_LOSS", Decimal("0.31"))  # 25 % under 0.42
    await conn.close()


async def _copied_with_tp_and_sl(db_url: str, redis: Any, standins: StandIns,
                                 make_guard: GuardFactory) -> tuple[Any, Any, list[dict[str, Any]]]:
    """A copy BUY of 100 at 0.40 filled for a subscription with a take-profit and a stop-loss: (connection,
    running guard, the two armed exits)."""
    conn = await db(db_url)
    await insert_subscription(conn, "sub_1", exits={"stopLossPct": "25", "takeProfitPct": "40"})
    await add_market(redis)
    running = await make_guard()
    await set_position(conn, "100", "0.40")
    await standins.executor.emit(copy_fill("co_buy1", BUY, filled="100", price="0.40"))
    rows = await eventually(lambda: _n(conn, 2))
    return conn, running, rows


async def test_exits_the_user_cancelled_do_not_come_back_with_the_next_fill(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    """The user cancelled every exit of a copied position (through REST). The next copy BUY of that position
    only resizes it: renewing the group re-armed the stop-loss the user had taken off, which then sold the
    whole position."""
    conn, running, _ = await _copied_with_tp_and_sl(db_url, redis, standins, make_guard)
    await conn.execute("UPDATE triggers SET state = 'CANCELLED', state_reason = 'CANCELLED_BY_USER'"
                       " WHERE source = 'COPY'")
    await set_position(conn, "150", "0.42")
    await standins.executor.emit(copy_fill("co_buy2", BUY, filled="50", price="0.46"))
    await _handled(running, 2)
    await running.guard.drain()
    armed = [(r["kind"], r["trigger_price"]) for r in await _copy_triggers(conn, "ARMED")]
    assert armed == [], f"exits the user cancelled were armed again: {armed}"
    group = await running.guard.exit_store.group(WALLET_ID, ASSET)
    assert group is not None and group["opening_order_id"] == "co_buy1" and group["position_size"] == 150
    await conn.close()


async def test_renewed_exits_leave_out_the_ones_the_user_cancelled(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    """The user cancelled the stop-loss; the take-profit fired and its SELL filled in part. The next copy BUY
    renews the used-up take-profit only, and the group says why the stop-loss is not there."""
    conn, running, rows = await _copied_with_tp_and_sl(db_url, redis, standins, make_guard)
    by_kind = {r["kind"]: r["id"] for r in rows}
    await conn.execute("UPDATE triggers SET state = 'CANCELLED', state_reason = 'CANCELLED_BY_USER' WHERE id = %s",
                       (by_kind["STOP_LOSS"],))
    await conn.execute("UPDATE triggers SET state = 'DONE', state_reason = 'ORDER_FILLED', filled_size = 40"
                       " WHERE id = %s", (by_kind["TAKE_PROFIT"],))
    await set_position(conn, "60", "0.40")
    await set_position(conn, "110", "0.42")
    await standins.executor.emit(copy_fill("co_buy2", BUY, filled="50", price="0.45"))
    [renewed] = await eventually(lambda: _n(conn, 1))
    assert (renewed["kind"], renewed["trigger_price"]) == ("TAKE_PROFIT", Decimal("0.59"))  # 40 % over 0.42
    group = await running.guard.exit_store.group(WALLET_ID, ASSET)
    assert group is not None and {"exit": "stop_loss", "reason": "CANCELLED_BY_USER"} in group["skipped"]
    await conn.close()
