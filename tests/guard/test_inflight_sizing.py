"""A fire sizes its SELL on the shares held less every SELL of the position still in flight, wherever it is: at the
executor (copies, manual SELLs, a trigger's SELL whose fire was not recorded), on its way there (a FIRED trigger
the executor has no order of yet), or sent by this process for a fire whose record failed and not yet answered
(real PostgreSQL and Redis, stand-in ingest and executor)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from services.guard.adapters.trigger_store import TriggerStore
from services.guard.domain.fire_records import FireDecision, FireFacts
from services.guard.domain.tick_view import TickInfo
from services.guard.domain.trigger_model import Reason, State
from services.guard.domain.trigger_rows import TriggerRow
from tests.guard.conftest import GuardFactory
from tests.guard.executor_orders import book_order, books_orders
from tests.guard.standins import StandIns, add_market, db, insert_trigger, set_position, trigger_row, wait_connected
from tests.helpers import eventually
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration


def _losing_the_commit_of(store: Any, trigger_id: str) -> list[Any]:
    """Make the first fire of ``trigger_id`` send its SELL and then fail to commit (PostgreSQL connection lost);
    returns the decisions whose record was lost."""
    real_fire = store.fire
    dropped: list[Any] = []

    async def fire(tid: str, siblings: Any, mark: Any, tick: Any, decide: Any, on_decided: Any = None,
                   before_decide: Any = None) -> Any:
        if tid != trigger_id or dropped:
            return await real_fire(tid, siblings, mark, tick, decide, on_decided, before_decide)

        def sent_then_connection_lost(decision: Any) -> None:
            if on_decided is not None:
                on_decided(decision)  # SubmitOrder starts here, as in production
            dropped.append(decision)
            raise psycopg.OperationalError("server closed the connection unexpectedly")

        return await real_fire(tid, siblings, mark, tick, decide, sent_then_connection_lost, before_decide)

    store.fire = fire
    return dropped


async def _rung_and_stop(conn: Any, redis: Any) -> None:
    """A position of 100 guarded by a half ladder rung and a stop-loss of the whole, as copy exits are."""
    await set_position(conn, "100", "0.40")
    await add_market(redis, min_size="5")
    await insert_trigger(conn, "trg_tp", "TAKE_PROFIT", price="0.60", fraction="0.5", oco="grp_1")
    await insert_trigger(conn, "trg_sl", "STOP_LOSS", price="0.30", fraction="1", oco="grp_1")


def _sold(standins: StandIns) -> list[tuple[str, str]]:
    return sorted((o.trigger_id, o.size) for o in standins.executor.sells)


async def test_a_sell_at_the_executor_whose_fire_was_not_recorded_counts_for_the_next_fire(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    conn = await db(db_url)
    await _rung_and_stop(conn, redis)
    standins.executor.auto_fill = False  # a FAK at the venue takes its round trip
    books_orders(standins, db_url)
    running = await make_guard()
    guard = running.guard
    _losing_the_commit_of(guard.firer.store, "trg_tp")
    await wait_connected(standins.ingest)
    await standins.ingest.tick(bid="0.65", ask="0.7")  # the rung crosses: SELL 50 goes out, the record fails
    await eventually(lambda: len(standins.executor.sells) == 1 and guard.firer.stats.record_errors == 1)
    assert (await trigger_row(conn, "trg_tp"))["state"] == "ARMED"

    await standins.ingest.tick(bid="0.25", ask="0.3")  # the stop crosses while the 50-share SELL is at the venue
    await eventually(lambda: len(standins.executor.sells) == 2)
    await guard.drain()
    await conn.close()
    assert _sold(standins) == [("trg_sl", "50"), ("trg_tp", "50")]  # never more than the 100 held


def _holding_the_rung(standins: StandIns) -> asyncio.Event:
    """The stand-in executor (no auto fill) takes the rung's SELL (``trg_tp``) only once the event returned is set."""
    standins.executor.auto_fill = False
    take, answer = standins.executor._submit, asyncio.Event()

    async def slow_intake(order: epb.Order) -> epb.SubmitOrderResponse:
        if order.trigger_id == "trg_tp":
            await answer.wait()
        return await take(order)

    standins.executor._submit = slow_intake  # type: ignore[method-assign]
    return answer


