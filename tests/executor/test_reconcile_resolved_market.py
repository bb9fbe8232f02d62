"""Reconciliation leaves alone the open positions of a market with a recorded resolution: settling them is the
resolution's job, whatever the venue's count says.

The venue's count of a resolved market's token can be short of the booked position without anything having been
sold: an earlier redemption already took the shares of a fill booked after the market's settlement (an order in
flight at the resolution), or the shares were redeemed outside the engine while it was down. Reconciliation used to
decide from the venue's ``redeemable`` flag alone: it closed such a winner CLOSED_AT_VENUE (at its cost, no payout
realized) before the settlement sweep could settle it RESOLVED_WON.

(From the review of reconciliation and settlement.)"""

from __future__ import annotations

import time
from decimal import Decimal as D
from typing import Any

import pytest

from services.executor.adapters import fill_store
from services.executor.adapters.reconcile_store import LiveWallet, ReconcileStore
from services.executor.app import Running
from services.executor.domain.fill_math import Booking
from services.executor.domain.reconcile import CLOSED_AT_VENUE, EXTERNAL, AtVenue, Booked, reconcile
from services.executor.domain.settlement import redemption_key
from services.executor.domain.ticket import INSIDERS, Ticket
from tests.executor.conftest import ASSET, CONDITION, TERMINAL_TYPES, Harness, make_order, rows
from tests.helpers import eventually
from tradingtools.market.v1 import market_pb2 as mpb

NO = "2" * 77
WALLET = LiveWallet("w_1", "0x" + "1" * 40)


def test_tokens_of_a_recorded_resolution_are_neither_corrected_nor_opened() -> None:
    booked = [Booked(ASSET, "OPEN", D(100), D("0.4"), D(40)), Booked(NO, "CLOSED", D(0), D(0), D(0))]
    venue = [AtVenue(NO, CONDITION, "No", D(30), D("0.6"), False)]  # ASSET: none left (a redemption took them)
    assert [(c.asset_id, c.kind) for c in reconcile(booked, venue, ())] == [(ASSET, CLOSED_AT_VENUE), (NO, EXTERNAL)]
    assert reconcile(booked, venue, (), {ASSET, NO}) == []


@pytest.mark.integration
async def test_a_resolution_recorded_after_the_view_was_read_still_stops_the_correction(harness: Harness,
                                                                                       pool: Any) -> None:
    await _bought(harness)
    _age(harness.db_url)
    store = ReconcileStore(pool)
    view = await store.view("w_1", 10.0)
    assert view.resolved == set()
    [fix] = reconcile(view.booked, [], view.busy, view.resolved)  # the venue lists none: closed at the venue...
    _record(harness.db_url, _resolution())  # ... but the market's resolution is recorded meanwhile
    assert await store.apply(WALLET, [fix], [], view.subscriptions) == []
    assert _position(harness.db_url) == ("OPEN", D(100), None, D(0))


def _resolution() -> mpb.MarketResolution:
    return mpb.MarketResolution(condition_id=CONDITION, asset_ids=[ASSET, NO], winning_asset_id=ASSET,
                                source=mpb.RESOLUTION_SOURCE_CLOB_SOCKET, received_time_ns=time.time_ns())


def _record(db_url: str, res: mpb.MarketResolution) -> None:
    """The resolution as ingest records it (the settlement sweep reads ``market_resolutions``)."""
    rows(db_url, "INSERT INTO market_resolutions (condition_id, asset_ids, winning_asset_id, source, received_at,"
                 " payload) VALUES (%s, %s, %s, 'CLOB_SOCKET', now(), %s) RETURNING 1",
         CONDITION, [ASSET, NO], ASSET, res.SerializeToString())


def _age(db_url: str) -> None:
    """Bookings older than the settling grace (as if the last fill were a minute ago)."""
    rows(db_url, "UPDATE positions SET updated_at = now() - interval '1 minute' RETURNING 1")


def _position(db_url: str) -> tuple[Any, ...]:
    """The current life's (state, shares, shares resolved, PnL realized)."""
    [row] = rows(db_url, "SELECT state, size, resolved_shares, realized_pnl_usd - realized_base_usd FROM positions"
                         " WHERE asset_id = %s", ASSET)
    return row


