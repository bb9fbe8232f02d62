"""A fire reads the market info beside its locked PostgreSQL reads (real PostgreSQL, fakes for the rest)."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import pytest

from common.ids import hash_id
from common.marketstate import MarketInfo
from services.guard.adapters.trigger_store import TriggerStore
from services.guard.domain.tick_view import TickInfo
from services.guard.domain.trigger_index import Fired
from services.guard.domain.trigger_model import State
from services.guard.firing import Firer
from tests.guard.executor_fake import RecordingExecutor
from tests.guard.standins import CONDITION, armed_stop, db, trigger_row

pytestmark = pytest.mark.integration


class _Markets:
    """Market info after ``delay_s``; the first ``failures`` reads fail (Redis unreachable)."""

    def __init__(self, *, failures: int = 0, delay_s: float = 0.0) -> None:
        self.failures = failures
        self.delay_s = delay_s

    async def market(self, asset_id: str) -> MarketInfo:
        await asyncio.sleep(self.delay_s)
        if self.failures:
            self.failures -= 1
            raise ConnectionError("redis unreachable")
        return MarketInfo(asset_id, CONDITION, Decimal("0.01"), Decimal(5))


async def _armed_stop(db_url: str, store: TriggerStore) -> tuple[Any, Fired]:
    conn = await db(db_url)
    return conn, await armed_stop(conn, store, fraction="0.5")


def _firer(store: TriggerStore, executor: RecordingExecutor, markets: _Markets, rearmed: list[list[str]]) -> Firer:
    return Firer(store, executor, markets, on_order_event=lambda _ev: None,
                 rearm=lambda ids, *_a, **_k: rearmed.append(list(ids)), clock_ns=time.time_ns, max_slippage_bps=300)


async def test_a_failed_market_read_rearms_the_trigger_and_sends_nothing(db_url: str,
                                                                        trigger_store: TriggerStore) -> None:
    conn, fired = await _armed_stop(db_url, trigger_store)
    executor, rearmed = RecordingExecutor(), []
    firer = _firer(trigger_store, executor, _Markets(failures=1), rearmed)
    assert await firer.fire(fired, [], TickInfo(Decimal("0.30"))) is None
    assert rearmed == [["trg_sl"]] and executor.orders == []
    assert (await trigger_row(conn, "trg_sl"))["state"] == "ARMED"
    # the next crossing fires it, with the client order id the first try would have had
    result = await firer.fire(fired, [], TickInfo(Decimal("0.30")))
    assert result is not None and result.row is not None and result.row.state is State.FIRED
    assert [(o.client_order_id, o.size, o.min_order_size) for o in executor.orders] == [
        (hash_id("co", "trg_sl", "1"), "50", "5")]
    await conn.close()


async def test_a_slow_market_read_is_waited_for_before_deciding(db_url: str, trigger_store: TriggerStore) -> None:
    conn, fired = await _armed_stop(db_url, trigger_store)
    executor, rearmed = RecordingExecutor(), []
    firer = _firer(trigger_store, executor, _Markets(delay_s=0.2), rearmed)
    result = await firer.fire(fired, [], TickInfo(Decimal("0.30")))
    assert result is not None and result.row is not None and result.row.state is State.FIRED
    assert [(o.size, o.tick_size, o.min_order_size, o.condition_id) for o in executor.orders] == [
        ("50", "0.01", "5", CONDITION)]
    assert rearmed == []
    await conn.close()
