"""The settlement sweeps go from the open positions to ``resolved_assets`` (migration 0740: one row per token of each
recorded resolution, kept by a trigger on ``market_resolutions``), so their cost follows the open positions, not
the resolutions ever recorded (one row per market ingest saw resolve: it only grows). They walked every resolution
and probed the open positions for each, twice every 30 s."""

from __future__ import annotations

import os
import shutil
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from common.storage import MIGRATIONS_DIR, apply_migrations, create_pool, migration_files
from services.executor.adapters import reconcile_store, settlement_store
from services.executor.adapters.order_store import PLANNER_OPTIONS
from services.executor.adapters.settlement_store import RestingOrder, SettlementStore
from services.executor.domain.settlement import Resolution
from services.executor.settling import Settler
from services.ingest import resolutions as ingest_resolutions
from tests.executor.conftest import rows
from tests.executor.test_plans import _resolved_markets
from tests.helpers import plan_nodes, template_database

pytestmark = pytest.mark.integration

Pool = AsyncConnectionPool[Any]
MIGRATION = MIGRATIONS_DIR / "0740_resolved_assets.sql"
VENUES = ["INSIDERS", "PAPER"]


def cid(i: int) -> str:
    """Market ``i``'s condition id (lower-case, as ingest records it)."""
    return "0x" + f"{i:064x}"


def tok(i: int, outcome: int) -> str:
    """A token of market ``i``: a decimal string, as the venue's token ids are."""
    return f"{outcome}{i:076d}"


def res(i: int, winner: int = 0) -> Resolution:
    return Resolution(cid(i), (tok(i, 1), tok(i, 2)), tok(i, 1 + winner))


def _record(db_url: str, r: Resolution) -> None:
    """Ingest's record of a resolution."""
    rows(db_url, "INSERT INTO market_resolutions (condition_id, asset_ids, winning_asset_id, source, received_at,"
                 " payload) VALUES (%s, %s, %s, 'CLOB_SOCKET', now(), '') RETURNING 1",
         r.condition_id, list(r.asset_ids), r.winning_asset_id)


def _recorded_in_bulk(db_url: str, first: int, count: int, holders: int = 2) -> None:
    """Markets ``first`` .. ``first + count - 1`` resolved, each token held by ``holders`` wallets whose positions
    ended with it."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO market_resolutions (condition_id, asset_ids, winning_asset_id, source, received_at,"
                     " payload) SELECT '0x' || lpad(to_hex(g), 64, '0'), ARRAY['1' || lpad(g::text, 76, '0'),"
                     " '2' || lpad(g::text, 76, '0')], '1' || lpad(g::text, 76, '0'), 'CLOB_SOCKET',"
                     " now() - interval '1 year', '' FROM generate_series(%s::int, %s::int) g",
                     (first, first + count - 1))
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, id, state)"
                     " SELECT 'w_' || h, t || lpad(g::text, 76, '0'), '0x' || lpad(to_hex(g), 64, '0'), '0xa', 0,"
                     " 'pos_' || g || '_' || t || '_' || h, CASE WHEN t = '1' THEN 'REDEEMED' ELSE 'RESOLVED_LOST' END"
                     " FROM generate_series(%s::int, %s::int) g, unnest(ARRAY['1', '2']) t,"
                     " generate_series(1, %s::int) h", (first, first + count - 1, holders))


def _open(db_url: str, wallet: str, asset: str, size: str = "10", condition_id: str = "") -> None:
    rows(db_url, "INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price, cost_usd,"
                 " id, state) VALUES (%s, %s, %s, '0xa', %s, 0.4, %s * 0.4, 'pos_' || %s || %s, 'OPEN') RETURNING 1",
         wallet, asset, condition_id, D(size), D(size), wallet, asset)


def _order(db_url: str, coid: str, wallet: str, asset: str, state: str = "PLACED", venue_order_id: str = "") -> None:
    """An order of the wallet's token, not ended (open in order_pending)."""
    rows(db_url, "INSERT INTO orders (client_order_id, state, venue, origin, follower_wallet_id, asset_id, side,"
                 " order_type, venue_order_id, order_proto) VALUES (%s, %s, 'INSIDERS', 'TRIGGER', %s, %s, 'SELL',"
                 " 'GTC', %s, '') RETURNING 1", coid, state, wallet, asset, venue_order_id)
    rows(db_url, "INSERT INTO order_pending (client_order_id, follower_wallet_id, asset_id) VALUES (%s, %s, %s)"
                 " RETURNING 1", coid, wallet, asset)


