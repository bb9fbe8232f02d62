"""A winning position settled late (a fill booked after its market's settlement) while the wallet's redemption of the
market is recorded but not sent yet joins that redemption: its shares (and a neg-risk market's amounts per outcome,
what the venue is asked to redeem) are the wallet's winning shares booked, not those of the first settlement alone.
Once the redemption was sent, it is what was sent (a retry replays the same request): shares that reach the chain
later are the leftover rounds' (``domain/leftovers``).

Real PostgreSQL, the real settlement and redemption components, the Insiders fake over HTTP.

(From the review of reconciliation and settlement.)"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal as D
from typing import Any

import pytest

from common.config import Secret
from common.streams import REDEMPTION_EVENTS, DurableLog, create_stream_redis
from services.executor.adapters import fill_store
from services.executor.adapters.insiders_api import InsidersVenue
from services.executor.adapters.redemption_store import RedemptionStore
from services.executor.adapters.settlement_store import SettlementStore
from services.executor.domain.fill_math import Booking
from services.executor.domain.ticket import INSIDERS, Ticket
from services.executor.ports import Answer
from services.executor.redeeming import Redeemer
from services.executor.settling import Settler
from sim.insiders import InsidersFake
from sim.venue import StaticBooks
from tests.executor.conftest import ASSET, CONDITION, make_order, rows
from tests.helpers import eventually
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.market.v1 import market_pb2 as mpb

pytestmark = pytest.mark.integration

NO = "2" * 77
TOKEN = "late-winner-token"
PROXY = "0x" + "1" * 40


@dataclass
class Recording:
    """The Insiders API adapter, keeping what each redemption POST asked for."""

    venue: InsidersVenue
    asked: list[tuple[str, list[D]]] = field(default_factory=list)  # (key, amounts)

    async def redeem(self, key: str, wallet_id: str, condition_id: str, neg_risk: bool,
                     amounts: Sequence[D]) -> Answer:
        self.asked.append((key, list(amounts)))
        return await self.venue.redeem(key, wallet_id, condition_id, neg_risk, amounts)

    async def redemption(self, redeem_id: str) -> Answer:
        return await self.venue.redemption(redeem_id)


@dataclass
class World:
    """The venue, settlement and redemption on one database."""

    fake: InsidersFake
    api: Recording
    settler: Settler
    redeemer: Redeemer
    events: DurableLog
    pool: Any
    db_url: str


@pytest.fixture
async def world(pool: Any, db_url: str, redis_url: str) -> AsyncIterator[World]:
    fake = InsidersFake(StaticBooks(), token=TOKEN, settle_s=0.02)
    await fake.start()
    api = Recording(InsidersVenue(fake.url, Secret(TOKEN)))
    sr = create_stream_redis(redis_url, block_s=0.2)
    events = DurableLog(sr, REDEMPTION_EVENTS, block_ms=50)
    try:
        yield World(fake, api, Settler(SettlementStore(pool)), Redeemer(RedemptionStore(pool), api, None, events),
                    events, pool, db_url)
    finally:
        await api.venue.close()
        await fake.stop()
        await sr.aclose()


async def _book(w: World, i: int, asset: str, shares: str, price: str) -> None:
    """A fill of w_1 booked now (as the journal books it)."""
    t = Ticket(make_order(i, follower_wallet_id="w_1", follower_proxy=PROXY, subscription_id="sub_1", asset_id=asset),
               INSIDERS, None, time.time_ns())
    async with w.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
        await fill_store.book(cur, [(t, Booking(f"fill_{i}", D(shares), D(price), D(shares) * D(price), D(0), True,
                                                time.time_ns() // 1_000_000))])


async def _resolved(w: World) -> None:
    """The neg-risk market resolves YES: recorded as ingest records it, at the venue, and applied."""
    msg = mpb.MarketResolution(condition_id=CONDITION, asset_ids=[ASSET, NO], winning_asset_id=ASSET, neg_risk=True,
                               source=mpb.RESOLUTION_SOURCE_CLOB_SOCKET, received_time_ns=time.time_ns())
    rows(w.db_url, "INSERT INTO market_resolutions (condition_id, asset_ids, winning_asset_id, neg_risk, source,"
                   " received_at, payload) VALUES (%s, %s, %s, true, 'CLOB_SOCKET', now(), %s) RETURNING 1",
         CONDITION, [ASSET, NO], ASSET, msg.SerializeToString())
    w.fake.holdings.resolve(CONDITION, ASSET)
    await w.settler.handle(msg)


async def _held_and_resolved(w: World) -> None:
    """w_1 holds 100 YES and 20 NO (booked, at the venue); the market resolves YES; then 50 more YES, matched before
    the resolution and on-chain, are booked late: a new life of the token, open."""
    w.fake.holdings.register(CONDITION, [(ASSET, "Yes"), (NO, "No")], neg_risk=True)
    w.fake.holdings.terminal_trade("w_1", ASSET, "BUY", D(150), D("0.4"))
    w.fake.holdings.terminal_trade("w_1", NO, "BUY", D(20), D("0.5"))
    await _book(w, 1, ASSET, "100", "0.40")
    await _book(w, 2, NO, "20", "0.50")
    await _resolved(w)
    assert _redemption(w.db_url) == ("PENDING", 0, D(100), [D(100), D(20)])
    await _book(w, 3, ASSET, "50", "0.40")


def _redemption(db_url: str) -> tuple[Any, ...]:
    [(state, attempts, shares, amounts)] = rows(db_url, "SELECT state, attempts, shares, amounts FROM redemptions")
    return state, attempts, shares, [D(a) for a in amounts]


async def _published(w: World) -> list[tuple[int, str, str]]:
    return [(e.type, e.shares, e.payout_usd) for e in (epb.RedemptionEvent.FromString(p) for _, p in
                                                       await w.events.read("0-0", block_ms=0))]


async def test_a_late_winner_settled_before_the_redemption_is_sent_is_redeemed_with_it(world: World) -> None:
    await _held_and_resolved(world)
    # the sweep settles the late life while the redemption waits to be sent: it asks for all 150 winning shares
    assert await world.settler.sweep() == 1
    assert _redemption(world.db_url) == ("PENDING", 0, D(150), [D(150), D(20)])
    await world.redeemer.round()
    assert world.api.asked == [(world.api.asked[0][0], [D(150), D(20)])]

    async def confirmed() -> bool:
        await world.redeemer.round()
        return _redemption(world.db_url)[0] == "CONFIRMED"

    await eventually(confirmed)  # type: ignore[arg-type]
    # both winning lives were in it: REDEEMED; the event says what was redeemed and paid
    assert sorted(rows(world.db_url, "SELECT state, resolved_shares FROM position_history UNION ALL"
                                     " SELECT state, resolved_shares FROM positions WHERE asset_id = %s", ASSET)) == [
        ("REDEEMED", D(50)), ("REDEEMED", D(100))]
    assert (await _published(world))[-1] == (epb.REDEMPTION_EVENT_TYPE_CONFIRMED, "150", "150")


async def test_a_redemption_already_sent_keeps_what_it_asked_for(world: World) -> None:
    await _held_and_resolved(world)
    world.fake.faults.fail_redeems = 1  # the POST left and was answered 5xx: it is retried with the same request
    await world.redeemer.round()
    assert _redemption(world.db_url)[:2] == ("PENDING", 1)
    assert await world.settler.sweep() == 1  # the late life settles: RESOLVED_WON
    assert _redemption(world.db_url) == ("PENDING", 1, D(100), [D(100), D(20)])
    assert rows(world.db_url, "SELECT state FROM positions WHERE asset_id = %s", ASSET) == [("RESOLVED_WON",)]


async def test_a_late_winner_settled_while_the_redeemer_reads_is_in_the_post(world: World) -> None:
    """The redeemer read the due redemption (100 shares), then the sweep settled the late life before the attempt
    was recorded (still never sent: the 50 joined it): the POST asks for what the row holds once the attempt is on
    record, not for what was read before."""
    await _held_and_resolved(world)
    settler, store = world.settler, world.redeemer.store

    class SettledMeanwhile(RedemptionStore):
        async def due(self, now_ms: int, limit: int = 64) -> list[Any]:
            read = await store.due(now_ms, limit)
            assert await settler.sweep() == 1
            return read

    world.redeemer.store = SettledMeanwhile(world.pool)
    await world.redeemer.round()
    assert _redemption(world.db_url)[1:] == (1, D(150), [D(150), D(20)])
    assert world.api.asked == [(world.api.asked[0][0], [D(150), D(20)])]
