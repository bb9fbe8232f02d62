"""Copy exits keep guarding the shares held: renewed when a SELL sold only part, never from a PATCH made for
new positions, and a reopened position gets the subscription's exits of the time."""

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

D = Decimal


async def _armed_copy(conn: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in await (await conn.execute(
        "SELECT * FROM triggers WHERE source = 'COPY' AND state = 'ARMED' ORDER BY id")).fetchall()]


@pytest.mark.integration
async def test_shares_bought_while_the_closing_exit_sells_get_renewed_exits(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    """The stop-loss of a copied position fired (its SELL of the 100 shares is in flight) when the next copy
    BUY fills 50 more. Guard only resizes the group (an exit is still FIRED); when the SELL fills, the 50
    new shares are left, and the group is renewed for them."""
    conn, guard, sell = await _stop_loss_selling(db_url, redis, standins, make_guard)

    # the leader buys again: a copy BUY of 50 fills while the stop-loss SELL is in flight
    await set_position(conn, "150", "0.36")
    await standins.executor.emit(copy_fill("co_buy2", BUY, filled="50", price="0.32"))
    await eventually(lambda: guard.stats.order_events >= 2)
    await guard.drain()
    # the stop-loss SELL fills: 50 shares (the new copy) remain
    await standins.executor.fill(sell, price="0.29")
    await eventually(lambda: guard.stats.order_events >= 3)
    await guard.drain()
    pos = await (await conn.execute("SELECT size FROM positions WHERE follower_wallet_id = %s AND asset_id = %s",
                                    (WALLET_ID, ASSET))).fetchone()
    assert pos is not None and pos["size"] == D(50)
    armed = await eventually(lambda: _armed_copy(conn))
    assert armed, "50 shares bought by a copy BUY are held with none of the subscription's exits armed"
    await conn.close()


@pytest.mark.integration
async def test_replayed_opening_fill_after_the_exits_were_used_renews_the_positions_own_exits(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    """The stop-loss of a copied position fired and its SELL filled in part (60 shares remain, the group's exits
    are used up). The opening BUY's fill event is delivered again (a restarted guard re-reads the order event
    log). Its renewal used to collide with the closed group's own id (same opening order), leaving the
    position with no group, and the next BUY planned exits from the PATCHed subscription, which the contract
    reserves for new positions."""
    conn = await db(db_url)
    await insert_subscription(conn, "sub_1", exits={"stopLossPct": "25"})
    await add_market(redis)
    running = await make_guard()
    guard = running.guard
    await set_position(conn, "100", "0.40")
    await standins.executor.emit(copy_fill("co_buy1", BUY, filled="100", price="0.40"))
    [sl] = await eventually(lambda: _n_armed(conn, 1))
    await conn.execute("UPDATE triggers SET state = 'DONE', state_reason = 'ORDER_FILLED', filled_size = 40"
                       " WHERE id = %s", (sl["id"],))
    await set_position(conn, "60", "0.40")
    # the opening fill's event again
    await standins.executor.emit(copy_fill("co_buy1", BUY, filled="100", price="0.40"))
    await eventually(lambda: guard.stats.order_events >= 2)
    await guard.drain()
    # the replay changes nothing but what any fill of the position would: its own exits guard the 60 shares left
    [renewed] = await eventually(lambda: _n_armed(conn, 1))
    assert (renewed["kind"], renewed["trigger_price"]) == ("STOP_LOSS", D("0.3"))
    group = await guard.exit_store.group(WALLET_ID, ASSET)
    assert group is not None and group["position_size"] == D(60)
    # the user changes the subscription's exits (for new positions), then the leader buys more: same position
    await conn.execute("UPDATE subscriptions SET exits = %s::jsonb WHERE id = 'sub_1'",
                       ('{"stopLossPct": "50", "takeProfitPct": "10"}',))
    await set_position(conn, "110", "0.42")
    await standins.executor.emit(copy_fill("co_buy2", BUY, filled="50", price="0.45"))
    await eventually(lambda: guard.stats.order_events >= 3)
    await guard.drain()
    resized = await eventually(lambda: _grouped(guard, D(110)))
    assert resized["oco_group"] == group["oco_group"]
    assert [(r["kind"], r["trigger_price"]) for r in await _armed_copy(conn)] == [("STOP_LOSS", D("0.3"))]
    await conn.close()


async def _grouped(guard: Any, size: Decimal) -> dict[str, Any] | None:
    group = await guard.exit_store.group(WALLET_ID, ASSET)
    return group if group is not None and group["position_size"] == size else None


async def _n_armed(conn: Any, n: int) -> list[dict[str, Any]] | None:
    rows = await _armed_copy(conn)
    return rows if len(rows) == n else None


@pytest.mark.integration
async def test_position_reopened_before_guard_reads_the_events_gets_the_exits_patched_in_meanwhile(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    """A subscription without exits copies a BUY (an empty exits group is recorded). The user then PATCHes in
    a stop-loss. The leader exits and buys again; the executor books both before guard reads their events.
    The reopened position is a new position, so it gets the stop-loss (the empty group, recorded by the
    two-statement path, used to lack its opening time: the SELL did not close it, the new BUY resized it)."""
    conn = await db(db_url)
    await insert_subscription(conn, "sub_1", exits={})
    await add_market(redis, min_size="1")
    running = await make_guard()
    guard = running.guard
    await set_position(conn, "100", "0.40")
    await standins.executor.emit(copy_fill("co_buy1", BUY, filled="100", price="0.40"))
    await eventually(lambda: guard.exit_store.group(WALLET_ID, ASSET))
    await conn.execute("UPDATE subscriptions SET exits = %s::jsonb WHERE id = 'sub_1'", ('{"stopLossPct": "25"}',))
    # closed by the mirrored SELL and reopened by a new copy BUY, both booked before guard reads the events
    await set_position(conn, "0", "0.40")
    await set_position(conn, "50", "0.28")
    await conn.execute("UPDATE positions SET opened_at = now() WHERE follower_wallet_id = %s", (WALLET_ID,))
    await standins.executor.emit(copy_fill("co_sell1", SELL, filled="100", price="0.35"))
    await standins.executor.emit(copy_fill("co_buy2", BUY, filled="50", price="0.28"))
    await eventually(lambda: guard.stats.order_events >= 3)
    await guard.drain()
    rows = await eventually(lambda: _armed_copy(conn))  # the events are counted before they are handled
    group = await guard.exit_store.group(WALLET_ID, ASSET)
    armed = [(r["kind"], r["trigger_price"]) for r in rows]
    assert armed == [("STOP_LOSS", D("0.21"))], (
        f"new position has exits {armed}; open group is the first opening's: "
        f"{group and (group['opening_order_id'], group['position_size'])}")
    await conn.close()


@pytest.mark.integration
async def test_stop_loss_whose_sell_filled_in_part_fires_again_for_the_rest(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    """The stop-loss's SELL of 100 ends with 40 filled (the venue cancelled the rest): the 60 shares left get
    the position's exits again, and the price still under the stop sells them."""
    conn, _guard, first = await _stop_loss_selling(db_url, redis, standins, make_guard)
    await set_position(conn, "60", "0.40")
    await standins.executor.emit(standins.executor.event(first, epb.ORDER_EVENT_TYPE_CANCELLED, filled="40",
                                                         price="0.29"))
    await eventually(lambda: _n_armed(conn, 2))
    await standins.ingest.tick(bid="0.28", ask="0.30")
    await eventually(lambda: len(standins.executor.sells) == 2)
    second = standins.executor.sells[1]
    assert (second.size, second.client_order_id != first.client_order_id) == ("60", True)
    await conn.close()


async def _stop_loss_selling(db_url: str, redis: Any, standins: StandIns,
                             make_guard: GuardFactory) -> tuple[Any, Any, epb.Order]:
    """A copied position of 100 at 0.40 with a stop-loss (25 %) and a take-profit (40 %); the stop-loss has
    fired and its SELL of the 100 shares is in flight (not filled)."""
    conn = await db(db_url)
    await insert_subscription(conn, "sub_1", exits={"stopLossPct": "25", "takeProfitPct": "40"})
    await add_market(redis, min_size="1")
    standins.executor.auto_fill = False
    guard = (await make_guard()).guard
    await set_position(conn, "100", "0.40")
    await standins.executor.emit(copy_fill("co_buy1", BUY, filled="100", price="0.40"))
    await eventually(lambda: len(guard.engine) == 2)
    await wait_connected(standins.ingest)
    await standins.ingest.tick(bid="0.29", ask="0.31")  # the stop-loss (0.30) fires
    await eventually(lambda: len(standins.executor.sells) == 1)
    sell = standins.executor.sells[0]
    assert sell.size == "100"
    return conn, guard, sell


@pytest.mark.integration
async def test_a_ladder_rung_sells_its_fraction_once_not_the_whole_position(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    """"Sell half at +25 %" and no closing exit: once the rung's SELL filled, the other half is the user's to keep.
    Renewed as a used-up group, the rung came back at a price already reached and sold half of the rest, then
    half again, until the whole position was gone."""
    conn = await db(db_url)
    await insert_subscription(conn, "sub_1", exits={"ladder": [{"gainPct": "25", "sellFraction": "0.5"}]})
    await add_market(redis, min_size="1")
    guard = (await make_guard()).guard
    await set_position(conn, "20", "0.40")
    await standins.executor.emit(copy_fill("co_buy1", BUY, filled="20", price="0.40"))
    await eventually(lambda: len(guard.engine) == 1)
    await wait_connected(standins.ingest)
    await standins.ingest.tick(bid="0.50", ask="0.52")  # the rung (0.50) fires: SELL 10, filled
    await eventually(lambda: len(standins.executor.sells) == 1)
    assert standins.executor.sells[0].size == "10"
    # handled: the copy BUY's fill, the rung's SELL placed and filled (10 shares left)
    await eventually(lambda: guard.stats.order_events >= 3)
    await guard.drain()
    ticks = guard.stats.ticks
    await standins.ingest.tick(bid="0.50", ask="0.53")  # the price holds
    await eventually(lambda: guard.stats.ticks > ticks)
    await guard.drain()
    assert [s.size for s in standins.executor.sells] == ["10"]
    assert await _armed_copy(conn) == []
    await conn.close()