def _lookup(db_url: str) -> dict[str, str]:
    return dict(rows(db_url, "SELECT asset_id, condition_id FROM resolved_assets"))


def _versions(db_url: str) -> dict[str, str]:
    return dict(rows(db_url, "SELECT asset_id, xmin::text FROM resolved_assets"))


# --- the lookup ------------------------------------------------------------------------------------------------------

def test_the_lookup_follows_every_write_of_the_resolutions(db_url: str) -> None:
    a, b = res(1), res(2)
    _record(db_url, a)
    _record(db_url, b)
    assert _lookup(db_url) == {tok(1, 1): cid(1), tok(1, 2): cid(1), tok(2, 1): cid(2), tok(2, 2): cid(2)}
    before = _versions(db_url)
    # ingest puts a row's tokens in outcome order (the same tokens): nothing written here
    rows(db_url, ingest_resolutions._REORDER + " RETURNING 1", [tok(1, 2), tok(1, 1)], b"", cid(1), tok(1, 1))
    assert _versions(db_url) == before
    # tokens that change: the one no longer listed leaves, the new one comes in
    rows(db_url, "UPDATE market_resolutions SET asset_ids = %s WHERE condition_id = %s RETURNING 1",
         [tok(1, 1), tok(1, 3)], cid(1))
    assert _lookup(db_url) == {tok(1, 1): cid(1), tok(1, 3): cid(1), tok(2, 1): cid(2), tok(2, 2): cid(2)}
    rows(db_url, "DELETE FROM market_resolutions WHERE condition_id = %s RETURNING 1", cid(2))
    assert _lookup(db_url) == {tok(1, 1): cid(1), tok(1, 3): cid(1)}
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("TRUNCATE market_resolutions")
    assert _lookup(db_url) == {}


