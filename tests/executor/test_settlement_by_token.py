"""A resolution settles the positions of its market's tokens, whatever condition id a position was booked with.

A manual order's condition id came in as the trading terminal sent it (not checked, not lower-cased) and the
position kept it; settlement matched positions by that stored id, so a position booked with the id in upper case
was never settled by its own market (OPEN for ever, its cost held against the caps) and one booked with another
market's id was ended by that other market's resolution. Token ids are unique per outcome: settlement now matches
by token, and stamps the market's condition id on what it settles (the redemption and the positions routes read
it).

(From the review of the position lifecycle.)"""

from __future__ import annotations

import time
from decimal import Decimal as D
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from common.storage import MIGRATIONS_DIR
from services.executor.adapters import fill_store
from services.executor.adapters.redemption_store import RedemptionStore
from services.executor.adapters.settlement_store import SettlementStore
from services.executor.domain import redemption as rd
from services.executor.domain.fill_math import Booking
from services.executor.domain.settlement import Resolution, redemption_key
from services.executor.domain.ticket import INSIDERS, Ticket
from services.executor.settling import Settler
from tests.executor.conftest import ASSET, CONDITION, make_order, rows
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration

NO = "2" * 77
OTHER = "0x" + "d" * 64  # another market, with tokens of its own
OTHER_YES, OTHER_NO = "7" * 77, "8" * 77
Pool = AsyncConnectionPool[Any]


