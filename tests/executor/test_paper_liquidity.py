"""The paper venue takes liquidity as a taker would: what its orders took of a level is not there for the next."""

from __future__ import annotations

import asyncio
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
BIDS = ((D("0.49"), D("30")), (D("0.40"), D("100")))
ASKS = ((D("0.50"), D("20")), (D("0.60"), D("100")))


class _Plenty:
    """Every wallet holds more paper shares than these tests sell."""

    async def read(self, wallet_id: str, asset_id: str, sending: Any) -> PaperHolding:
        sending()
        return PaperHolding(D(10**6), {})


PLENTY = _Plenty()


def _buy(coid: str, otype: str = "FAK", amount: str = "10", limit: str = "0.60") -> v.PlaceRequest:
    return v.PlaceRequest(coid, "u", f"w_{coid}", "0xp", "tok", "BUY", otype, D(amount), None, D(limit))


def _sell(coid: str, size: str, otype: str = "FAK", limit: str = "0.40") -> v.PlaceRequest:
    return v.PlaceRequest(coid, "u", f"w_{coid}", "0xp", "tok", "SELL", otype, None, D(size), D(limit))


async def _book(r: Any, *, asks: tuple[tuple[Decimal, Decimal], ...] = ASKS, session: str = "") -> None:
    now = int(time.time() * 1000)
    await write_book(r, BookSnapshot("tok", "0x" + "c" * 64, BIDS, asks, D("0.01"), now, now, session=session))


def _fill(o: v.VenueResult) -> tuple[str, Decimal, Decimal]:
    assert isinstance(o, v.VenueOrder), o
    return o.status, o.filled_size, o.avg_price


async def test_two_paper_buys_do_not_both_take_the_same_ask_liquidity(r: Any) -> None:
    """Two followers' $10 FAK BUYs of one leader trade: the first takes the 20 shares at 0.50, the second has to
    go to 0.60 (before, both filled 20 @ 0.50: 40 shares out of a level of 20)."""
    await _book(r)
    venue = PaperVenue(r, holdings=PLENTY)
    assert _fill(await venue.place(_buy("co_a"))) == ("confirmed", D("20"), D("0.5"))
    assert _fill(await venue.place(_buy("co_b"))) == ("confirmed", D("16.66"), D("0.6"))


async def test_a_second_paper_fok_is_refused_once_the_level_it_needs_is_taken(r: Any) -> None:
    await _book(r)
    venue = PaperVenue(r, holdings=PLENTY)
    assert _fill(await venue.place(_buy("co_c", "FOK", limit="0.50"))) == ("confirmed", D("20"), D("0.5"))
    refused = await venue.place(_buy("co_d", "FOK", limit="0.50"))
    assert isinstance(refused, v.VenueError) and refused.code == "FOK_ORDER_NOT_FILLED_ERROR"
    assert _fill(await venue.place(_buy("co_e", "FAK", limit="0.50"))) == ("cancelled", D("0"), D("0"))


async def test_paper_sells_do_not_both_take_the_same_bid_liquidity(r: Any) -> None:
    await _book(r)
    venue = PaperVenue(r, holdings=PLENTY)
    assert _fill(await venue.place(_sell("co_s1", "20"))) == ("confirmed", D("20"), D("0.49"))
    assert _fill(await venue.place(_sell("co_s2", "20"))) == ("confirmed", D("20"), D("0.445"))  # 10 @ .49, 10 @ .40
    # the asks were not touched by the SELLs
    assert _fill(await venue.place(_buy("co_b1", limit="0.50"))) == ("confirmed", D("20"), D("0.5"))


async def test_concurrent_paper_orders_take_a_level_once_between_them(r: Any) -> None:
    """The executor runs a fan-out's orders concurrently: none may take what another already took."""
    await _book(r)
    venue = PaperVenue(r, holdings=PLENTY)
    results = await asyncio.gather(*(venue.place(_buy(f"co_{i}", limit="0.50")) for i in range(10)))
    filled = [o.filled_size for o in results if isinstance(o, v.VenueOrder)]
    assert len(filled) == 10 and sum(filled) == D("20") and sorted(filled)[-1] == D("20")


async def test_a_replayed_paper_order_takes_nothing_more(r: Any) -> None:
    await _book(r)
    venue = PaperVenue(r, holdings=PLENTY)
    first = await venue.place(_buy("co_r", limit="0.50"))
    assert await venue.place(_buy("co_r", limit="0.50")) == first
    assert _fill(await venue.place(_buy("co_r2", limit="0.50"))) == ("cancelled", D("0"), D("0"))


class _BookReads:
    """The Redis client, counting the reads of the book."""

    def __init__(self, r: Any) -> None:
        self.r, self.book_reads = r, 0

    async def get(self, key: str) -> Any:
        self.book_reads += key == "tt:book:tok"
        return await self.r.get(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.r, name)


async def test_concurrent_replays_of_one_paper_order_take_its_shares_once(r: Any) -> None:
    """A replay made while the order is being placed waits for its result: filled against the book less its own
    takes, it would come back empty, and whichever result Redis kept first would be the order's."""
    await _book(r)
    counting = _BookReads(r)
    venue = PaperVenue(counting, holdings=PLENTY)
    results = await asyncio.gather(*(venue.place(_buy("co_same", limit="0.50")) for _ in range(5)))
    assert all(_fill(o) == ("confirmed", D("20"), D("0.5")) for o in results)
    assert counting.book_reads == 1
    assert _fill(await venue.place(_buy("co_next", "FAK", "5", limit="0.50"))) == ("cancelled", D("0"), D("0"))


@pytest.mark.parametrize(("change", "after"), [
    ("level size", ("confirmed", D("5"), D("0.5"))),  # a maker added 5 to the 20 taken: 5 left, not 25
    ("new session", ("cancelled", D("0"), D("0"))),  # a new session's snapshot still shows the 20 taken
])
async def test_the_taken_level_stays_taken_whatever_the_book_shows_it_at(r: Any, change: str,
                                                                         after: tuple[str, Decimal, Decimal]) -> None:
    """The venue's book never shows paper takes: what is left is the size shown less them (150 shares were filled
    from a level of 100 once a maker cancelled 10, when a changed size made the takes forgotten)."""
    await _book(r, session="s1")
    await r.set("tt:bookfeed", b'{"session":"s1","aliveMs":%d}' % int(time.time() * 1000))
    venue = PaperVenue(r, holdings=PLENTY)
    assert _fill(await venue.place(_buy("co_1", limit="0.50"))) == ("confirmed", D("20"), D("0.5"))
    if change == "level size":
        await _book(r, asks=((D("0.50"), D("25")), (D("0.60"), D("100"))), session="s1")
    else:
        await _book(r, session="s2")
        await r.set("tt:bookfeed", b'{"session":"s2","aliveMs":%d}' % int(time.time() * 1000))
    assert _fill(await venue.place(_buy("co_2", limit="0.50"))) == after


async def test_the_taken_level_is_replenished_after_a_while(r: Any) -> None:
    await _book(r)
    clock = [int(time.time() * 1000)]
    venue = PaperVenue(r, holdings=PLENTY, replenish_s=5.0, clock=lambda: clock[0])
    assert _fill(await venue.place(_buy("co_1", limit="0.50"))) == ("confirmed", D("20"), D("0.5"))
    clock[0] += 4_999
    assert _fill(await venue.place(_buy("co_2", limit="0.50"))) == ("cancelled", D("0"), D("0"))
    clock[0] += 1
    assert _fill(await venue.place(_buy("co_3", limit="0.50"))) == ("confirmed", D("20"), D("0.5"))
