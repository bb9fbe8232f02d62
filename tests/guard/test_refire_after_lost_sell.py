"""A trigger fired again after a fire whose record failed, whose SELL (the same client order id) has since ended LOST
at the executor: the fire never takes that ended order for its own (the trigger would end FAILED, the position with
no exit). While the LOST SELL may still have sold (the venue's count not read after it), nothing is sent and the
trigger stays ARMED; once its shares are known, a SELL with a new id sells what is held, unless the trigger sells a
part only and the LOST SELL may have sold it (real PostgreSQL, fakes for the rest)."""

from __future__ import annotations

import time
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from common.marketstate import MarketInfo
from services.guard.adapters.trigger_store import TriggerStore
from services.guard.domain.sell_orders import outcome
from services.guard.domain.tick_view import TickInfo
from services.guard.domain.trigger_rows import client_order_id
from services.guard.firing import Firer
from tests.guard.executor_orders import book_order
from tests.guard.standins import ASSET, CONDITION, WALLET_ID, armed_stop, db, trigger_row
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration

LOST_ID = client_order_id("trg_sl", 1)  # the SELL of the fire whose record failed


class _Markets:
    async def market(self, asset_id: str) -> MarketInfo:
        return replace(MarketInfo(ASSET, CONDITION, Decimal("0.01"), Decimal(5)), asset_id=asset_id)


class _Executor:
    """Answers as the executor does: a known client order id is a duplicate, with the order's last event."""

    def __init__(self) -> None:
        self.last: dict[str, epb.OrderEvent] = {LOST_ID: epb.OrderEvent(
            client_order_id=LOST_ID, type=epb.ORDER_EVENT_TYPE_LOST, trigger_id="trg_sl", filled_size="0",
            reason="VENUE_NOT_FOUND")}
        self.new: list[epb.Order] = []

    async def submit(self, order: epb.Order) -> epb.SubmitOrderResponse:
        known = order.client_order_id in self.last
        if not known:
            self.new.append(order)
            self.last[order.client_order_id] = epb.OrderEvent(client_order_id=order.client_order_id,
                                                              type=epb.ORDER_EVENT_TYPE_PLACED)
        return epb.SubmitOrderResponse(client_order_id=order.client_order_id, duplicate=known,
                                       last_event=self.last[order.client_order_id])


async def _fire_after_lost_sell(db_url: str, store: TriggerStore, *, fraction: str, lost_size: str,
                                counted: bool, sold_since: str = "0",
                                ended_s: float = 0.0) -> tuple[dict[str, Any], list[epb.Order]]:
    """Fire ``trg_sl`` (a stop selling ``fraction`` of 100 held) whose earlier SELL of ``lost_size`` ended LOST
    ``ended_s`` ago; ``counted``: the venue's count not read after it yet; ``sold_since``: the count's correction down
    since."""
    conn = await db(db_url)
    fired = await armed_stop(conn, store, fraction=fraction)
    await book_order(conn, LOST_ID, size=lost_size, state="LOST", origin="TRIGGER", trigger_id="trg_sl",
                     venue="INSIDERS")
    for table in ("orders", "lost_sells"):
        await conn.execute(f"UPDATE {table} SET terminal_at = now() - make_interval(secs => %s)"
                           " WHERE client_order_id = %s", (ended_s, LOST_ID))
    # the venue's count read a minute after the LOST end (or not since it)
    await conn.execute("UPDATE positions SET id = coalesce(id, 'pos_1'), opened_at = now() - interval '1 hour',"
                       " reconciled_at = CASE WHEN %s THEN NULL ELSE now() + interval '1 minute' END", (counted,))
    if Decimal(sold_since) > 0:
        await conn.execute(
            "INSERT INTO fills (id, follower_wallet_id, order_id, asset_id, side, size, price, notional_usd, venue,"
            " fill_time) SELECT 'f_rec', %s, 'reconcile_' || p.id, %s, 'SELL', %s, 0.3, 1, 'INSIDERS', now()"
            " FROM positions p", (WALLET_ID, ASSET, Decimal(sold_since)))
        await conn.execute("UPDATE positions SET size = size - %s", (Decimal(sold_since),))  # booked by the executor
    executor = _Executor()
    answers: list[epb.OrderEvent] = []
    firer = Firer(store, executor, _Markets(), on_order_event=answers.append,  # type: ignore[arg-type]
                  rearm=lambda *_a, **_k: None,
                  clock_ns=time.time_ns, max_slippage_bps=300)
    await firer.fire(fired, [], TickInfo(Decimal("0.30")))
    for ev in answers:  # applied as the order flow applies the executor's answers
        oc = outcome(ev)
        if oc.move is not None:
            await store.settle(ev.trigger_id or "trg_sl", ev.client_order_id, oc.move, oc.reason, oc.filled_size,
                               oc.avg_price)
    row = await trigger_row(conn, "trg_sl")
    await conn.close()
    return row, executor.new


