"""The intent insert and a mode change of the wallet (control's ``wallet_modes``) are ordered by the wallet's mode
lock: the insert that runs while a change is uncommitted waits for it and then sees the new mode; the change that
runs while an insert is uncommitted waits for it and then sees the order in flight. Real PostgreSQL, both paths of
the insert (the dedicated connection, the pool)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg.rows import dict_row

from common.storage import create_pool
from services.control import wallet_modes
from services.control.errors import FailedPrecondition
from services.executor.adapters.order_store import ADMIT_INTENTS, OrderStore, intent_json
from services.executor.domain.order_intake import IntakeRules, prepare
from services.executor.domain.order_lifecycle import OrderLife, OrderRejected, apply
from services.executor.domain.ticket import Ticket
from tests.executor.conftest import ASSET, make_order, rows
from tests.executor.test_wallet_mode_admission import subscription_row
from tests.helpers import eventually
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration
MODE_CHANGED, POSITION_IN_OTHER_VENUE = "MODE_CHANGED", "POSITION_IN_OTHER_VENUE"  # refusals of the intent insert

RULES = IntakeRules(live_configured=True)
LIVE = cpb.EXECUTION_MODE_LIVE  # priced without a book (on the reference price), unlike PAPER


@pytest.fixture(params=["dedicated", "pool"])
async def store(request: pytest.FixtureRequest, db_url: str) -> AsyncIterator[OrderStore]:
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    s = OrderStore(pool, intents_url=db_url if request.param == "dedicated" else "")
    try:
        yield s
    finally:
        await s.close()
        await pool.close()


def _items(*orders: epb.Order) -> list[tuple[Ticket, OrderLife]]:
    now = time.time_ns()
    return [(p.ticket, p.life) for p in (prepare(o, None, RULES, now) for o in orders)]


def _live(i: int, wallet: str = "w_1") -> epb.Order:
    return make_order(i, subscription_id="sub_a", follower_wallet_id=wallet, mode=LIVE)


def _waiting_for_a_lock(db_url: str) -> bool:
    return bool(rows(db_url, "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"))


async def test_orders_of_the_other_mode_or_venue_are_returned_refused_not_inserted(
        store: OrderStore, db_url: str) -> None:
    subscription_row(db_url, "sub_a", "w_1", "PAPER")
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, wallet, size, state, venue) VALUES ('w_2',"
                     " %s, '0xp', 10, 'OPEN', 'PAPER')", (ASSET,))
    got = await store.insert_intents(_items(_live(1), _live(2, "w_2"), _live(3, "w_3")))
    assert got == {"co_test00003"}
    assert {k: r for k, (r, _) in got.refused.items()} == {"co_test00001": MODE_CHANGED,
                                                            "co_test00002": POSITION_IN_OTHER_VENUE}
    assert rows(db_url, "SELECT client_order_id FROM orders") == [("co_test00003",)]
    assert rows(db_url, "SELECT client_order_id FROM order_pending") == [("co_test00003",)]
    # a refusal is recorded as one: REJECTED rows are not checked
    [(ticket, _)] = _items(_live(1))
    assert await store.insert_intents([(ticket, apply(OrderLife("co_test00001"), OrderRejected(MODE_CHANGED, "")))
                                       ]) == {"co_test00001"}


async def test_an_intent_insert_waits_for_a_mode_change_under_way_and_sees_it(store: OrderStore, db_url: str) -> None:
    subscription_row(db_url, "sub_a", "w_1", "LIVE")
    with psycopg.connect(db_url) as change:  # control's PATCH of mode: lock, check, write, not committed yet
        change.execute(wallet_modes.LOCK, wallet_modes.params("w_1", "PAPER", "sub_a"))
        change.execute("UPDATE subscriptions SET mode = 'PAPER' WHERE id = 'sub_a'")
        insert = asyncio.create_task(store.insert_intents(_items(_live(1))))
        await eventually(lambda: _waiting_for_a_lock(db_url), timeout_s=5)
        assert not insert.done()
        change.commit()
    got = await insert
    assert got == set() and got.refused["co_test00001"][0] == MODE_CHANGED
    assert rows(db_url, "SELECT count(*) FROM orders") == [(0,)]


async def test_a_mode_change_waits_for_an_intent_insert_under_way_and_sees_its_order(db_url: str) -> None:
    subscription_row(db_url, "sub_a", "w_1", "LIVE")
    with psycopg.connect(db_url) as admission:  # the executor's insert, not committed yet
        admission.execute(ADMIT_INTENTS, (intent_json(_items(_live(1))),))
        async with await psycopg.AsyncConnection.connect(db_url, row_factory=dict_row) as conn:
            check = asyncio.create_task(wallet_modes.check(conn, "w_1", "PAPER", "sub_a"))
            await eventually(lambda: _waiting_for_a_lock(db_url), timeout_s=5)
            assert not check.done()
            admission.commit()
            with pytest.raises(FailedPrecondition, match="mode: followerWalletId w_1 has order co_test00001"):
                await check
