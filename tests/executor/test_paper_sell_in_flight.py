"""The paper venue on real PostgreSQL and Redis: a paper SELL an earlier process filled and did not book still counts
against the wallet's balance, and what a SELL or a BUY costs in reads."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest

from common.marketstate import BookSnapshot, write_book
from services.executor.adapters.order_store import OrderStore
from services.executor.adapters.paper_holdings import PaperHoldings
from services.executor.adapters.paper_venue import PaperVenue
from services.executor.domain import venue_orders as v
from services.executor.domain.order_intake import IntakeRules, Prepared, prepare
from services.executor.domain.paper_selling import PaperHolding
from tests.executor.conftest import ASSET, CONDITION, make_order, rows
from tradingtools.common.v1 import common_pb2 as cpb

pytestmark = pytest.mark.integration
D = Decimal
WALLET = "w_1"
BIDS = ((D("0.49"), D("500")),)
ASKS = ((D("0.50"), D("500")),)


async def _book(r: Any) -> BookSnapshot:
    now = int(time.time() * 1000)
    book = BookSnapshot(ASSET, CONDITION, BIDS, ASKS, D("0.01"), now, now)
    await write_book(r, book)
    return book


def _hold(db_url: str, size: str) -> None:
    rows(db_url, "INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price, cost_usd,"
                 " venue) VALUES (%s, %s, %s, '0xp', %s, 0.5, %s, 'PAPER') RETURNING size",
         WALLET, ASSET, CONDITION, D(size), D(size) / 2)


def _prepared(book: BookSnapshot, i: int, size: str) -> Prepared:
    order = make_order(i, follower_wallet_id=WALLET, mode=cpb.EXECUTION_MODE_PAPER, side=cpb.SIDE_SELL,
                       amount_usd="", size=size, reference_price="0.49")
    p = prepare(order, book, IntakeRules(live_configured=False), time.time_ns())
    assert p.ticket.request is not None and not p.life.terminal, p.life
    return p


async def _sell_under_way(pool: Any, book: BookSnapshot, i: int, size: str) -> v.PlaceRequest:
    """A paper SELL of WALLET as the executor stores it before sending it (SUBMITTING)."""
    p = _prepared(book, i, size)
    assert (await OrderStore(pool).insert_intents([(p.ticket, p.life)])) == {p.ticket.client_order_id}
    assert p.ticket.request is not None
    return p.ticket.request


def _filled(o: v.VenueResult) -> Decimal:
    assert isinstance(o, v.VenueOrder), o
    return o.filled_size


async def test_a_sell_an_earlier_process_filled_and_did_not_book_counts_against_the_balance(
        pool: Any, r: Any, db_url: str) -> None:
    """The executor stopped between the paper fill and its booking: the order is under way in PostgreSQL, its
    result kept in Redis, and the new process's memory knows nothing of it."""
    book = await _book(r)
    _hold(db_url, "20")
    old = await _sell_under_way(pool, book, 1, "15")
    assert _filled(await PaperVenue(r, holdings=PaperHoldings(pool)).place(old)) == D("15")
    restarted = PaperVenue(r, holdings=PaperHoldings(pool))
    refused = await restarted.place(await _sell_under_way(pool, book, 2, "15"))
    assert isinstance(refused, v.VenueError) and refused.code == "INVALID_ORDER_NOT_ENOUGH_BALANCE", refused
    assert _filled(await restarted.place(await _sell_under_way(pool, book, 3, "5"))) == D("5")


async def test_shares_of_the_other_venue_are_not_the_paper_wallets(pool: Any, r: Any, db_url: str) -> None:
    """The executor refuses such a SELL before sending it (POSITION_IN_OTHER_VENUE); sent, it would be refused."""
    book = await _book(r)
    _hold(db_url, "20")
    rows(db_url, "UPDATE positions SET venue = 'INSIDERS' RETURNING venue")
    request = _prepared(book, 1, "5").ticket.request
    assert request is not None
    refused = await PaperVenue(r, holdings=PaperHoldings(pool)).place(request)
    assert isinstance(refused, v.VenueError) and refused.code == "INVALID_ORDER_NOT_ENOUGH_BALANCE", refused


class _CountingHoldings:
    """The holdings reader, counting its reads."""

    def __init__(self, inner: PaperHoldings) -> None:
        self.inner, self.reads = inner, 0

    async def read(self, wallet_id: str, asset_id: str, sending: Any) -> PaperHolding:
        self.reads += 1
        return await self.inner.read(wallet_id, asset_id, sending)


class _CountingRedis:
    """The Redis client, counting MGETs."""

    def __init__(self, r: Any) -> None:
        self.r, self.mgets = r, 0

    async def mget(self, keys: list[str]) -> Any:
        self.mgets += 1
        return await self.r.mget(keys)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.r, name)


async def test_a_buy_reads_no_holding_and_a_lone_sell_reads_it_once(pool: Any, r: Any, db_url: str) -> None:
    book = await _book(r)
    holdings, redis = _CountingHoldings(PaperHoldings(pool)), _CountingRedis(r)
    venue = PaperVenue(redis, holdings=holdings)
    buy = v.PlaceRequest("co_buy", "u", WALLET, "0xp", ASSET, "BUY", "FAK", D("10"), None, D("0.50"))
    assert _filled(await venue.place(buy)) == D("20")
    assert (holdings.reads, redis.mgets) == (0, 0)
    _hold(db_url, "20")
    assert _filled(await venue.place(await _sell_under_way(pool, book, 1, "20"))) == D("20")
    assert (holdings.reads, redis.mgets) == (1, 0)
