"""Every write a superseded executor makes to a fenced table, refused by the fence, stops it at once (the lease is
told: docs/operations.md "One active executor"), and a BUY whose start the fence refused to record is never POSTed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal as D
from typing import Any

import psycopg
import pytest

from common.lease import FENCE_SQLSTATE, Lease
from common.storage import create_pool
from services.executor.adapters.leftover_store import LeftoverStore
from services.executor.adapters.order_store import PLANNER_OPTIONS, OrderStore
from services.executor.adapters.reconcile_store import LiveWallet, ReconcileStore
from services.executor.adapters.redemption_store import RedemptionStore
from services.executor.adapters.settlement_store import SettlementStore
from services.executor.domain.order_intake import IntakeRules, prepare
from services.executor.domain.reconcile import AtVenue
from services.executor.domain.redemption import RedemptionState
from services.executor.domain.settlement import Resolution
from services.executor.position_queue import position_key
from tests.executor.conftest import ASSET, CONDITION, make_order, rows
from tests.executor.scripted_venue import HTTP_503, MemoryJournal, ScriptedVenue, prepared, runner
from tests.helpers import eventually

pytestmark = pytest.mark.integration

RULES = IntakeRules(live_configured=True)


@dataclass
class Old:
    """A superseded executor: its lease (taken over, which it has not noticed) and a pool of its epoch."""

    lease: Lease
    pool: Any
    db_url: str

    def told(self, exc: BaseException) -> bool:
        """What the stores tell of a failed write (as the executor wires them)."""
        return self.lease.notice_refusal(exc)


Write = Callable[[Old], Awaitable[None]]


def _order_write(name: str) -> Write:
    async def write(old: Old) -> None:
        store = OrderStore(old.pool, on_write_error=old.told)
        p = prepare(make_order(1), None, RULES, time.time_ns())
        if name == "set_size":
            await store.set_size(p.ticket.client_order_id, D("5"), D("0.5"), p.ticket.order.SerializeToString())
        else:
            await store.restamp(p.ticket.client_order_id)
    return write


async def _settle(old: Old) -> None:
    # of another wallet than the intent's (an order in flight would hold the position back: no write)
    rows(old.db_url, "INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price,"
                         " cost_usd, id, state) VALUES ('w_9', %s, %s, '0xa', 10, 0.4, 4, 'pos_9', 'OPEN') RETURNING 1",
         ASSET, CONDITION)
    store = SettlementStore(old.pool, on_write_error=old.told)
    await store.settle(Resolution(CONDITION, (ASSET, "2"), ASSET, False))


async def _mark_published(old: Old) -> None:
    await RedemptionStore(old.pool, on_write_error=old.told).mark_published([("rk_1", RedemptionState.PENDING)])


async def _leftover(old: Old) -> None:
    await LeftoverStore(old.pool, on_write_error=old.told).record("w_1", [], {})


async def _reconcile(old: Old) -> None:
    seen = AtVenue(ASSET, CONDITION, "Yes", D("10"), D("0.4"), False)
    await ReconcileStore(old.pool, on_write_error=old.told).apply(LiveWallet("w_1", "0xa"), [], [seen], {})


WRITES: dict[str, Write] = {"orders.set_size": _order_write("set_size"), "orders.restamp": _order_write("restamp"),
                            "positions.settle": _settle, "redemptions.mark_published": _mark_published,
                            "redemptions.leftover_round": _leftover, "positions.reconcile": _reconcile}


@pytest.fixture
async def superseded(db_url: str) -> AsyncIterator[Old]:
    """An executor whose lease another process took over; it has not noticed (its checks are a minute apart)."""
    old = Lease(db_url, "executor", holder="old", poll_s=0.02, check_s=60, max_unconfirmed_s=60)
    new = Lease(db_url, "executor", holder="new", poll_s=0.02)
    await old.acquire()
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True,
                             options=f"{PLANNER_OPTIONS} {old.options}")
    p = prepare(make_order(1), None, RULES, time.time_ns())
    assert await OrderStore(pool).insert_intents([(p.ticket, p.life)]) == {"co_test00001"}
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", (old.backend_pid,))
    assert await new.acquire() == 2
    try:
        yield Old(old, pool, db_url)
    finally:
        await pool.close()
        await old.close()
        await new.close()


@pytest.mark.parametrize("write", sorted(WRITES))
async def test_every_refused_write_stops_the_superseded_executor_at_once(superseded: Old, write: str) -> None:
    old = superseded.lease
    watch = asyncio.create_task(old.watch())
    try:
        with pytest.raises(psycopg.OperationalError) as refused:
            await WRITES[write](superseded)
        assert refused.value.sqlstate == FENCE_SQLSTATE
        await asyncio.wait_for(asyncio.shield(watch), 5)  # not at its next check, a minute away
        gate = asyncio.create_task(old.confirmed())
        await asyncio.sleep(0.1)
        assert not gate.done()  # and no venue call goes out any more
        gate.cancel()
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)


class _FenceRefusal(Exception):
    sqlstate = FENCE_SQLSTATE


class _RefusingStore:
    async def restamp(self, coid: str) -> None:
        raise _FenceRefusal(f"executor lease lost: {coid} not restamped")


async def test_a_buy_whose_restamp_the_fence_refused_is_never_posted() -> None:
    venue = ScriptedVenue([HTTP_503] * 4, [])
    journal = MemoryJournal()
    journal.store = _RefusingStore()  # type: ignore[assignment]
    r, _ = runner(venue, journal)
    buy = prepared(1)
    key = position_key(buy.ticket)
    r.positions.opened(key, "co_sell_ahead", sized_later=True)  # a SELL sized later, ahead of the BUY
    r.start(buy.ticket, buy.life)
    await asyncio.sleep(0.05)
    assert venue.posts == 0 and r.running(buy.ticket.client_order_id)  # held behind the SELL
    r.positions.sized(key, "co_sell_ahead")
    await eventually(lambda: venue.posts or not r.running(buy.ticket.client_order_id), timeout_s=5)
    assert venue.posts == 0  # the runner ended without a POST: the order is the new executor's to send
    await r.close()
