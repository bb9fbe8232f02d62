"""The batch read takes each follower's positions held, by key: a wallet keeps every life it ended (closed, resolved,
redeemed) in ``positions``, and reading all of them for each follower of each trade made the routing of a leader's
trade grow with its followers' history. Only a BUY batch with a daily loss limit reads the ended ones too (the day's
realized PnL of the positions booked today: pnl_day may not be indexed)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest
from psycopg.rows import dict_row

from services.router.adapters.store_sql import LOAD, PLANNER_OPTIONS
from tests.helpers import ENDED_STATE_SQL, rows_read
from tests.router.load_plans import explain_load, load_params

pytestmark = pytest.mark.integration

WALLETS, ENDED = 50, 60  # each wallet: 2 positions held, 1 ended today, ENDED ended before
TODAY = datetime.now(UTC).date()


def _seed(db_url: str) -> None:
    columns = ("(follower_wallet_id, asset_id, condition_id, wallet, size, cost_usd, state, pnl_day,"
               " pnl_day_realized_usd)")
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f"INSERT INTO positions {columns} SELECT 'w_' || g, 'held_' || g || '_' || k, 'c_held', '0xa',"
                     " 10, 4, 'OPEN', %s, 0 FROM generate_series(1, %s) g, generate_series(1, 2) k",
                     (TODAY - timedelta(days=3), WALLETS))
        conn.execute(f"INSERT INTO positions {columns} SELECT 'w_' || g, 'today_' || g, 'c_today', '0xa', 0, 0,"
                     " 'CLOSED', %s, -2.5 FROM generate_series(1, %s) g", (TODAY, WALLETS))
        conn.execute(f"INSERT INTO positions {columns} SELECT 'w_' || g, 'ended_' || g || '_' || k, 'c_' || k, '0xa',"
                     " 0, 0, " + ENDED_STATE_SQL.format(n="k") + ", %s, -1"
                     " FROM generate_series(1, %s) g, generate_series(1, %s) k",
                     (TODAY - timedelta(days=10), WALLETS, ENDED))
        conn.execute("ANALYZE positions")


def _day_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize("generic", [True, False], ids=["generic plan", "custom plan"])
async def test_a_followers_ended_positions_are_not_read(db_url: str, generic: bool) -> None:
    _seed(db_url)
    params = await load_params(wallets=[f"w_{g}" for g in range(1, WALLETS + 1)], markets=["c_held"],
                               assets=["held_1_1"], sell_assets=["held_1_1"], pnl_day_ms=None)
    assert params["want_pnl"] is False  # no BUY of the batch has a daily loss limit to check
    plan = explain_load(db_url, params, PLANNER_OPTIONS, generic=generic)
    read = rows_read(plan, "positions")
    # the 2 positions a wallet holds are wanted (and the lost SELLs' lookup may probe one); ENDED + 1 more lie there
    assert 0 < read <= 3 * WALLETS, f"{read} positions read for {WALLETS} wallets"


async def test_the_read_still_sums_what_is_held_and_the_days_pnl(db_url: str) -> None:
    _seed(db_url)
    params = await load_params(wallets=["w_1"], markets=["c_held"], assets=["held_1_1"], sell_assets=[],
                               pnl_day_ms=_day_ms(TODAY))
    with psycopg.connect(db_url, autocommit=True, options=PLANNER_OPTIONS, row_factory=dict_row) as conn:
        row = conn.execute(LOAD, params).fetchone()
    assert row is not None
    [[wallet, total_cost, markets, in_markets, sizes, realized, _opened]] = json.loads(row["wallets"])
    assert (wallet, Decimal(total_cost), sorted(markets.split(","))) == ("w_1", Decimal(8), ["c_held", "c_held"])
    assert in_markets == [["c_held", "4"], ["c_held", "4"]] and sizes == [["held_1_1", "10"]]
    assert Decimal(realized) == Decimal("-2.5")  # the position ended today counts; those ended before do not
