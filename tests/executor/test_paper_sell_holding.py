"""A paper SELL is not checked against the wallet's holding (the paper venue knows no positions)."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest

from common.marketstate import BookSnapshot, write_book
from services.executor.adapters.paper_venue import PaperVenue
from services.executor.domain import venue_orders as v
from services.executor.domain.position_math import Position, apply_fill

pytestmark = pytest.mark.integration
D = Decimal


async def test_a_paper_sell_beyond_the_holding_fills_in_full_and_is_booked_for_what_was_held(r: Any) -> None:
    """The live venue answers INVALID_ORDER_NOT_ENOUGH_BALANCE (then re-sized by reconciliation); the paper venue
    reads only Redis, where no position is kept, so it fills the 50 shares of a wallet holding 10. Booking keeps the
    position right (never below zero, PnL only on the 10 held) but the order reports 50 sold."""
    now = int(time.time() * 1000)
    await write_book(r, BookSnapshot("tok", "0x" + "c" * 64, ((D("0.60"), D("100")),), ((D("0.61"), D("100")),),
                                     D("0.01"), now, now))
    sell = v.PlaceRequest("co_s", "u", "w", "0xp", "tok", "SELL", "FAK", None, D("50"), D("0.55"))
    o = await PaperVenue(r).place(sell)
    assert isinstance(o, v.VenueOrder) and (o.status, o.filled_size, o.avg_price) == ("confirmed", D("50"), D("0.6"))
    effect = apply_fill(Position(D("10"), D("0.40"), D("4")), buying=False, size=o.filled_size, price=o.avg_price)
    assert (effect.position.size, effect.oversold, effect.realized_pnl_usd) == (D("0"), D("40"), D("2.0"))
