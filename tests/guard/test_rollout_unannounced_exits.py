"""A rollout's old guard that dies after committing a position's copy exits but before announcing them: the new guard
arms those exits itself when it handles the position's order events (the same one, or a later one), so the position
is never left unwatched."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from services.guard.adapters.exit_store import ExitStore
from services.guard.app import Running
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
)
from tests.guard.test_rollout import _armed_exits
from tests.helpers import eventually

pytestmark = pytest.mark.integration


def _dies_before_announcing(running: Running) -> None:
    """What the other guard sees of a guard killed right after its commits: none of its notices, no resync."""
    store = running.guard.exit_store
    assert isinstance(store, ExitStore)
    store.announce = None

    async def nothing() -> None:
        return None

    running.notices.marks_saved = nothing  # type: ignore[method-assign]


async def _two_guards(db_url: str, redis: Any, standins: StandIns,
                      make_guard: GuardFactory) -> tuple[Any, Running, Running]:
    conn = await db(db_url)
    await insert_subscription(conn, "sub_1", exits={"stopLossPct": "25"})
    await add_market(redis)
    old = await make_guard()
    new = await make_guard()
    await eventually(lambda: standins.ingest.connected == 2)
    _dies_before_announcing(old)
    return conn, old, new


async def _stop_loss_fires_through(new: Running, old: Running, standins: StandIns) -> None:
    await old.stop()
    await standins.ingest.tick(bid="0.20", ask="0.22")  # through the 0.30 stop-loss
    await eventually(lambda: len(standins.executor.sells) == 1, timeout_s=5)
    assert new.guard.stats.order_events >= 1


async def test_exits_registered_by_a_guard_that_died_unannounced_are_armed_by_the_other_on_the_same_fill(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    conn, old, new = await _two_guards(db_url, redis, standins, make_guard)
    await set_position(conn, "100", "0.40")
    fill = copy_fill("co_buy1", BUY, filled="100", price="0.40")
    await old.guard.on_order_event(fill)  # registered and committed, never announced
    exit_ids = await _armed_exits(conn)
    assert exit_ids

    await new.guard.on_order_event(fill)  # the new guard's consumer reads the same fill
    await eventually(lambda: exit_ids <= new.guard.engine.ids(), timeout_s=2, message="exits unwatched")
    await _stop_loss_fires_through(new, old, standins)
    await conn.close()


async def test_exits_registered_by_a_guard_that_died_unannounced_are_armed_by_the_other_on_the_next_fill(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    conn, old, new = await _two_guards(db_url, redis, standins, make_guard)
    await set_position(conn, "100", "0.40")
    await old.guard.on_order_event(copy_fill("co_buy1", BUY, filled="100", price="0.40"))
    exit_ids = await _armed_exits(conn)
    assert exit_ids

    await set_position(conn, "150", "0.40")  # the next copy BUY, read by the new guard only: a resize
    await new.guard.on_order_event(copy_fill("co_buy2", BUY, filled="50", price="0.40"))
    store = new.guard.exit_store
    assert isinstance(store, ExitStore)
    assert (await store.group(WALLET_ID, ASSET) or {}).get("position_size") == 150
    await eventually(lambda: exit_ids <= new.guard.engine.ids(), timeout_s=2, message="exits unwatched")
    await _stop_loss_fires_through(new, old, standins)
    await conn.close()


async def test_exits_renewed_by_a_guard_that_died_unannounced_are_armed_by_the_other_on_the_same_sell(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    """The closing stop-loss sold 40 of 100 shares: the old guard renews the group for the 60 left and dies before
    announcing it; the new guard reads the same SELL fill."""
    conn, old, new = await _two_guards(db_url, redis, standins, make_guard)
    await set_position(conn, "100", "0.40")
    await new.guard.on_order_event(copy_fill("co_buy1", BUY, filled="100", price="0.40"))
    [first] = await _armed_exits(conn)
    await conn.execute("UPDATE triggers SET state = 'DONE', state_reason = 'ORDER_FILLED', filled_size = 40"
                       " WHERE id = %s", (first,))
    new.guard.engine.remove(first)  # as its fire took it out
    await set_position(conn, "60", "0.40")
    sell = copy_fill("co_sell1", SELL, filled="40", price="0.29")
    await old.guard.on_order_event(sell)  # renewed and committed, never announced
    renewed = await _armed_exits(conn)
    assert renewed and first not in renewed

    await new.guard.on_order_event(sell)
    await eventually(lambda: renewed <= new.guard.engine.ids(), timeout_s=2, message="renewed exits unwatched")
    await _stop_loss_fires_through(new, old, standins)
    await conn.close()



class _OvertakenRenewal:
    """An exit store whose renewal is overtaken: ``first`` runs between the peek that found the group's exits used
    up and the renewal itself (the other guard handling the same SELL meanwhile)."""

    def __init__(self, store: Any, first: Callable[[], Awaitable[None]]) -> None:
        self.store = store
        self.first = first

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def renew_used(self, *args: Any) -> Any:
        await self.first()
        return await self.store.renew_used(*args)


async def test_exits_renewed_by_a_guard_that_died_unannounced_while_the_other_renewed_too_are_armed_by_the_other(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    conn, old, new = await _two_guards(db_url, redis, standins, make_guard)
    await set_position(conn, "100", "0.40")
    await new.guard.on_order_event(copy_fill("co_buy1", BUY, filled="100", price="0.40"))
    [first] = await _armed_exits(conn)
    await conn.execute("UPDATE triggers SET state = 'DONE', state_reason = 'ORDER_FILLED', filled_size = 40"
                       " WHERE id = %s", (first,))
    new.guard.engine.remove(first)
    await set_position(conn, "60", "0.40")
    sell = copy_fill("co_sell1", SELL, filled="40", price="0.29")
    new.guard.exit_store = _OvertakenRenewal(new.guard.exit_store, lambda: old.guard.on_order_event(sell))

    await new.guard.on_order_event(sell)
    renewed = await _armed_exits(conn)
    assert renewed and first not in renewed
    await eventually(lambda: renewed <= new.guard.engine.ids(), timeout_s=2, message="renewed exits unwatched")
    await _stop_loss_fires_through(new, old, standins)
    await conn.close()


async def test_exits_registered_by_a_guard_that_died_unannounced_are_loaded_by_the_guard_started_after_it(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    conn = await db(db_url)
    await insert_subscription(conn, "sub_1", exits={"stopLossPct": "25"})
    await add_market(redis)
    old = await make_guard()
    _dies_before_announcing(old)
    await set_position(conn, "100", "0.40")
    await old.guard.on_order_event(copy_fill("co_buy1", BUY, filled="100", price="0.40"))
    exit_ids = await _armed_exits(conn)
    assert exit_ids
    await eventually(lambda: standins.ingest.connected == 1)
    await old.stop()

    restarted = await make_guard()
    assert exit_ids <= restarted.guard.engine.ids()
    await eventually(lambda: standins.ingest.opened == 2 and standins.ingest.connected == 1)
    await standins.ingest.tick(bid="0.20", ask="0.22")
    await eventually(lambda: len(standins.executor.sells) == 1, timeout_s=5)
    await conn.close()
