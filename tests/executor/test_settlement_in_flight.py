"""Settlement of a market while a wallet has an order of the resolved token in flight.

A SELL the venue matched before the market resolved can be learnt after the resolution was applied (an answer
held back as ``delayed``, a POST that timed out and is settled by a status query): settling the position first
emptied it, and the SELL's fill was then booked on nothing (its proceeds lost, a redemption recorded for shares
already sold, the redemption refused NOTHING_TO_REDEEM). Settlement now leaves such a position alone while the
order is open (``order_pending``) and the settlement sweep settles what is left once the order ended, its fills
booked (the journal books an order's fills in the transaction that ends it).

(From the review of the position lifecycle.)"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal as D
from typing import Any, cast

import pytest

from common.alerts import OUTBOX
from common.storage import create_pool
from services.executor.adapters import fill_store
from services.executor.adapters.order_store import Change, OrderStore
from services.executor.adapters.settlement_store import SettlementStore
from services.executor.domain import venue_orders as v
from services.executor.domain.fill_math import Booking
from services.executor.domain.order_intake import IntakeRules, Prepared, prepare
from services.executor.domain.order_lifecycle import State
from services.executor.domain.settlement import Resolution
from services.executor.domain.ticket import INSIDERS, Ticket
from services.executor.settling import Settler
from tests.executor.conftest import ASSET, CONDITION, make_order, rows
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.market.v1 import market_pb2 as mpb

pytestmark = pytest.mark.integration

NO = "2" * 77
RULES = IntakeRules(live_configured=True)


@dataclass
class World:
    """One database: the journal's store, settlement and its settler."""

    store: OrderStore
    settler: Settler
    db_url: str
    now_ms: int


