"""A trigger whose market resolved (ingest recorded the winner in the market info) while its position is not
settled yet sends no SELL: nothing can be sold any more, the shares pay out. It is cancelled MARKET_RESOLVED, as
the resolution tick cancels the others (real PostgreSQL, fakes for the rest)."""

from __future__ import annotations

import time
from dataclasses import replace
from decimal import Decimal

import pytest

from common.marketstate import RESOLVED_WINNER, MarketInfo
from services.guard.adapters.trigger_store import TriggerStore
from services.guard.domain.tick_view import TickInfo
from services.guard.firing import Firer
from tests.guard.executor_fake import RecordingExecutor
from tests.guard.standins import ASSET, CONDITION, armed_stop, db, trigger_row

pytestmark = pytest.mark.integration

OPEN = MarketInfo(ASSET, CONDITION, Decimal("0.01"), Decimal(5))


class _Markets:
    def __init__(self, info: MarketInfo) -> None:
        self.info = info

    async def market(self, asset_id: str) -> MarketInfo:
        return replace(self.info, asset_id=asset_id)


@pytest.mark.parametrize(("info", "state", "reason", "sent"), [
    (OPEN, "FIRED", "PRICE_CROSSED", 1),
    (replace(OPEN, closed=True, accepting_orders=False, extra={RESOLVED_WINNER: "other-token"}),
     "CANCELLED", "MARKET_RESOLVED", 0),
])
async def test_a_fire_on_a_resolved_market_sends_nothing(info: MarketInfo, state: str, reason: str, sent: int,
                                                        db_url: str, trigger_store: TriggerStore) -> None:
    conn = await db(db_url)
    fired = await armed_stop(conn, trigger_store)  # its position is still OPEN: the executor has not settled it
    executor = RecordingExecutor()
    firer = Firer(trigger_store, executor, _Markets(info), on_order_event=lambda _ev: None,
                  rearm=lambda *_a, **_k: None, clock_ns=time.time_ns, max_slippage_bps=300)
    await firer.fire(fired, [], TickInfo(Decimal("0.30")))
    row = await trigger_row(conn, "trg_sl")
    assert (row["state"], row["state_reason"], len(executor.orders)) == (state, reason, sent)
    await conn.close()