async def _bought_by_hand(pool: Pool, condition_id: str, i: int = 1) -> None:
    """w_<i> bought 100 of ASSET for $40 by hand (SubmitOrder), the order naming ``condition_id``."""
    order = make_order(i, follower_wallet_id=f"w_{i}", follower_proxy="0x" + str(i) * 40, subscription_id="",
                       origin=epb.ORDER_ORIGIN_MANUAL, side=cpb.SIDE_BUY, leader_trade_id="",
                       condition_id=condition_id)
    async with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
        await fill_store.book(cur, [(Ticket(order, INSIDERS, None, time.time_ns()),
                                     Booking(f"fill_{i}", D(100), D("0.40"), D(40), D(0), True,
                                             time.time_ns() // 1_000_000))])


def _record(db_url: str, res: Resolution) -> None:
    """Ingest's record of a resolution (what the settlement sweep reads)."""
    rows(db_url, "INSERT INTO market_resolutions (condition_id, asset_ids, winning_asset_id, source, received_at,"
                 " payload) VALUES (%s, %s, %s, 'CLOB_SOCKET', now(), '') RETURNING 1",
         res.condition_id, list(res.asset_ids), res.winning_asset_id)


async def test_a_position_booked_with_its_condition_id_in_upper_case_is_settled_and_redeemed(
        pool: Pool, db_url: str) -> None:
    await _bought_by_hand(pool, CONDITION.upper().replace("0X", "0x"))
    res = Resolution(CONDITION, (ASSET, NO), ASSET)
    _record(db_url, res)
    settled = await SettlementStore(pool).settle(res)
    assert [s.state for s in settled.settled] == ["RESOLVED_WON"]
    # the market's own condition id from now on: its redemption, and the routes' join with it, find the position
    assert rows(db_url, "SELECT state, size, condition_id FROM positions") == [("RESOLVED_WON", D(0), CONDITION)]
    assert await SettlementStore(pool).resolutions_with_open_positions() == []
    store = RedemptionStore(pool)
    row = await store.get(redemption_key("w_1", CONDITION))
    assert row is not None and row.shares == D(100)
    after = rd.apply(rd.apply(row.redemption, rd.RedeemSent(0)),
                     rd.RedeemAnswered("rd_1", "confirmed", "0x" + "ab" * 32, D(100)))
    await store.save_many([(row, after)], "executor.Redeem")
    assert rows(db_url, "SELECT state FROM positions") == [("REDEEMED",)]


async def test_a_position_is_left_alone_by_another_markets_resolution_and_settled_by_its_tokens(
        pool: Pool, db_url: str) -> None:
    await _bought_by_hand(pool, OTHER)  # the order named a market ASSET is no token of
    store = SettlementStore(pool)
    other = Resolution(OTHER, (OTHER_YES, OTHER_NO), OTHER_YES)
    _record(db_url, other)
    assert (await store.settle(other)).settled == []
    assert await store.resolutions_with_open_positions() == []
    assert rows(db_url, "SELECT state, size FROM positions") == [("OPEN", D(100))]
    own = Resolution(CONDITION, (ASSET, NO), NO)
    _record(db_url, own)
    assert [s.state for s in (await store.settle(own)).settled] == ["RESOLVED_LOST"]
    assert rows(db_url, "SELECT state, size, cost_usd, condition_id FROM positions") == [
        ("RESOLVED_LOST", D(0), D(0), CONDITION)]


async def test_the_sweep_settles_a_late_position_whatever_condition_id_it_was_booked_with(
        pool: Pool, db_url: str) -> None:
    settler = Settler(SettlementStore(pool))
    res = Resolution(CONDITION, (ASSET, NO), NO)
    _record(db_url, res)
    await settler.settle(res)  # nothing held yet
    await _bought_by_hand(pool, "0x" + "C" * 64)  # a fill booked after the resolution was applied
    await _bought_by_hand(pool, "", i=2)  # and another wallet's order with no condition id at all
    assert await SettlementStore(pool).resolutions_with_open_positions() == [res]
    assert await settler.sweep() == 2
    assert rows(db_url, "SELECT state, condition_id FROM positions") == [("RESOLVED_LOST", CONDITION)] * 2


MIGRATION = MIGRATIONS_DIR / "0720_condition_ids_lower_case.sql"
_HISTORY = ("INSERT INTO position_history (id, follower_wallet_id, asset_id, condition_id, wallet, state, origin,"
            " venue, size, avg_price, cost_usd, realized_pnl_usd, opened_at, updated_at)"
            " VALUES (%s, 'w_1', %s, %s, '0x1', 'CLOSED', 'MANUAL', 'INSIDERS', 0, 0.4, 0, 0, now(), now())")


async def test_the_migration_lower_cases_stored_condition_ids_of_the_venues_form_and_nothing_else(
        pool: Pool, db_url: str) -> None:
    """Positions booked before intake lower-cased condition ids kept the trading terminal's case: their market was
    matched by nothing keyed on its id (ingest's safety net, the Position route's joins)."""
    stored = {1: CONDITION.upper().replace("0X", "0x"), 2: "0X" + "Cc" * 32, 3: CONDITION, 4: "", 5: "0xABC",
              6: "not an id", 7: "0x" + "G" * 64}
    for i, cid in stored.items():
        await _bought_by_hand(pool, cid, i=i)  # booked as the order named it (intake passed it through then)
        rows(db_url, _HISTORY + " RETURNING 1", f"pos_h{i}", ASSET, cid)
    versions = ("SELECT follower_wallet_id, xmin::text FROM positions"
                " UNION ALL SELECT id, xmin::text FROM position_history")
    before = dict(rows(db_url, versions))
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(MIGRATION.read_text().encode())
    want = {**stored, 1: CONDITION, 2: CONDITION}
    assert dict(rows(db_url, "SELECT follower_wallet_id, condition_id FROM positions")) == {
        f"w_{i}": cid for i, cid in want.items()}
    assert dict(rows(db_url, "SELECT id, condition_id FROM position_history")) == {
        f"pos_h{i}": cid for i, cid in want.items()}
    after = dict(rows(db_url, versions))
    assert {k for k in before if after[k] != before[k]} == {"w_1", "w_2", "pos_h1", "pos_h2"}  # no other row written
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(MIGRATION.read_text().encode())  # again: nothing to change, nothing written
    assert dict(rows(db_url, versions)) == after