async def test_the_migration_fills_the_lookup_from_the_resolutions_recorded_before_it(
        pg_server_url: str, tmp_path: Path) -> None:
    """A database migrated up to 0730, holding resolutions and an open position of a resolved market's token, then
    migrated: the lookup holds every token of those resolutions and the sweep finds the position."""
    earlier, upto = tmp_path / "earlier", tmp_path / "upto"
    for folder, last in ((earlier, False), (upto, True)):
        folder.mkdir()
        for path in migration_files():
            if path.name < MIGRATION.name or (last and path.name == MIGRATION.name):
                shutil.copy(path, folder / path.name)
    with template_database(pg_server_url, "template0", f"tt_test_0740_{os.getpid()}") as url:
        apply_migrations(url, earlier)
        for i in (1, 2, 3):
            _record(url, res(i))
        _open(url, "w_1", tok(2, 2))
        assert rows(url, "SELECT to_regclass('resolved_assets') IS NULL") == [(True,)]
        assert apply_migrations(url, upto) == [MIGRATION.name]
        assert _lookup(url) == {tok(i, o): cid(i) for i in (1, 2, 3) for o in (1, 2)}
        apply_migrations(url)  # those after it
        p = await create_pool(url, min_size=1, max_size=1, autocommit=True)
        try:
            assert await SettlementStore(p).resolutions_with_open_positions() == [res(2)]
        finally:
            await p.close()
        before = _versions(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(MIGRATION.read_bytes())  # again: nothing to change, nothing written
        assert _versions(url) == before
        _record(url, res(4))  # and the trigger keeps it from here
        assert _lookup(url)[tok(4, 2)] == cid(4)


# --- what the sweeps find --------------------------------------------------------------------------------------------

async def test_the_sweeps_find_the_open_positions_of_resolved_markets_and_nothing_else(
        pool: Pool, db_url: str) -> None:
    store = SettlementStore(pool)
    for i in (1, 2, 3, 4):
        _record(db_url, res(i))
    _recorded_in_bulk(db_url, 100, 50)  # markets whose positions all ended
    _open(db_url, "w_1", tok(1, 1))  # market 1: one position to settle...
    _open(db_url, "w_2", tok(1, 2))  # ... and one of its other token, held back by an order resting at the venue
    _order(db_url, "co_2", "w_2", tok(1, 2), venue_order_id="io_2")
    _open(db_url, "w_3", tok(2, 1))  # market 2: one to settle
    _open(db_url, "w_3", tok(2, 2), size="0")  # an open row of no shares: nothing to settle
    _open(db_url, "w_4", tok(3, 1))  # market 3: held back by an order still being posted (no venue order id)
    _order(db_url, "co_4", "w_4", tok(3, 1), state="SUBMITTING")
    _open(db_url, "w_5", tok(4, 1))  # market 4: held back by an order resting at the venue
    _order(db_url, "co_5", "w_5", tok(4, 1), state="PARTIALLY_FILLED", venue_order_id="io_5")
    _open(db_url, "w_6", tok(9, 1))  # an unresolved market, with an order resting
    _order(db_url, "co_6", "w_6", tok(9, 1), venue_order_id="io_6")
    found = await store.resolutions_with_open_positions()
    assert sorted(found, key=lambda r: r.condition_id) == [res(1), res(2)]  # each once
    assert len(await store.resolutions_with_open_positions(limit=1)) == 1
    resting = await store.resting_orders(VENUES)
    assert resting.new == [RestingOrder("co_2", "INSIDERS", "io_2", "w_2", tok(1, 2), cid(1)),
                           RestingOrder("co_5", "INSIDERS", "io_5", "w_5", tok(4, 1), cid(4))]
    assert resting.asked == []
    again = await store.resting_orders(VENUES, asked=["co_5"], limit=1)
    assert [o.client_order_id for o in again.new] == ["co_2"]
    assert [o.client_order_id for o in again.asked] == ["co_5"]
    assert await store.resting_orders(["PAPER"]) == type(resting)([], [])
    # the orders end: every position of a resolved market is settled, the unresolved one stays open
    rows(db_url, "UPDATE order_pending SET terminal_at = now() WHERE client_order_id <> 'co_6' RETURNING 1")
    assert await Settler(store).sweep() == 5
    assert await store.resolutions_with_open_positions() == []
    assert (await store.resting_orders(VENUES)).new == []
    assert rows(db_url, "SELECT follower_wallet_id, state FROM positions WHERE size > 0") == [("w_6", "OPEN")]


async def test_an_external_position_on_a_market_resolved_long_ago_is_settled_by_the_sweep(
        pool: Pool, db_url: str) -> None:
    """A position reconciliation finds at the venue (EXTERNAL) on a token of a market resolved a year and 2,000
    resolutions before, its condition id not known."""
    _recorded_in_bulk(db_url, 1, 2000)
    store = SettlementStore(pool)
    assert await store.resolutions_with_open_positions() == []
    async with pool.connection() as conn:
        await conn.execute(reconcile_store._EXTERNAL, {"w": "w_ext", "proxy": "0x" + "e" * 40, "rows": orjson.dumps([
            {"a": tok(7, 2), "c": "", "size": "40", "avg": "0.5", "cost": "20", "pid": "pos_ext", "outcome": "No"},
        ]).decode()})
    assert await store.resolutions_with_open_positions() == [Resolution(cid(7), (tok(7, 1), tok(7, 2)), tok(7, 1))]
    assert await Settler(store).sweep() == 1
    assert rows(db_url, "SELECT state, size, condition_id, origin FROM positions WHERE follower_wallet_id = 'w_ext'"
                ) == [("RESOLVED_LOST", D(0), cid(7), "EXTERNAL")]


# --- what they cost ---------------------------------------------------------------------------------------------------

SWEEPS: dict[str, Any] = {"_UNSETTLED": (100,), "_RESTING": {"venues": VENUES, "asked": [], "limit": 100}}
PAGES = 50


def _pages(db_url: str, name: str, options: str = "") -> tuple[int, int]:
    """Pages (shared buffers hit or read) and rows of one run of the sweep statement ``name``."""
    sql = getattr(settlement_store, name)  # looked up now: the statement as the module has it
    with psycopg.connect(db_url, autocommit=True, options=options) as conn:
        [[doc]] = conn.execute(("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql).encode(), SWEEPS[name]).fetchall()
    top = doc[0]["Plan"]
    return top["Shared Hit Blocks"] + top["Shared Read Blocks"], top["Actual Rows"]


def test_a_sweep_reads_a_few_pages_however_many_resolutions_were_recorded(db_url: str) -> None:
    """5,000 resolutions, each token held by two wallets whose positions ended, and none of them open: each sweep
    statement reads a few pages (the open positions of other markets, a probe of the lookup for each of their tokens),
    on fresh tables and analyzed ones, with the executor's planner settings and without. The old statements read
    every resolution, and probed the open positions for each."""
    _recorded_in_bulk(db_url, 1, 5000)
    for i in range(5):
        _open(db_url, f"w_{i}", tok(900_000 + i, 1))  # open, in markets not resolved
    _order(db_url, "co_1", "w_1", tok(900_001, 1), venue_order_id="io_1")
    read = {}
    for analyzed in (False, True):
        if analyzed:
            with psycopg.connect(db_url, autocommit=True) as conn:
                conn.execute("ANALYZE")
        for options in ("", PLANNER_OPTIONS):
            for name in SWEEPS:
                read[(analyzed, bool(options), name)] = _pages(db_url, name, options)
    assert all(n == 0 for _, n in read.values()), read
    assert max(pages for pages, _ in read.values()) <= PAGES, read


def test_the_sweeps_read_the_open_positions_alone_and_every_other_row_by_key(db_url: str) -> None:
    """1,000 resolved markets whose positions all ended (20 holders each), 2,000 positions open in other markets, 50
    orders in flight (test_plans): positions are read through an index of the open ones only, the lookup, the
    resolutions, the open orders, the orders and a position's LOST SELLs by their keys."""
    _resolved_markets(db_url)
    for name in SWEEPS:
        sql = getattr(settlement_store, name)
        with psycopg.connect(db_url, options=PLANNER_OPTIONS) as conn:
            [[doc]] = conn.execute(("EXPLAIN (FORMAT JSON) " + sql).encode(), SWEEPS[name]).fetchall()
        nodes = plan_nodes(doc[0]["Plan"])
        used: dict[str, set[str]] = {}
        parent: dict[int, str] = {}
        for n in nodes:  # a bitmap heap scan's index is its child's
            for child in n.get("Plans", []):
                parent[id(child)] = n.get("Relation Name", "")
        for n in nodes:
            relation = n.get("Relation Name") or parent.get(id(n), "")
            if n["Node Type"].endswith("Scan") and n["Node Type"] not in ("CTE Scan", "Subquery Scan"):
                used.setdefault(relation, set()).add(n.get("Index Name", n["Node Type"]))
        assert used.pop("positions") <= {"positions_open_asset", "positions_condition", "positions_wallet_open",
                                         "Bitmap Heap Scan"}, name
        assert used == {"resolved_assets": {"resolved_assets_pkey"}, "order_pending": {"order_pending_open"},
                        "orders": {"orders_pkey"},
                        **({"market_resolutions": {"market_resolutions_pkey"},  # and a position's LOST SELLs
                            "lost_sells": {"lost_sells_position"}, "fills": {"fills_order"},
                            "redemptions": {"redemptions_pkey"}} if name == "_UNSETTLED" else {})}, name