@pytest.fixture
async def world(db_url: str) -> AsyncIterator[World]:
    pool = await create_pool(db_url, min_size=1, max_size=4, autocommit=True)
    try:
        yield World(OrderStore(pool), Settler(SettlementStore(pool)), db_url, time.time_ns() // 1_000_000)
    finally:
        await pool.close()


def _wallet(n: int) -> dict[str, str]:
    return {"follower_wallet_id": f"w_{n}", "follower_proxy": "0x" + str(n) * 40, "subscription_id": f"sub_{n}"}


async def _hold(w: World, wallet: int, shares: str, price: str) -> None:
    """The wallet bought ``shares`` of ASSET at ``price`` (booked)."""
    t = Ticket(make_order(100 + wallet, **_wallet(wallet)), INSIDERS, None, time.time_ns())
    async with w.store.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
        await fill_store.book(cur, [(t, Booking(f"fill_buy_{wallet}", D(shares), D(price), D(shares) * D(price), D(0),
                                                True, w.now_ms))])


async def _admit(w: World, wallet: int, side: int, **kw: str) -> Prepared:
    """An order of the wallet on ASSET admitted: its intent stored, so in flight (``order_pending`` open)."""
    selling = side == cpb.SIDE_SELL  # an exit of a trigger; a BUY by hand
    terms = {"amount_usd": "", "trigger_id": f"trg_{wallet}", **kw} if selling else kw
    p = prepare(make_order(200 + wallet, **_wallet(wallet), side=side, leader_trade_id="",
                           origin=epb.ORDER_ORIGIN_TRIGGER if selling else epb.ORDER_ORIGIN_MANUAL, **terms),
                None, RULES, time.time_ns())
    assert p.life.state is State.SUBMITTING, p.life
    assert await w.store.insert_intents([(p.ticket, p.life)]) == {p.ticket.client_order_id}
    return p


async def _filled(w: World, p: Prepared, shares: str, price: str) -> None:
    """The venue's answer learnt at last: the order's fill booked and the order FILLED, as the journal writes them
    (one transaction)."""
    life = dataclasses.replace(p.life, state=State.FILLED, venue_order_id="v_" + p.ticket.client_order_id,
                               filled_size=D(shares), avg_price=D(price))
    booking = Booking("fill_" + p.ticket.client_order_id, D(shares), D(price), D(shares) * D(price), D(0), True,
                      w.now_ms + 1)
    await w.store.apply([], [Change(p.ticket, life, None, booking)])


def _resolved(db_url: str, winner: str) -> mpb.MarketResolution:
    """Ingest's resolution of the market, recorded (the sweep reads ``market_resolutions``) and as streamed."""
    msg = mpb.MarketResolution(condition_id=CONDITION, asset_ids=[ASSET, NO], winning_asset_id=winner,
                               source=mpb.RESOLUTION_SOURCE_CLOB_SOCKET, received_time_ns=time.time_ns())
    rows(db_url, "INSERT INTO market_resolutions (condition_id, asset_ids, winning_asset_id, source, received_at,"
                 " payload) VALUES (%s, %s, %s, 'CLOB_SOCKET', now(), %s) RETURNING 1",
         CONDITION, [ASSET, NO], winner, msg.SerializeToString())
    return msg


def _positions(db_url: str) -> dict[str, tuple[str, D, D | None, D]]:
    """Wallet → (state, size, resolved shares, realized PnL)."""
    return {w: (s, size, resolved, pnl) for w, s, size, resolved, pnl in rows(
        db_url, "SELECT follower_wallet_id, state, size, resolved_shares, realized_pnl_usd FROM positions")}


def _redeeming(db_url: str) -> dict[str, D]:
    """Wallet → shares its redemption of the market was recorded for."""
    return {w: shares for w, shares in rows(db_url, "SELECT follower_wallet_id, shares FROM redemptions")}


def _stats(db_url: str) -> dict[str, tuple[D, D]]:
    """Subscription → (exposure, realized PnL)."""
    return {s: (e, p) for s, e, p in rows(
        db_url, "SELECT subscription_id, exposure_usd, realized_pnl_usd FROM subscription_stats")}


async def test_a_take_profit_sell_in_flight_at_the_resolution_keeps_its_proceeds_and_nothing_sold_is_redeemed(
        world: World) -> None:
    # w_1 holds 100 shares bought for $40; w_2, of the same token, 50 for $20
    await _hold(world, 1, "100", "0.40")
    await _hold(world, 2, "50", "0.40")
    # w_1's take-profit SELLs its 100 @ 0.95; the venue matches it, its answer is delayed...
    sell = await _admit(world, 1, cpb.SIDE_SELL, size="100", limit_price="0.95")
    # ... meanwhile the market resolves (the held token wins): w_2 is settled, w_1 waits for its SELL
    await world.settler.handle(_resolved(world.db_url, ASSET))
    assert _positions(world.db_url) == {"w_1": ("OPEN", D(100), None, D(0)),
                                        "w_2": ("RESOLVED_WON", D(0), D(50), D(30))}
    assert _redeeming(world.db_url) == {"w_2": D(50)}
    assert (world.settler.stats.positions, world.settler.stats.held) == (1, 1)
    # a sweep while the SELL is still in flight settles nothing
    assert await world.settler.sweep() == 0
    # the SELL's fill is learnt: 100 sold for $95, and the order ends
    await _filled(world, sell, "100", "0.95")
    assert await world.settler.sweep() == 0  # nothing is left to settle: every share was sold
    assert _positions(world.db_url)["w_1"] == ("CLOSED", D(0), None, D(55))  # +$95 − $40
    assert _stats(world.db_url) == {"sub_1": (D(0), D(55)), "sub_2": (D(0), D(30))}
    assert _redeeming(world.db_url) == {"w_2": D(50)}  # none for the 100 shares sold


async def test_a_stop_loss_sell_in_flight_at_a_losing_resolution_realizes_what_it_sold_for(world: World) -> None:
    await _hold(world, 1, "100", "0.40")
    # w_1's stop-loss SELLs its 100 @ 0.10 ($10): matched, not learnt yet when the market resolves against the token
    sell = await _admit(world, 1, cpb.SIDE_SELL, size="100", limit_price="0.10")
    await world.settler.handle(_resolved(world.db_url, NO))
    assert _positions(world.db_url) == {"w_1": ("OPEN", D(100), None, D(0))}
    await _filled(world, sell, "100", "0.10")
    assert await world.settler.sweep() == 0
    # $10 received for $40 paid (the daily loss limit reads the position's day PnL)
    assert rows(world.db_url, "SELECT state, realized_pnl_usd, pnl_day_realized_usd FROM positions") == [
        ("CLOSED", D(-30), D(-30))]
    assert _stats(world.db_url) == {"sub_1": (D(0), D(-30))}
    assert _redeeming(world.db_url) == {}


async def test_the_shares_a_sell_in_flight_left_are_settled_by_the_next_sweep_once_it_ended(world: World) -> None:
    await _hold(world, 1, "100", "0.40")
    sell = await _admit(world, 1, cpb.SIDE_SELL, size="40", limit_price="0.95")
    await world.settler.handle(_resolved(world.db_url, ASSET))
    assert _positions(world.db_url)["w_1"][:2] == ("OPEN", D(100))
    await _filled(world, sell, "40", "0.95")  # 40 sold for $38 (cost $16)
    assert await world.settler.sweep() == 1
    # the 60 left win: $60 for their $24 of cost; +$22 realized by the SELL
    assert _positions(world.db_url) == {"w_1": ("RESOLVED_WON", D(0), D(60), D(58))}
    assert _stats(world.db_url) == {"sub_1": (D(0), D(58))}
    assert _redeeming(world.db_url) == {"w_1": D(60)}
    assert rows(world.db_url, "SELECT size, notional_usd FROM fills WHERE starts_with(order_id, 'settle_')") == [
        (D(60), D(60))]


async def test_a_buy_in_flight_at_the_resolution_is_settled_with_the_position_it_adds_to(world: World) -> None:
    await _hold(world, 1, "100", "0.40")
    buy = await _admit(world, 1, cpb.SIDE_BUY, amount_usd="20", limit_price="0.41")
    await world.settler.handle(_resolved(world.db_url, ASSET))
    await _filled(world, buy, "50", "0.40")  # matched before the resolution: 50 more shares for $20
    assert await world.settler.sweep() == 1
    # one life of 150 winning shares, one redemption of them all (not a second life redeemed by nothing)
    assert _positions(world.db_url) == {"w_1": ("RESOLVED_WON", D(0), D(150), D(90))}
    assert rows(world.db_url, "SELECT count(*) FROM position_history") == [(0,)]
    assert _redeeming(world.db_url) == {"w_1": D(150)}
    assert _stats(world.db_url) == {"sub_1": (D(0), D(90))}


async def test_an_order_that_ended_without_a_fill_lets_the_sweep_settle_the_position(world: World) -> None:
    await _hold(world, 1, "100", "0.40")
    sell = await _admit(world, 1, cpb.SIDE_SELL, size="100", limit_price="0.95")
    await world.settler.handle(_resolved(world.db_url, ASSET))
    # the venue cancelled it with the market (or it ended LOST): no fill
    await world.store.apply([], [Change(sell.ticket, dataclasses.replace(sell.life, state=State.CANCELLED))])
    assert await world.settler.sweep() == 1
    assert _positions(world.db_url) == {"w_1": ("RESOLVED_WON", D(0), D(100), D(60))}
    assert _redeeming(world.db_url) == {"w_1": D(100)}


async def test_an_order_of_another_token_or_wallet_holds_nothing_back(world: World) -> None:
    await _hold(world, 1, "100", "0.40")
    await _hold(world, 2, "50", "0.40")
    # w_2's order on the other token, and w_3's (holding nothing) on this one
    other = make_order(301, **_wallet(2), asset_id=NO, leader_trade_id="")
    third = make_order(302, **_wallet(3), leader_trade_id="")
    for o in (other, third):
        p = prepare(o, None, RULES, time.time_ns())
        await world.store.insert_intents([(p.ticket, p.life)])
    result = await world.settler.settle(Resolution(CONDITION, (ASSET, NO), ASSET))
    assert sorted(s.follower_wallet_id for s in result.settled) == ["w_1", "w_2"] and result.held == []


class CancellingVenue:
    """The venue's ``DELETE /v1/orders/{id}``: each call recorded, answered in turn by ``answers``, then with the
    order cancelled."""

    name = INSIDERS

    def __init__(self, *answers: v.VenueResult) -> None:
        self.answers = list(answers)
        self.cancels: list[str] = []

    async def cancel(self, venue_order_id: str) -> v.VenueResult:
        self.cancels.append(venue_order_id)
        return self.answers.pop(0) if self.answers else v.VenueOrder(venue_order_id, "", v.CANCELLED)


async def test_a_resting_order_the_venue_left_on_a_resolved_market_is_cancelled_and_its_position_settled(
        db_url: str) -> None:
    """A GTC order resting at the venue holds its position back from settlement until it ends; a venue that does
    not cancel it with its market would hold the position back for ever (a winner never redeemed, a loser's cost
    held against the caps). The sweep asks the venue to cancel it, once; its status query then ends it."""
    pool = await create_pool(db_url, min_size=1, max_size=4, autocommit=True)
    try:
        venue = CancellingVenue(v.VenueError("timeout"))  # the first cancel's answer says nothing
        settler = Settler(SettlementStore(pool), venues={INSIDERS: cast(Any, venue)})
        w = World(OrderStore(pool), settler, db_url, time.time_ns() // 1_000_000)
        await _hold(w, 1, "100", "0.40")
        await _hold(w, 2, "50", "0.40")
        # w_1's take-profit rests at the venue: GTC SELL of its 100 @ 0.95, placed
        p = prepare(make_order(201, **_wallet(1), side=cpb.SIDE_SELL, order_type=epb.ORDER_TYPE_GTC, amount_usd="",
                               size="100", limit_price="0.95", leader_trade_id="", trigger_id="trg_1",
                               origin=epb.ORDER_ORIGIN_TRIGGER), None, RULES, time.time_ns())
        await w.store.insert_intents([(p.ticket, p.life)])
        placed = dataclasses.replace(p.life, state=State.PLACED, venue_order_id="io_resting")
        await w.store.apply([], [Change(p.ticket, placed)])
        # w_2's order is still being posted: no venue order id to cancel (it ends by its own answer)
        await _admit(w, 2, cpb.SIDE_SELL, size="50", limit_price="0.95")
        await settler.handle(_resolved(db_url, ASSET))
        assert settler.stats.held == 2 and await settler.sweep() == 0
        assert venue.cancels == ["io_resting"]
        assert await settler.sweep() == 0
        assert venue.cancels == ["io_resting"] * 2  # asked again after an answer that said nothing: cancelled now
        assert await settler.sweep() == 0
        assert venue.cancels == ["io_resting"] * 2  # answered: not asked again
        # the order's status query reads it cancelled: it ends, nothing filled
        await w.store.apply([], [Change(p.ticket, dataclasses.replace(placed, state=State.CANCELLED))])
        assert await settler.sweep() == 1
        assert _positions(db_url)["w_1"] == ("RESOLVED_WON", D(0), D(100), D(60))
        assert _redeeming(db_url) == {"w_1": D(100)}
        assert venue.cancels == ["io_resting"] * 2
    finally:
        await pool.close()


class _TwoAPage(SettlementStore):
    """The resting orders read two at a time (the settler's batch is 100)."""

    async def resting_orders(self, *args: Any, **kw: Any) -> Any:
        return await super().resting_orders(*args, **{**kw, "limit": 2})


def _cancel_alerts() -> list[str]:
    return [a.fields.get("client_order_id", "") for a in list(OUTBOX.items) if a.kind == "ORDER_CANCEL_REFUSED"]


async def test_refused_cancels_hold_no_later_resting_order_back_and_are_reported_once(
        db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """The resting orders were read by client order id up to a batch and those already asked skipped after it:
    once a batch of them had an answer that was not a retry (a 403: the venue no longer takes the wallet's key) and
    still rested, every sweep read the same batch and no later resting order was asked again, each holding its
    position back for ever. A refused cancel leaves its order resting and its position held back until someone
    acts: logged as an error and alerted once, at the sweep after the refusal that still finds it resting."""
    pool = await create_pool(db_url, min_size=1, max_size=4, autocommit=True)
    try:
        venue = RefusingVenue({"io_1", "io_2"})
        settler = Settler(_TwoAPage(pool), venues={INSIDERS: cast(Any, venue)})
        w = World(OrderStore(pool), settler, db_url, time.time_ns() // 1_000_000)
        for n in (1, 2, 3):
            await _hold(w, n, "10", "0.40")
            p = prepare(make_order(200 + n, **_wallet(n), side=cpb.SIDE_SELL, order_type=epb.ORDER_TYPE_GTC,
                                   amount_usd="", size="10", limit_price="0.95", leader_trade_id="",
                                   trigger_id=f"trg_{n}", origin=epb.ORDER_ORIGIN_TRIGGER), None, RULES,
                        time.time_ns())
            await w.store.insert_intents([(p.ticket, p.life)])
            placed = dataclasses.replace(p.life, state=State.PLACED, venue_order_id=f"io_{n}")
            await w.store.apply([], [Change(p.ticket, placed)])
        coids = {p: f"co_test{200 + p:05d}" for p in (1, 2, 3)}
        alerted_before = _cancel_alerts()
        await settler.handle(_resolved(db_url, ASSET))
        caplog.set_level(logging.ERROR, logger="services.executor.settling")
        await settler.sweep()
        assert venue.cancels == ["io_1", "io_2"]  # refused: they rest still
        await settler.sweep()
        assert venue.cancels == ["io_1", "io_2", "io_3"], "the third resting order was never asked"
        for _ in range(2):
            await settler.sweep()
        assert venue.cancels == ["io_1", "io_2", "io_3"]
        errors = [getattr(r, "client_order_id", "") for r in caplog.records
                  if r.levelno == logging.ERROR and r.name == "services.executor.settling"]
        assert sorted(errors) == [coids[1], coids[2]]
        assert sorted(_cancel_alerts()[len(alerted_before):]) == [coids[1], coids[2]]
    finally:
        await pool.close()


class RefusingVenue:
    """``DELETE /v1/orders/{id}``: 403 for the orders in ``refuse``, cancelled otherwise."""

    name = INSIDERS

    def __init__(self, refuse: set[str]) -> None:
        self.refuse = refuse
        self.cancels: list[str] = []

    async def cancel(self, venue_order_id: str) -> v.VenueResult:
        self.cancels.append(venue_order_id)
        if venue_order_id in self.refuse:
            return v.VenueError("http", 403, "", "forbidden")
        return v.VenueOrder(venue_order_id, "", v.CANCELLED)
