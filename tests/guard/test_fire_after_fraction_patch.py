"""A PATCH of a trigger's sellFraction that the engine has not reloaded yet changes whether its fire ends its OCO
group: a take-profit PATCHed from the whole position (1) to half (0.5) sells half, and must leave its stop-loss
sibling armed on the rest. The engine's copy still said "closing", and the fire cancelled the sibling while
selling only half: the other half was left unguarded. Such a fire is not sent: the trigger is reloaded and
evaluated again (TRIGGER_CHANGED), as after any change to what it watches (real PostgreSQL, fakes for the rest)."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest

from common.marketstate import MarketInfo
from services.guard.adapters.trigger_store import TriggerStore
from services.guard.domain.tick_view import TickInfo
from services.guard.domain.trigger_index import Cancelled, Fired
from services.guard.domain.trigger_model import Reason
from services.guard.firing import Firer
from tests.guard.executor_fake import RecordingExecutor
from tests.guard.standins import CONDITION, db, insert_trigger, set_position, trigger_row

pytestmark = pytest.mark.integration


class _Markets:
    async def market(self, asset_id: str) -> MarketInfo:
        return MarketInfo(asset_id, CONDITION, Decimal("0.01"), Decimal(5))


async def test_a_take_profit_patched_to_half_does_not_cancel_its_stop_loss(db_url: str,
                                                                           trigger_store: TriggerStore) -> None:
    conn = await db(db_url)
    await set_position(conn, "100", "0.4")
    await insert_trigger(conn, "trg_tp", "TAKE_PROFIT", price="0.60", fraction="1", oco="grp_1")
    await insert_trigger(conn, "trg_sl", "STOP_LOSS", price="0.30", fraction="1", oco="grp_1")
    tp, sl = await trigger_store.get("trg_tp"), await trigger_store.get("trg_sl")
    assert tp is not None and sl is not None and tp.spec().closing
    # the user PATCHes the take-profit to sell half; the engine still holds the version that sells everything
    await conn.execute("UPDATE triggers SET sell_fraction = 0.5, version = version + 1 WHERE id = 'trg_tp'")
    executor, rearmed = RecordingExecutor(), []  # type: ignore[var-annotated]
    firer = Firer(trigger_store, executor, _Markets(), on_order_event=lambda _ev: None,
                  rearm=lambda ids, *_a, **_k: rearmed.append(list(ids)), clock_ns=time.time_ns, max_slippage_bps=300)
    # as the engine fires it: closing, its OCO sibling taken out with it
    await firer.fire(Fired(tp.spec(), Decimal("0.60")), [Cancelled(sl.spec(), Reason.OCO_SIBLING_FIRED, "trg_tp")],
                     TickInfo(Decimal("0.60")))
    rows: dict[str, Any] = {t: await trigger_row(conn, t) for t in ("trg_tp", "trg_sl")}
    sold = [o.size for o in executor.orders]
    assert (rows["trg_sl"]["state"], rows["trg_tp"]["state"], sold) == ("ARMED", "ARMED", []), (
        f"sold {sold} of 100; stop-loss {rows['trg_sl']['state']} {rows['trg_sl']['state_reason']}")
    assert rearmed == [["trg_tp", "trg_sl"]]
    # reloaded, the take-profit sells half and leaves the stop-loss armed
    tp = await trigger_store.get("trg_tp")
    assert tp is not None and not tp.spec().closing
    await firer.fire(Fired(tp.spec(), Decimal("0.60")), [], TickInfo(Decimal("0.60")))
    assert [o.size for o in executor.orders] == ["50"]
    assert (await trigger_row(conn, "trg_sl"))["state"] == "ARMED"
    await conn.close()