async def _bought(harness: Harness) -> Running:
    """w_1 bought 100 YES for $40 on the real executor (booked, the venue holds them)."""
    await harness.set_book(ASSET, [("0.39", "100000")], [("0.40", "100000")])
    harness.fake.holdings.register(CONDITION, [(ASSET, "Yes"), (NO, "No")])
    running = await harness.start_executor()
    order = make_order(1, follower_wallet_id="w_1", subscription_id="sub_1", amount_usd="40",
                       follower_proxy=WALLET.wallet)
    await harness.route(order)

    async def filled() -> bool:
        return any(e.type in TERMINAL_TYPES for e in await harness.events_of(order.client_order_id))

    await eventually(filled, timeout_s=20)  # type: ignore[arg-type]
    assert _position(harness.db_url) == ("OPEN", D(100), None, D(0))
    return running


@pytest.mark.integration
@pytest.mark.parametrize("venue", ["redeemed_elsewhere", "counted_short_not_redeemable"])
async def test_a_position_of_a_recorded_resolution_is_left_to_the_settlement(harness: Harness, venue: str) -> None:
    running = await _bought(harness)
    assert running.reconciler is not None and running.settler is not None
    # the market resolved while the executor did not apply it yet (its event waits in the stream): recorded only
    _record(harness.db_url, _resolution())
    if venue == "redeemed_elsewhere":  # auto-redeemed outside the engine: the venue lists the token no more
        harness.fake.holdings.resolve(CONDITION, ASSET)
        harness.fake.holdings.positions["w_1"][ASSET] = [D(0), D(0)]
    else:  # the venue's indexer lags the resolution: a short count, not flagged redeemable
        harness.fake.holdings.positions["w_1"][ASSET] = [D(30), D(12)]
    _age(harness.db_url)
    await running.reconciler.reconcile(WALLET)
    assert running.reconciler.stats.corrections == {}
    assert _position(harness.db_url) == ("OPEN", D(100), None, D(0))
    # the settlement sweep settles the winner: $100 paid for $40 of cost
    assert await running.settler.sweep() == 1
    assert _position(harness.db_url) == ("RESOLVED_WON", D(0), D(100), D(60))
    assert rows(harness.db_url, "SELECT exposure_usd, realized_pnl_usd FROM subscription_stats"
                                " WHERE subscription_id = 'sub_1'") == [(D(0), D(60))]
    assert rows(harness.db_url, "SELECT count(*) FROM audit_log WHERE method = 'executor.Reconcile'") == [(0,)]


@pytest.mark.integration
async def test_a_late_winner_whose_shares_an_earlier_redemption_took_is_settled_not_closed(
        harness: Harness, pool: Any) -> None:
    running = await _bought(harness)
    assert running.reconciler is not None and running.settler is not None
    # 50 more YES matched before the resolution (on-chain: the market's redemption takes them with the rest)...
    harness.fake.holdings.terminal_trade("w_1", ASSET, "BUY", D(50), D("0.4"))
    res = _resolution()
    _record(harness.db_url, res)
    harness.fake.holdings.resolve(CONDITION, ASSET)
    await harness.resolutions.append(res.SerializeToString())
    await eventually(lambda: rows(harness.db_url, "SELECT state, payout_usd FROM redemptions") == [
        ("CONFIRMED", D(150))], timeout_s=20)
    assert redemption_key("w_1", CONDITION) in harness.fake.holdings.by_key
    # ... but their fill is booked only now, after the settlement: a new life of the token, open
    late = Ticket(make_order(2, follower_wallet_id="w_1", subscription_id="sub_1", follower_proxy=WALLET.wallet),
                  INSIDERS, None, time.time_ns())
    async with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
        await fill_store.book(cur, [(late, Booking("fill_late", D(50), D("0.40"), D(20), D(0), True,
                                                   time.time_ns() // 1_000_000))])
    assert _position(harness.db_url) == ("OPEN", D(50), None, D(0))
    _age(harness.db_url)
    # the venue holds none of the token any more (the redemption took them): reconciliation leaves the life alone
    await running.reconciler.reconcile(WALLET)
    assert running.reconciler.stats.corrections == {}
    assert _position(harness.db_url) == ("OPEN", D(50), None, D(0))
    # and the sweep settles it as the winner it is: $50 for its $20
    assert await running.settler.sweep() == 1
    assert _position(harness.db_url) == ("RESOLVED_WON", D(0), D(50), D(30))