async def test_a_sell_of_an_unrecorded_fire_counts_until_the_executor_answers_it(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    """Before the executor has written its order, only the process that sent the SELL knows it left."""
    conn = await db(db_url)
    await _rung_and_stop(conn, redis)
    executor, answer = standins.executor, _holding_the_rung(standins)
    running = await make_guard()
    guard = running.guard
    _losing_the_commit_of(guard.firer.store, "trg_tp")
    await wait_connected(standins.ingest)
    await standins.ingest.tick(bid="0.65", ask="0.7")
    await eventually(lambda: guard.firer.stats.record_errors == 1)
    await standins.ingest.tick(bid="0.25", ask="0.3")
    await eventually(lambda: [o.trigger_id for o in executor.sells] == ["trg_sl"])
    answer.set()
    await eventually(lambda: len(executor.sells) == 2)
    await guard.drain()
    await conn.close()
    assert _sold(standins) == [("trg_sl", "50"), ("trg_tp", "50")]


async def test_an_unrecorded_sell_whose_call_timed_out_still_counts_until_the_executor_has_it(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    """A deadline is no answer: the executor, slow (its journal under a fan-out), takes the SELL and writes its
    order later. Until then the next fire on the position counts it."""
    conn = await db(db_url)
    await _rung_and_stop(conn, redis)
    books_orders(standins, db_url)  # the order row is written when the executor takes the order
    executor, answer = standins.executor, _holding_the_rung(standins)  # shielded: goes on after guard's deadline
    guard = (await make_guard(submit_timeout_s=0.3)).guard
    _losing_the_commit_of(guard.firer.store, "trg_tp")
    await wait_connected(standins.ingest)
    await standins.ingest.tick(bid="0.65", ask="0.7")  # the rung: SELL 50 leaves, its record fails
    await eventually(lambda: guard.firer.stats.record_errors == 1)
    await eventually(lambda: guard.firer.unrecorded.unanswered == 1)  # guard's deadline passed
    assert (await trigger_row(conn, "trg_tp"))["state"] == "ARMED"
    await standins.ingest.tick(bid="0.25", ask="0.3")  # the stop crosses
    await eventually(lambda: [o.trigger_id for o in executor.sells] == ["trg_sl"])
    answer.set()  # the executor now writes and places the rung's SELL it took earlier
    await eventually(lambda: len(executor.sells) == 2)
    await guard.drain()
    await conn.close()
    assert _sold(standins) == [("trg_sl", "50"), ("trg_tp", "50")]  # never more than the 100 held


async def test_an_unanswered_unrecorded_sell_is_counted_once_its_order_is_seen(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    """Once the executor wrote the order of a SELL whose call timed out, PostgreSQL counts it: guard no longer adds
    it (counted twice, the stop-loss would find nothing left to sell and wait)."""
    conn = await db(db_url)
    await _rung_and_stop(conn, redis)
    executor, answer = standins.executor, _holding_the_rung(standins)
    books_orders(standins, db_url)  # written as it is taken, once the slow intake lets it through
    guard = (await make_guard(submit_timeout_s=0.3)).guard
    _losing_the_commit_of(guard.firer.store, "trg_tp")
    await wait_connected(standins.ingest)
    await standins.ingest.tick(bid="0.65", ask="0.7")
    await eventually(lambda: guard.firer.unrecorded.unanswered == 1)
    answer.set()
    await eventually(lambda: [o.trigger_id for o in executor.sells] == ["trg_tp"])
    assert len(guard.firer.unrecorded) == 1  # no answer came: guard has not seen the order yet
    await standins.ingest.tick(bid="0.25", ask="0.3")
    await eventually(lambda: len(executor.sells) == 2)
    await guard.drain()
    await conn.close()
    assert _sold(standins) == [("trg_sl", "50"), ("trg_tp", "50")]
    assert len(guard.firer.unrecorded) == 0


async def _facts(store: TriggerStore, trigger_id: str) -> FireFacts:
    """What a fire of ``trigger_id`` reads under the position's lock (nothing recorded: the decision defers)."""
    seen: list[FireFacts] = []

    def decide(_row: TriggerRow, facts: FireFacts) -> FireDecision:
        seen.append(facts)
        return FireDecision(State.ARMED, Reason.DEFERRED_IN_FLIGHT_SELL.value)

    await store.fire(trigger_id, [], Decimal(0), TickInfo(Decimal("0.3")), decide)
    return seen[0]


async def _fired(conn: Any, trigger_id: str, order_id: str, size: str) -> None:
    await insert_trigger(conn, trigger_id, "TAKE_PROFIT", price="0.9", size=size)
    await conn.execute("UPDATE triggers SET state = 'FIRED', order_id = %s, fire_size = %s, fire_count = 1"
                       " WHERE id = %s", (order_id, Decimal(size), trigger_id))


async def test_in_flight_counts_each_open_sell_of_the_position_once(
        db_url: str, trigger_store: TriggerStore) -> None:
    conn = await db(db_url)
    await set_position(conn, "100", "0.40")
    await insert_trigger(conn, "trg_sl", "STOP_LOSS", price="0.30", fraction="1")
    book: Callable[..., Any] = lambda coid, **kw: book_order(conn, coid, **kw)  # noqa: E731
    await book("co_copy", size="40", filled="10", state="PARTIALLY_FILLED")  # the router's copy SELL: 30 left
    await book("co_manual", size="8", origin="MANUAL")  # a manual SELL: 8
    await book("co_sized_later", size="20", state="NEW")  # sized against what is sellable in its turn: not yet
    await book("co_sold", size="15", filled="15", state="FILLED")  # in the position already
    await book("co_refused", size="15", state="REJECTED")  # held no shares
    await book("co_buy", side="BUY", size="50")
    await book("co_other_token", size="7", asset_id="other")
    await book("co_own", size="9", origin="TRIGGER", trigger_id="trg_sl")  # its own unrecorded fire: sent again
    await _fired(conn, "trg_known", "co_known", "12")  # a FIRED trigger's SELL the executor has: counted once
    await book("co_known", size="12", filled="2", origin="TRIGGER", trigger_id="trg_known")
    await _fired(conn, "trg_on_its_way", "co_on_its_way", "5")  # the executor has no order of it yet
    facts = await _facts(trigger_store, "trg_sl")
    await conn.close()
    assert (facts.held, facts.in_flight) == (Decimal(100), Decimal(30 + 8 + 10 + 5))


@pytest.mark.parametrize(("reconciled_after_s", "counted"), [(None, True), (3, True), (11, False)])
async def test_a_lost_sell_counts_in_flight_until_the_venue_count_was_read_after_it(
        db_url: str, trigger_store: TriggerStore, reconciled_after_s: int | None, counted: bool) -> None:
    """A LIVE SELL ended LOST may have sold at the venue: its shares count as being sold until a reconciliation read
    the venue's count at least the settling grace after its end (an earlier count may lack the sale)."""
    conn = await db(db_url)
    await set_position(conn, "100", "0.40")
    await insert_trigger(conn, "trg_sl", "STOP_LOSS", price="0.30", fraction="1")
    await book_order(conn, "co_lost", size="40", filled="10", state="LOST", venue="INSIDERS")
    await book_order(conn, "co_lost_paper", size="5", state="LOST")  # a paper order is never at the venue unseen
    if reconciled_after_s is not None:
        await conn.execute("UPDATE positions SET reconciled_at = (SELECT terminal_at FROM orders"
                           " WHERE client_order_id = 'co_lost') + make_interval(secs => %s)", (reconciled_after_s,))
    facts = await _facts(trigger_store, "trg_sl")
    await conn.close()
    assert facts.in_flight == (Decimal(30) if counted else Decimal(0))
