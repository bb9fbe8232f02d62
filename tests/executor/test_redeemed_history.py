"""A confirmed redemption ends REDEEMED every winning life of the wallet in the market, the archived ones too.

A market's redemption redeems every winning share the wallet holds at the venue, so a winning life that a later
fill archived into ``position_history`` (a copy filled just after the resolution opened a new life of the token)
was redeemed with the current one; only ``positions`` was moved to REDEEMED, and the positions routes listed the
archived life RESOLVED_WON, its redemption CONFIRMED, for ever.

(From the review of the position lifecycle.)"""

from __future__ import annotations

import time
from decimal import Decimal as D

import pytest

from common.storage import create_pool
from services.control.position_repo import list_page
from services.executor.adapters import fill_store
from services.executor.adapters.redemption_store import RedemptionStore
from services.executor.adapters.settlement_store import SettlementStore
from services.executor.domain import redemption as rd
from services.executor.domain.fill_math import Booking
from services.executor.domain.settlement import Resolution, redemption_key
from services.executor.domain.ticket import INSIDERS, Ticket
from tests.executor.conftest import ASSET, CONDITION, make_order, rows
from tradingtools.common.v1 import common_pb2 as cpb

pytestmark = pytest.mark.integration

NO = "2" * 77
PROXY = "0x" + "1" * 40
OTHER = "0x" + "e" * 64
OTHER_YES = "7" * 77


def _buy(i: int, asset: str = ASSET, condition_id: str = CONDITION) -> Ticket:
    return Ticket(make_order(i, follower_wallet_id="w_1", follower_proxy=PROXY, subscription_id="sub_A",
                             side=cpb.SIDE_BUY, asset_id=asset, condition_id=condition_id), INSIDERS, None,
                  time.time_ns())


async def test_every_winning_life_of_the_market_is_redeemed_with_the_confirmed_redemption(db_url: str) -> None:
    now_ms = time.time_ns() // 1_000_000
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    try:
        settlement = SettlementStore(pool)
        # w_1 won another market too (its redemption not confirmed yet), and that life was archived as well
        async with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            await fill_store.book(cur, [
                (_buy(1), Booking("fill_1", D(100), D("0.40"), D(40), D(0), True, now_ms)),
                (_buy(2, OTHER_YES, OTHER), Booking("fill_2", D(10), D("0.50"), D(5), D(0), True, now_ms))])
        await settlement.settle(Resolution(CONDITION, (ASSET, NO), ASSET))  # life 1: RESOLVED_WON, 100 shares
        await settlement.settle(Resolution(OTHER, (OTHER_YES, "8" * 77), OTHER_YES))
        # a copy of each token that filled just after its resolution: new lives, the won ones archived
        async with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            await fill_store.book(cur, [
                (_buy(3), Booking("fill_3", D(50), D("0.40"), D(20), D(0), True, now_ms + 1)),
                (_buy(4, OTHER_YES, OTHER), Booking("fill_4", D(10), D("0.50"), D(5), D(0), True, now_ms + 1))])
        await settlement.settle(Resolution(CONDITION, (ASSET, NO), ASSET))  # the sweep: life 2 RESOLVED_WON
        await settlement.settle(Resolution(OTHER, (OTHER_YES, "8" * 77), OTHER_YES))
        assert sorted(rows(db_url, "SELECT condition_id, state FROM position_history")) == [
            (CONDITION, "RESOLVED_WON"), (OTHER, "RESOLVED_WON")]
        # each life keeps what its shares cost when its market resolved (settlement zeroes cost_usd), archived too
        assert sorted(rows(db_url, "SELECT condition_id, resolved_cost_usd, cost_usd FROM position_history")) == [
            (CONDITION, D(40), D(0)), (OTHER, D(5), D(0))]
        assert sorted(rows(db_url, "SELECT condition_id, resolved_cost_usd FROM positions")) == [
            (CONDITION, D(20)), (OTHER, D(5))]
        [(archived,)] = rows(db_url, "SELECT id FROM position_history WHERE condition_id = %s", CONDITION)
        # the market's redemption runs (the venue redeems every winning share the wallet holds: 150) and confirms
        store = RedemptionStore(pool)
        row = await store.get(redemption_key("w_1", CONDITION))
        assert row is not None
        after = rd.apply(rd.apply(row.redemption, rd.RedeemSent(now_ms)),
                         rd.RedeemAnswered("rd_1", "confirmed", "0x" + "ab" * 32, D(150)))
        redeemed = await store.save_many([(row, after)], "executor.Redeem")
        async with pool.connection() as conn:
            listed = await list_page(conn, wallet=PROXY, state="", after=None, limit=10)
    finally:
        await pool.close()
    [(current,)] = rows(db_url, "SELECT id FROM positions WHERE asset_id = %s", ASSET)
    assert sorted(redeemed[row.redemption.key]) == sorted([current, archived])
    assert sorted(rows(db_url, "SELECT condition_id, state FROM position_history")) == [
        (CONDITION, "REDEEMED"), (OTHER, "RESOLVED_WON")]
    # the audit row of the confirmation names both lives
    [(audited,)] = rows(db_url, "SELECT after->'positions' FROM audit_log WHERE method = 'executor.Redeem'"
                                " AND entity_type = 'redemption'")
    assert sorted(audited) == sorted([current, archived])
    # GET /positions: both lives of the market REDEEMED with their CONFIRMED redemption; the other market's untouched
    assert sorted((r["condition_id"], r["state"], r["redemption_state"]) for r in listed) == [
        (CONDITION, "REDEEMED", "CONFIRMED"), (CONDITION, "REDEEMED", "CONFIRMED"),
        (OTHER, "RESOLVED_WON", "PENDING"), (OTHER, "RESOLVED_WON", "PENDING")]
