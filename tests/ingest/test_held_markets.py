"""The safety net's schedule follows the markets held: one index probe per condition id stored, the same set as a
pass over every open position; an id of the venue's form in another case is the market's in lower case, and a
token held under no market id is checked by the market ingest cached for it (real PostgreSQL and Redis)."""

from __future__ import annotations

import random
from decimal import Decimal as D
from typing import Any, cast

import psycopg
import pytest

from common.marketstate import MarketInfo, market_key, write_market
from common.storage import create_pool
from services.ingest.marketchecks import _HELD, MarketChecks
from services.ingest.metrics import IngestMetrics

pytestmark = pytest.mark.integration

OK = ["0x" + f"{i:064x}" for i in range(6)]
BAD = ["", "abc", "0x" + "g" * 64, "0x" + "1" * 63]  # name no market
UPPER = "0x" + "A" * 64  # a market's id in upper case (booked before intake lower-cased them)

# the condition ids held, as a pass over every open position finds them
_BY_SCAN = "SELECT DISTINCT condition_id FROM positions WHERE state = 'OPEN' AND size > 0"


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
    assert _held(db_url, _HELD) == sorted([OK[0], OK[3], OK[4], *BAD])
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
    markets = [*OK, *BAD, UPPER]
    _seed(db_url, [(rng.choice(markets), rng.choice(["OPEN", "OPEN", "OPEN", "CLOSED"]), rng.choice([0, 0, 1, 20]))
                   for _ in range(rng.randint(0, 60))])
    assert _held(db_url, _HELD) == _held(db_url, _BY_SCAN)


async def _sync(db_url: str, redis: Any = None, metrics: IngestMetrics | None = None) -> list[str]:
    """The markets on the schedule after one sync of the markets held."""
    pool = await create_pool(db_url, min_size=1, max_size=1, autocommit=True)
    try:
        await MarketChecks(pool, cast(Any, None), cast(Any, None), redis, cast(Any, metrics),
                           clock=lambda: 1e9).sync_held()
    finally:
        await pool.close()
    return _held(db_url, "SELECT condition_id FROM market_checks")


async def test_a_market_held_under_its_id_in_another_case_is_checked_by_its_id(db_url: str) -> None:
    """Positions booked before intake lower-cased condition ids kept the trading terminal's case: their market was
    never checked on REST, so a missed socket resolution left them OPEN for ever."""
    _seed(db_url, [(UPPER, "OPEN", 5), ("0X" + "a" * 64, "OPEN", 1), (OK[0], "OPEN", 2)])
    assert await _sync(db_url) == sorted([OK[0], UPPER.lower()])
    assert await _sync(db_url) == sorted([OK[0], UPPER.lower()])  # held: kept


def _cached(asset_id: str, condition_id: str) -> MarketInfo:
    return MarketInfo(asset_id, condition_id, D("0.01"), D("5"))


async def test_a_token_held_under_no_market_id_is_checked_by_the_market_cached_for_it(db_url: str, r: Any) -> None:
    """A position with no condition id (an EXTERNAL one whose venue id was not trusted) or one of another form names
    no market: the token's market as ingest cached it (tt:market) is checked, one Redis round trip for them all."""
    _seed(db_url, [("", "OPEN", 3), ("abc", "OPEN", 1), ("", "OPEN", 2), ("", "OPEN", 0), (OK[0], "OPEN", 1)])
    await write_market(r, _cached("a_0", OK[1]))
    await write_market(r, _cached("a_1", OK[2].upper().replace("0X", "0x")))
    await write_market(r, _cached("a_3", OK[3]))  # held no longer (no shares)
    # a_2's market is not cached yet: looked up again at the next sync
    metrics = IngestMetrics()
    assert await _sync(db_url, r, metrics) == [OK[0], OK[1], OK[2]]
    assert (metrics.count("held_tokens", "FOUND"), metrics.count("held_tokens", "NO_MARKET_INFO")) == (2, 1)
    await write_market(r, _cached("a_2", OK[4]))
    assert await _sync(db_url, r, metrics) == [OK[0], OK[1], OK[2], OK[4]]
    with psycopg.connect(db_url, autocommit=True) as conn:  # a_0 sold: its market is held no longer
        conn.execute("UPDATE positions SET state = 'CLOSED', size = 0 WHERE asset_id = 'a_0'")
    assert await _sync(db_url, r, metrics) == [OK[0], OK[2], OK[4]]


class _Down:
    """A Redis that does not answer."""

    def pipeline(self, **_kw: Any) -> Any:
        raise ConnectionError("redis down")


async def test_while_the_tokens_markets_cannot_be_read_nothing_is_dropped(db_url: str, r: Any) -> None:
    _seed(db_url, [("", "OPEN", 3), (OK[0], "OPEN", 1)])
    await write_market(r, _cached("a_0", OK[1]))
    assert await _sync(db_url, r, IngestMetrics()) == [OK[0], OK[1]]
    metrics = IngestMetrics()
    assert await _sync(db_url, _Down(), metrics) == [OK[0], OK[1]]  # a_0's market kept, checked as scheduled
    assert metrics.count("held_tokens", "FAILED") == 1


async def test_a_token_whose_market_is_unknown_drops_no_market_from_the_schedule(db_url: str, r: Any) -> None:
    """Any market on the schedule may be the one of a token held under no id whose market is not cached (the
    executor deletes ``tt:market:{asset}`` when an order answers MARKET_CLOSED; ingest fetches a market's info
    once per process): nothing is dropped until every such token's market is known again."""
    _seed(db_url, [("", "OPEN", 3), (OK[0], "OPEN", 1)])  # w_0 holds a_0 under no market id
    with psycopg.connect(db_url, autocommit=True) as conn:  # a market held no longer (or a_0's: who knows)
        conn.execute("INSERT INTO market_checks (condition_id, next_check_at) VALUES (%s, now())", (OK[5],))
    metrics = IngestMetrics()
    assert await _sync(db_url, r, metrics) == [OK[0], OK[5]]
    assert metrics.count("held_tokens", "NO_MARKET_INFO") == 1
    await write_market(r, _cached("a_0", OK[1]))
    assert await _sync(db_url, r, metrics) == [OK[0], OK[1]]  # known: OK[5] is held no longer


async def test_a_market_found_for_a_token_stays_known_when_its_cache_entry_goes(db_url: str, r: Any) -> None:
    """The market found for a token held under no id is kept in memory: once its cache entry is deleted (a
    MARKET_CLOSED answer), the market is still scheduled, and the markets held no longer are still dropped."""
    _seed(db_url, [("", "OPEN", 3), (OK[0], "OPEN", 1)])
    await write_market(r, _cached("a_0", OK[1]))
    pool = await create_pool(db_url, min_size=1, max_size=1, autocommit=True)
    try:
        checks = MarketChecks(pool, cast(Any, None), cast(Any, None), r, cast(Any, IngestMetrics()),
                              clock=lambda: 1e9)
        await checks.sync_held()
        assert _held(db_url, "SELECT condition_id FROM market_checks") == [OK[0], OK[1]]
        await r.delete(market_key("a_0"))
        with psycopg.connect(db_url, autocommit=True) as conn:  # a_1 sold: its market is held no longer
            conn.execute("UPDATE positions SET state = 'CLOSED', size = 0 WHERE asset_id = 'a_1'")
        await checks.sync_held()
        assert _held(db_url, "SELECT condition_id FROM market_checks") == [OK[1]]
        await checks.sync_held()
        assert _held(db_url, "SELECT condition_id FROM market_checks") == [OK[1]]
    finally:
        await pool.close()
