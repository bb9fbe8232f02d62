"""The safety net's schedule follows the markets held: one index probe per market, the same set as a pass over
every open position (real PostgreSQL)."""

from __future__ import annotations

import random
from typing import Any, cast

import psycopg
import pytest

from common.storage import create_pool
from services.ingest.marketchecks import _HELD, MarketChecks

pytestmark = pytest.mark.integration

OK = ["0x" + f"{i:064x}" for i in range(6)]
BAD = ["", "abc", "0x" + "A" * 64, "0x" + "1" * 63]

# the markets held, as a pass over every open position finds them
_BY_SCAN = """
SELECT DISTINCT condition_id FROM positions
 WHERE state = 'OPEN' AND size > 0 AND condition_id ~ '^0x[0-9a-f]{64}$'
"""


def _seed(db_url: str, rows: list[tuple[str, str, int]], resolved: tuple[str, ...] = ()) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        for i, (condition_id, state, size) in enumerate(rows):
            conn.execute(
                "INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price, cost_usd,"
                " state) VALUES (%s, %s, %s, %s, %s, 0.5, 1, %s)",
                (f"w_{i}", f"a_{i}", condition_id, "0x" + "1" * 40, size, state))
        for condition_id in resolved:
            conn.execute("INSERT INTO market_resolutions (condition_id, asset_ids, winning_asset_id, source,"
                         " received_at, payload) VALUES (%s, '{a,b}', 'a', 'CLOB_REST', now(), '')", (condition_id,))


def _held(db_url: str, sql: str) -> list[str]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        return sorted(r[0] for r in conn.execute(sql))


async def test_sync_schedules_the_markets_held_and_drops_the_rest(db_url: str) -> None:
    _seed(db_url, [
        (OK[0], "OPEN", 10), (OK[0], "OPEN", 0), (OK[0], "OPEN", 5),  # held by two of three wallets
        (OK[1], "OPEN", 0), (OK[1], "OPEN", 0),                       # open, no shares
        (OK[2], "CLOSED", 7),                                         # not open
        (OK[3], "OPEN", 1),                                           # resolved already: nothing to check
        (OK[4], "OPEN", 0), (OK[4], "OPEN", 0), (OK[4], "OPEN", 2),    # held behind two empty ones
        *((bad, "OPEN", 3) for bad in BAD),                           # not a condition id
    ], resolved=(OK[3],))
    assert _held(db_url, _HELD) == [OK[0], OK[3], OK[4]]
    pool = await create_pool(db_url, min_size=1, max_size=1, autocommit=True)
    try:
        checks = MarketChecks(pool, cast(Any, None), cast(Any, None), None, cast(Any, None), clock=lambda: 1e9)
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("INSERT INTO market_checks (condition_id, next_check_at) VALUES (%s, now())", (OK[5],))
        await checks.sync_held()
        assert _held(db_url, "SELECT condition_id FROM market_checks") == [OK[0], OK[4]]  # OK[5] no longer held
    finally:
        await pool.close()


@pytest.mark.parametrize("seed", range(8))
def test_the_index_walk_finds_what_a_scan_finds(db_url: str, seed: int) -> None:
    rng = random.Random(seed)
    markets = OK + BAD
    _seed(db_url, [(rng.choice(markets), rng.choice(["OPEN", "OPEN", "OPEN", "CLOSED"]), rng.choice([0, 0, 1, 20]))
                   for _ in range(rng.randint(0, 60))])
    assert _held(db_url, _HELD) == _held(db_url, _BY_SCAN)
