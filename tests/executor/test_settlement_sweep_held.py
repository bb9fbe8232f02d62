"""A market whose open positions are all held back by a LOST SELL that may have sold (``common.lost_sells.awaited``,
up to its 15-minute window) waits out of the settlement sweep: the sweep took it again every 30 s, ran its settle
transaction (two statements) to find it still waits, logged it and counted its positions as held back again, and up
to 100 of them, resolved first, filled the sweep's batch, so that a market resolved after them was not settled until
their holds ended. Once a hold ends (the window, a count of the venue, the wallet's redemption), the sweep settles the
market (real PostgreSQL)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from common.storage import create_pool
from services.executor.adapters.order_store import PLANNER_OPTIONS
from services.executor.adapters.settlement_store import SettlementResult, SettlementStore
from services.executor.domain.settlement import Resolution
from services.executor.settling import Settler
from tests.executor.conftest import rows
from tests.executor.test_settlement_sweep_lookup import _open, cid, res, tok

pytestmark = pytest.mark.integration

Pool = AsyncConnectionPool[Any]
LATER = 9000  # a market resolved after the held-back ones, with a position to settle


def _held_markets(db_url: str, first: int, count: int) -> None:
    """Markets ``first`` .. ``first + count - 1``, resolved 1,000 s ago and after (in that order), each with one open
    position (wallet ``w_<i>``, 10 shares of its first token, opened 120 s ago) whose LIVE SELL of 6 ended LOST 30 s
    ago, never compared with a count of the venue."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        args = (first, first + count - 1)
        conn.execute("INSERT INTO market_resolutions (condition_id, asset_ids, winning_asset_id, source, received_at,"
                     " payload) SELECT '0x' || lpad(to_hex(g), 64, '0'), ARRAY['1' || lpad(g::text, 76, '0'),"
                     " '2' || lpad(g::text, 76, '0')], '1' || lpad(g::text, 76, '0'), 'CLOB_SOCKET',"
                     " now() - make_interval(secs => 1000 - g), '' FROM generate_series(%s::int, %s::int) g", args)
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price,"
                     " cost_usd, id, state, opened_at) SELECT 'w_' || g, '1' || lpad(g::text, 76, '0'),"
                     " '0x' || lpad(to_hex(g), 64, '0'), '0xa', 10, 0.4, 4, 'pos_' || g, 'OPEN',"
                     " now() - interval '120 s' FROM generate_series(%s::int, %s::int) g", args)
        conn.execute("INSERT INTO orders (client_order_id, state, venue, origin, follower_wallet_id, asset_id, side,"
                     " order_type, size, order_proto, created_at, terminal_at) SELECT 'lost_' || g, 'LOST',"
                     " 'INSIDERS', 'TRIGGER', 'w_' || g, '1' || lpad(g::text, 76, '0'), 'SELL', 'FAK', 6, '',"
                     " now() - interval '60 s', now() - interval '30 s' FROM generate_series(%s::int, %s::int) g",
                     args)


def _later_market(db_url: str) -> None:
    r = res(LATER)
    rows(db_url, "INSERT INTO market_resolutions (condition_id, asset_ids, winning_asset_id, source, received_at,"
                 " payload) VALUES (%s, %s, %s, 'CLOB_SOCKET', now(), '') RETURNING 1",
         r.condition_id, list(r.asset_ids), r.winning_asset_id)
    _open(db_url, "w_later", tok(LATER, 2), condition_id=cid(LATER))


def _states(db_url: str) -> dict[str, str]:
    return dict(rows(db_url, "SELECT follower_wallet_id, state FROM positions"))


class CountingStore(SettlementStore):
    """The settlement store, counting the markets it settles (each a transaction)."""

    def __init__(self, pool: Pool) -> None:
        super().__init__(pool)
        self.settled: list[str] = []

    async def settle(self, resolution: Resolution) -> SettlementResult:
        self.settled.append(resolution.condition_id)
        return await super().settle(resolution)


async def _pool(db_url: str) -> Pool:
    return await create_pool(db_url, min_size=1, max_size=2, autocommit=True, options=PLANNER_OPTIONS)


async def test_markets_held_back_by_lost_sells_do_not_keep_a_later_market_out_of_the_sweep(db_url: str) -> None:
    _held_markets(db_url, 1, 101)
    _later_market(db_url)
    pool = await _pool(db_url)
    try:
        settler = Settler(SettlementStore(pool))
        assert await settler.sweep() == 1
        assert _states(db_url)["w_later"] == "RESOLVED_LOST"
        assert {s for w, s in _states(db_url).items() if w != "w_later"} == {"OPEN"}  # never on the booked shares
    finally:
        await pool.close()


async def test_a_sweep_leaves_the_held_back_markets_alone_until_their_holds_end(db_url: str) -> None:
    """Three markets, each held back when its resolution came (counted once): the sweeps after it do no settlement
    of them and count none of their positions again."""
    _held_markets(db_url, 1, 3)
    pool = await _pool(db_url)
    try:
        store = CountingStore(pool)
        settler = Settler(store)
        for i in (1, 2, 3):
            assert len((await settler.settle(res(i))).held) == 1
        assert settler.stats.held == 3
        store.settled.clear()
        for _ in range(3):
            assert await settler.sweep() == 0
        assert store.settled == []
        assert settler.stats.held == 3
        assert set(_states(db_url).values()) == {"OPEN"}
    finally:
        await pool.close()


def _window_passed(db_url: str) -> None:
    """The LOST SELL ended 16 minutes ago (the position opened before it): past its window."""
    rows(db_url, "UPDATE positions SET opened_at = now() - interval '1 hour' WHERE follower_wallet_id = 'w_1'"
                 " RETURNING 1")
    rows(db_url, "UPDATE orders SET terminal_at = now() - interval '16 minutes' WHERE client_order_id = 'lost_1'"
                 " RETURNING 1")
    rows(db_url, "UPDATE lost_sells SET terminal_at = now() - interval '16 minutes' WHERE client_order_id = 'lost_1'"
                 " RETURNING 1")


def _counted(db_url: str) -> None:
    """Reconciliation compared the position with a count the venue took now (10 shares: the SELL sold none)."""
    rows(db_url, "UPDATE positions SET reconciled_at = now(), venue_shares = 10 WHERE follower_wallet_id = 'w_1'"
                 " RETURNING 1")


def _redeemed(db_url: str) -> None:
    """The wallet's redemption of the market is recorded (its count may lack what it took: waiting is no use)."""
    rows(db_url, "INSERT INTO redemptions (follower_wallet_id, condition_id, wallet, redemption_key, state, shares)"
                 " VALUES ('w_1', %s, '0xa', 'rk_1', 'PENDING', 10) RETURNING 1", cid(1))


@pytest.mark.parametrize("end", [_window_passed, _counted, _redeemed], ids=["window", "count", "redemption"])
async def test_a_held_back_market_is_swept_once_its_hold_ends(db_url: str, end: Any) -> None:
    _held_markets(db_url, 1, 2)
    pool = await _pool(db_url)
    try:
        store = CountingStore(pool)
        settler = Settler(store)
        await settler.sweep()
        assert set(_states(db_url).values()) == {"OPEN"}
        end(db_url)
        store.settled.clear()
        assert await settler.sweep() == 1
        assert cid(1) in store.settled
        assert _states(db_url) == {"w_1": "RESOLVED_WON", "w_2": "OPEN"}
    finally:
        await pool.close()