@pytest.mark.parametrize("fraction", ["1", "0.5"])
async def test_a_trigger_whose_lost_sell_may_still_have_sold_stays_armed_and_sends_nothing(
        fraction: str, db_url: str, trigger_store: TriggerStore) -> None:
    row, new = await _fire_after_lost_sell(db_url, trigger_store, fraction=fraction,
                                           lost_size="100" if fraction == "1" else "50", counted=True)
    assert (row["state"], new) == ("ARMED", [])


@pytest.mark.parametrize("fraction", ["1", "0.5"])
async def test_a_trigger_whose_lost_sell_sold_nothing_sells_with_a_new_order_id(
        fraction: str, db_url: str, trigger_store: TriggerStore) -> None:
    row, new = await _fire_after_lost_sell(db_url, trigger_store, fraction=fraction,
                                           lost_size="100" if fraction == "1" else "50", counted=False)
    assert [(o.client_order_id != LOST_ID, o.size) for o in new] == [(True, "100" if fraction == "1" else "50")]
    assert (row["state"], row["order_id"]) == ("FIRED", new[0].client_order_id)


@pytest.mark.parametrize("fraction", ["1", "0.5"])
async def test_a_trigger_whose_lost_sell_ended_past_its_selling_window_sells_with_a_new_order_id(
        fraction: str, db_url: str, trigger_store: TriggerStore) -> None:
    """Twenty minutes after the LOST end (past the 15 minutes it counts as selling), the count read since showing
    nothing sold: the earlier id is still not taken for the fire's own."""
    row, new = await _fire_after_lost_sell(db_url, trigger_store, fraction=fraction, ended_s=1200.0,
                                           lost_size="100" if fraction == "1" else "50", counted=False)
    assert [(o.client_order_id != LOST_ID, o.size) for o in new] == [(True, "100" if fraction == "1" else "50")]
    assert (row["state"], row["order_id"]) == ("FIRED", new[0].client_order_id)


async def test_a_whole_position_stop_whose_lost_sell_sold_part_sells_what_is_left(
        db_url: str, trigger_store: TriggerStore) -> None:
    row, new = await _fire_after_lost_sell(db_url, trigger_store, fraction="1", lost_size="100", counted=False,
                                           sold_since="40")
    assert [(o.client_order_id != LOST_ID, o.size) for o in new] == [(True, "60")]
    assert row["state"] == "FIRED"


async def test_a_partial_trigger_whose_lost_sell_may_have_sold_its_share_sells_nothing_more(
        db_url: str, trigger_store: TriggerStore) -> None:
    row, new = await _fire_after_lost_sell(db_url, trigger_store, fraction="0.5", lost_size="50", counted=False,
                                           sold_since="50")
    assert new == []
    assert row["state"] in ("FIRED", "FAILED") and row["order_id"] == LOST_ID
