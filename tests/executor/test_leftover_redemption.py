"""Winning shares left redeemable at the venue after a market's redemption ran get another round, on the real
executor and the Insiders fake: found by reconciliation, sent under the round's own key, confirmed once."""

from __future__ import annotations

import time
from decimal import Decimal as D

import pytest

from services.executor.adapters.reconcile_store import LiveWallet
from services.executor.app import Running
from services.executor.domain.leftovers import round_key
from services.executor.domain.settlement import redemption_key
from tests.executor.conftest import ASSET, CONDITION, TERMINAL_TYPES, Harness, make_order, rows
from tests.helpers import eventually
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.market.v1 import market_pb2 as mpb

pytestmark = pytest.mark.integration

NO = "2" * 77
WALLET = LiveWallet("w_1", "0x" + "1" * 40)
GRACE = "TT_TUNE_EXECUTOR_LEFTOVER_REDEEM_GRACE_S"


def _resolution() -> mpb.MarketResolution:
    return mpb.MarketResolution(condition_id=CONDITION, asset_ids=[ASSET, NO], winning_asset_id=ASSET,
                                source=mpb.RESOLUTION_SOURCE_CLOB_SOCKET, received_time_ns=time.time_ns())


def _redemptions(db_url: str) -> list[tuple[object, ...]]:
    return rows(db_url, "SELECT round, redemption_key, state, shares, payout_usd FROM redemptions")


async def _redeemed_once(harness: Harness, **env: str) -> Running:
    """w_1 bought 100 YES, the market resolved YES (recorded as ingest records it), round 0 confirmed."""
    await harness.set_book(ASSET, [("0.39", "100000")], [("0.40", "100000")])
    harness.fake.holdings.register(CONDITION, [(ASSET, "Yes"), (NO, "No")])
    running = await harness.start_executor(**env)
    order = make_order(1, follower_wallet_id="w_1", subscription_id="sub_1", amount_usd="40",
                       follower_proxy=WALLET.wallet)
    await harness.route(order)

    async def filled() -> bool:
        return any(e.type in TERMINAL_TYPES for e in await harness.events_of(order.client_order_id))

    await eventually(filled, timeout_s=20)  # type: ignore[arg-type]
    res = _resolution()
    rows(harness.db_url, "INSERT INTO market_resolutions (condition_id, asset_ids, winning_asset_id, source,"
                         " received_at, payload) VALUES (%s, %s, %s, 'CLOB_SOCKET', now(), %s) RETURNING 1",
         CONDITION, [ASSET, NO], ASSET, res.SerializeToString())
    harness.fake.holdings.resolve(CONDITION, ASSET)
    await harness.resolutions.append(res.SerializeToString())
    await eventually(lambda: _redemptions(harness.db_url) == [
        (0, redemption_key("w_1", CONDITION), "CONFIRMED", D(100), D(100))], timeout_s=20)
    return running


async def _events(harness: Harness) -> list[tuple[str, int]]:
    return [(e.redemption_key, e.type) for e in (epb.RedemptionEvent.FromString(p) for _, p in
                                                 await harness.redemption_events.read("0-0", block_ms=0))]


async def test_winning_shares_left_after_the_redemption_get_a_round_of_their_own(harness: Harness) -> None:
    running = await _redeemed_once(harness, **{GRACE: "0"})
    assert running.reconciler is not None
    # 50 more YES reach the chain after the redemption ran; 7 losing NO shares are redeemable too (worth nothing)
    harness.fake.holdings.terminal_trade("w_1", ASSET, "BUY", D(50), D("0.4"))
    harness.fake.holdings.terminal_trade("w_1", NO, "BUY", D(7), D("0.6"))
    await eventually(lambda: rows(harness.db_url, "SELECT published_state FROM redemptions") == [("CONFIRMED",)])
    await running.reconciler.reconcile(WALLET)
    key = round_key("w_1", CONDITION, 1)
    await eventually(lambda: _redemptions(harness.db_url) == [(1, key, "CONFIRMED", D(50), D(50))], timeout_s=20)
    assert harness.fake.holdings.taken() == {f"w_1|{CONDITION}": 2}
    assert [r.key for r in harness.fake.holdings.records if r.outcome == "created"] == [
        redemption_key("w_1", CONDITION), key]
    [(before, after)] = rows(harness.db_url, "SELECT before, after FROM audit_log"
                                             " WHERE method = 'executor.RedeemLeftover'")
    assert (before["round"], before["state"], before["payoutUsd"]) == (0, "CONFIRMED", "100")
    assert (after["round"], after["state"], after["shares"]) == (1, "PENDING", "50")

    types = [epb.REDEMPTION_EVENT_TYPE_PENDING, epb.REDEMPTION_EVENT_TYPE_SUBMITTED,
             epb.REDEMPTION_EVENT_TYPE_CONFIRMED]
    want = [(redemption_key("w_1", CONDITION), t) for t in types] + [(key, t) for t in types]

    async def published() -> bool:
        return await _events(harness) == want

    await eventually(published)  # type: ignore[arg-type]
    # the venue holds no winning shares any more: nothing further
    await running.reconciler.reconcile(WALLET)
    assert _redemptions(harness.db_url) == [(1, key, "CONFIRMED", D(50), D(50))]
    assert harness.fake.holdings.taken() == {f"w_1|{CONDITION}": 2}


async def test_shares_seen_right_after_a_confirmed_round_wait_for_the_grace(harness: Harness) -> None:
    running = await _redeemed_once(harness)  # the default grace: 120 s
    assert running.reconciler is not None
    harness.fake.holdings.terminal_trade("w_1", ASSET, "BUY", D(50), D("0.4"))
    await running.reconciler.reconcile(WALLET)
    assert _redemptions(harness.db_url) == [(0, redemption_key("w_1", CONDITION), "CONFIRMED", D(100), D(100))]
    assert harness.fake.holdings.taken() == {f"w_1|{CONDITION}": 1}
