"""A paper SELL is checked against the wallet's paper holding, as the live venue checks its balance."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest

from common.marketstate import BookSnapshot, write_book
from services.executor.adapters.paper_venue import PaperVenue
from services.executor.domain import venue_orders as v
from services.executor.domain.paper_selling import PaperHolding

pytestmark = pytest.mark.integration
D = Decimal


class _Holds:
    """Each wallet's paper shares, no SELL under way."""

    def __init__(self, **held: str) -> None:
        self.held = held

    async def read(self, wallet_id: str, asset_id: str, sending: Any) -> PaperHolding:
        sending()
        return PaperHolding(D(self.held[wallet_id]), {})


async def test_a_paper_sell_beyond_the_holding_is_refused_whole_and_takes_nothing(r: Any) -> None:
    """The live venue answers INVALID_ORDER_NOT_ENOUGH_BALANCE (the whole order, nothing filled); the paper venue
    filled the 50 shares of a wallet holding 10 (booking then sold only the 10 held, the order reported 50)."""
    now = int(time.time() * 1000)
    await write_book(r, BookSnapshot("tok", "0x" + "c" * 64, ((D("0.60"), D("100")),), ((D("0.61"), D("100")),),
                                     D("0.01"), now, now))
    venue = PaperVenue(r, holdings=_Holds(w="10", w2="100"))
    sell = v.PlaceRequest("co_s", "u", "w", "0xp", "tok", "SELL", "FAK", None, D("50"), D("0.55"))
    refused = await venue.place(sell)
    assert isinstance(refused, v.VenueError), refused
    assert (refused.http_status, refused.code) == (400, "INVALID_ORDER_NOT_ENOUGH_BALANCE")
    assert await venue.query_by_client_id("co_s") == v.VenueError("http", 404, "ORDER_NOT_FOUND", "co_s")
    # the bids it would have taken are all there for the next SELL
    whole = await venue.place(
        v.PlaceRequest("co_t", "u", "w2", "0xp", "tok", "SELL", "FOK", None, D("100"), D("0.60")))
    assert isinstance(whole, v.VenueOrder) and (whole.status, whole.filled_size) == ("confirmed", D("100"))
