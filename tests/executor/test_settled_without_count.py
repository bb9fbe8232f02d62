"""A position whose SELL ended LOST and was never compared with the venue's count is settled on its booked shares once
the LOST SELL's window passed (the venue's positions unreadable meanwhile): its payout and redemption may count shares
it sold. Settling it raises a critical SETTLED_WITHOUT_COUNT alert, once, so that someone checks it at the venue
(real PostgreSQL)."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from common.alerts import OUTBOX
from common.storage import create_pool
from services.executor.adapters.settlement_store import SettlementStore
from services.executor.settling import Settler
from tests.executor.test_lost_sell_count_time import _held_with_a_lost_sell
from tests.executor.test_lost_sell_resolved_market import _resolved, _settled
from tests.executor.test_reconcile_grace import _rows

pytestmark = pytest.mark.integration


def _alerted() -> list[str]:
    return [a.fields.get("position_id", "") for a in list(OUTBOX.items) if a.kind == "SETTLED_WITHOUT_COUNT"]


def _held_with_an_old_lost_sell(db_url: str) -> None:
    """100 shares booked half an hour ago, a LIVE SELL of 60 of them that ended LOST 901 s ago (past its window)."""
    _held_with_a_lost_sell(db_url, 901)
    _rows(db_url, "UPDATE positions SET opened_at = now() - interval '1800 s'")


async def _settle_twice(db_url: str) -> None:
    resolution = _resolved(db_url)
    pool = await create_pool(db_url, autocommit=True)
    try:
        settler = Settler(SettlementStore(pool))
        await settler.settle(resolution)
        await settler.settle(resolution)
        await settler.sweep()
    finally:
        await pool.close()


async def test_a_position_settled_with_a_lost_sell_never_compared_is_alerted_once(db_url: str) -> None:
    OUTBOX.items.clear()
    _held_with_an_old_lost_sell(db_url)
    await _settle_twice(db_url)
    assert _settled(db_url) == [("RESOLVED_WON", D(0), D(100), D(60))]
    assert _alerted() == ["pos_1"]


async def test_a_position_compared_after_its_lost_sell_is_settled_without_an_alert(db_url: str) -> None:
    OUTBOX.items.clear()
    _held_with_an_old_lost_sell(db_url)
    _rows(db_url, "UPDATE positions SET reconciled_at = now() - interval '60 s'")
    await _settle_twice(db_url)
    assert _settled(db_url) == [("RESOLVED_WON", D(0), D(100), D(60))]
    assert _alerted() == []


async def test_a_position_whose_lost_sell_filled_all_it_asked_is_settled_without_an_alert(db_url: str) -> None:
    OUTBOX.items.clear()
    _held_with_an_old_lost_sell(db_url)
    _rows(db_url, "UPDATE orders SET filled_size = size")
    await _settle_twice(db_url)
    assert _alerted() == []


async def test_a_position_counted_before_its_lost_sell_ended_is_alerted(db_url: str) -> None:
    OUTBOX.items.clear()
    _held_with_an_old_lost_sell(db_url)
    _rows(db_url, "UPDATE positions SET reconciled_at = now() - interval '905 s'")  # within the LOST's grace
    await _settle_twice(db_url)
    assert _alerted() == ["pos_1"]
