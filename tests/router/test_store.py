"""The router's PostgreSQL access on a real, migrated database."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg.rows import tuple_row

from common.storage import create_pool
from services.router.adapters.store import RoutedRow, RouterStore
from services.router.adapters.store_sql import PLANNER_OPTIONS
from tests.helpers import eventually

pytestmark = pytest.mark.integration

D = Decimal
DAY_MS = 86_400_000


HUNDRED = D("100")


def _row(lt: str = "lt_1", delta: Decimal | None = HUNDRED) -> RoutedRow:
    return RoutedRow(
        leader_trade_id=lt, leader_wallet="0xleader", asset_id="111", condition_id="0xc", side="BUY",
        payload=b"\x00\x01payload", leader_delta=delta, orders=2,
        skip_subs=["sub_3", "sub_4"], skip_wallets=["w_3", "w_4"], skip_reasons=["PRICE_ABOVE_MAX", "NOTHING_HELD"],
        skip_details=["leader price 0.97 > maxPrice 0.95", "follower holds 0 shares"])


def _day(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).date()


def _count(db_url: str, sql: str) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


async def test_persist_once_then_nothing(store: RouterStore, db_url: str) -> None:
    assert await store.persist(_row()) is True
    assert await store.persist(_row()) is False  # same leader trade: nothing written again
    assert _count(db_url, "SELECT orders FROM routed_trades") == 2
    assert _count(db_url, "SELECT count(*) FROM copy_skips") == 2
    assert _count(db_url, "SELECT skipped FROM subscription_stats WHERE subscription_id = 'sub_3'") == 1
    assert _count(db_url, "SELECT size FROM leader_positions WHERE asset_id = '111'") == 100
    assert await store.persist(_row("lt_2", D("-30"))) is True
    assert _count(db_url, "SELECT size FROM leader_positions WHERE asset_id = '111'") == 70
    assert _count(db_url, "SELECT skipped FROM subscription_stats WHERE subscription_id = 'sub_3'") == 2
    assert await store.persist(_row("lt_3", D("-500"))) is True
    assert _count(db_url, "SELECT size FROM leader_positions WHERE asset_id = '111'") == 0  # floored


async def test_outbox_rows(store: RouterStore) -> None:
    await store.persist(_row("lt_1"))
    await store.persist(_row("lt_2", None))
    pending = await store.unappended(older_than_s=0, limit=10)
    assert [lt for lt, _ in pending] == ["lt_1", "lt_2"] and pending[0][1] == b"\x00\x01payload"
    await store.mark_appended([("lt_1", "1-0")])
    assert [lt for lt, _ in await store.unappended(older_than_s=0, limit=10)] == ["lt_2"]
    assert await store.unappended(older_than_s=3600, limit=10) == []
    existing = await store.existing("lt_1")
    assert existing is not None and existing.cursor == "1-0"
    assert await store.existing("lt_9") is None


async def test_load_batches_everything(store: RouterStore, db_url: str) -> None:
    now_ms = 20_000 * DAY_MS + 3_600_000
    today, yesterday = _day(now_ms), _day(now_ms - DAY_MS)
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price, cost_usd,"
            " pnl_day, pnl_day_realized_usd)"
            " VALUES ('w_1', '111', '0xc', '0xa', 100, 0.4, 40, %(t)s, -5), ('w_1', '222', '0xc', '0xa', 10, 0.5, 5,"
            " %(y)s, -70), ('w_1', '333', '0xd', '0xa', 20, 0.5, 10, NULL, 0),"
            " ('w_1', '444', '', '0xa', 0, 0, 0, %(t)s, 2.5), ('w_2', '999', '', '0xb', 3, 0.3, 0.9, %(y)s, -1)",
            {"t": today, "y": yesterday})
        conn.execute("INSERT INTO funding (follower_wallet_id, balance_usd, as_of, updated_at)"
                     " VALUES ('w_2', 1520.55, now(), now())")
    await store.persist(_row("lt_0", D("42")))
    view = await store.load(leader_trade_id="lt_1", leader="0xleader", asset_id="111", market="0xc",
                            wallets=["w_1", "w_2", "w_3"], pnl_day_ms=now_ms - now_ms % DAY_MS,
                            funding_wallets=["w_2", "w_3"])
    assert view.existing is None and view.leader_before == D(42)
    p1 = view.positions["w_1"]
    assert (p1.total_cost_usd, p1.market_cost_usd, p1.asset_size) == (D(55), D(45), D(100))
    assert p1.markets == {"0xc", "0xd"}  # the closed position (size 0) does not count
    assert view.positions["w_2"].markets == {"999"}  # no condition id: the asset stands for the market
    assert "w_3" not in view.positions
    # today's realized PnL of every position, the closed one too; yesterday's does not count
    assert view.realized_today == {"w_1": D("-2.5")}
    assert view.funding == {"w_2": D("1520.55")}
    again = await store.load(leader_trade_id="lt_0", leader="0xnobody", asset_id="111", market="0xc", wallets=["w_1"],
                             pnl_day_ms=None, funding_wallets=[])
    assert again.existing is not None and again.existing.payload == b"\x00\x01payload"
    assert again.leader_before is None and again.realized_today == {}


async def test_persist_many_writes_as_one_by_one(store: RouterStore, db_url: str) -> None:
    """One statement for a batch: the leader position is floored after every trade (not only at the end),
    a trade persisted before writes nothing again (its change is not applied twice), skips add up."""
    await store.persist(_row("lt_0", D("20")))
    batch = [_row("lt_1", D("100")), _row("lt_0", D("999")), _row("lt_2", D("-300")), _row("lt_3", None),
             _row("lt_4", D("50"))]
    assert await store.persist_many(batch) == {"lt_1", "lt_2", "lt_3", "lt_4"}
    assert _count(db_url, "SELECT size FROM leader_positions WHERE asset_id = '111'") == 50  # 120 -> 0 -> 50
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT last_trade_id FROM leader_positions").fetchone()
    assert row == ("lt_4",)
    assert _count(db_url, "SELECT count(*) FROM routed_trades") == 5
    assert _count(db_url, "SELECT sum(orders) FROM routed_trades") == 10
    assert _count(db_url, "SELECT skipped FROM subscription_stats WHERE subscription_id = 'sub_3'") == 5
    assert await store.persist_many(batch) == set()


async def test_a_leader_gets_a_position_row_only_by_buying(store: RouterStore, db_url: str) -> None:
    """A SELL of a position never seen bought leaves it unknown (no row): a row of 0 would make the leader's
    next SELL a close. Once bought, selling it all records 0 (closed)."""
    sql = "SELECT size FROM leader_positions WHERE asset_id = '111'"
    await store.persist(_row("lt_s1", D("-5")))
    assert _count(db_url, "SELECT count(*) FROM leader_positions") == 0
    await store.persist_many([_row("lt_s2", D("-1")), _row("lt_b1", D("10")), _row("lt_s3", D("-4"))])
    assert _count(db_url, sql) == 6
    await store.persist(_row("lt_s4", D("-20")))
    assert _count(db_url, sql) == 0


async def test_load_batch_answers_per_market_and_asset(store: RouterStore, db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price, cost_usd)"
            " VALUES ('w_1', '111', '0xc', '0xa', 100, 0.4, 40), ('w_1', '333', '0xd', '0xa', 20, 0.5, 10)")
    await store.persist(_row("lt_0", D("42")))
    b = await store.load_batch(leader_trade_ids=["lt_0", "lt_1"], wallets=["w_1", "w_2"], markets=["0xc", "0xd"],
                               assets=["111", "333"], leader_assets=[("0xleader", "111"), ("0xleader", "333")],
                               pnl_day_ms=None, funding_wallets=[])
    assert list(b.existing) == ["lt_0"]
    assert b.leaders == {("0xleader", "111"): D(42)}
    here, there = b.position("w_1", "0xc", "111"), b.position("w_1", "0xd", "333")
    assert (here.total_cost_usd, here.market_cost_usd, here.asset_size) == (D(50), D(40), D(100))
    assert (there.market_cost_usd, there.asset_size, there.markets) == (D(10), D(20), {"0xc", "0xd"})
    assert b.position("w_2", "0xc", "111").total_cost_usd == 0


async def test_a_remainder_below_one_share_step_is_no_open_position(store: RouterStore, db_url: str) -> None:
    """A full exit of a BUY whose fee was taken in shares leaves e.g. 0.003 shares: it can never be sold, so
    it must not hold a maxOpenPositions slot (or count as held) for ever."""
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price, cost_usd)"
            " VALUES ('w_1', '111', '0xc', '0xa', 0.003, 0.37, 0.00111),"
            " ('w_1', '333', '0xd', '0xa', 0.01, 0.5, 0.005)")
    b = await store.load_batch(leader_trade_ids=["lt_1"], wallets=["w_1"], markets=["0xc", "0xd"],
                               assets=["111", "333"], leader_assets=[], pnl_day_ms=None, funding_wallets=[])
    dust, step = b.position("w_1", "0xc", "111"), b.position("w_1", "0xd", "333")
    assert dust.markets == {"0xd"}
    assert (dust.asset_size, dust.market_cost_usd) == (0, 0)
    assert (step.asset_size, step.market_cost_usd) == (D("0.01"), D("0.005"))


async def test_a_lost_routing_connection_is_replaced(store: RouterStore, db_url: str) -> None:
    await store.persist(_row("lt_1"))
    with psycopg.connect(db_url, autocommit=True) as conn:  # the routing path's connection dies
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                     " WHERE datname = current_database() AND pid <> pg_backend_pid()")
    with pytest.raises(psycopg.OperationalError):
        await store.persist(_row("lt_2"))
    assert await store.persist(_row("lt_2")) is True  # a fresh connection from the pool
    assert _count(db_url, "SELECT count(*) FROM routed_trades") == 2


async def test_the_batch_read_planned_on_empty_tables_still_reads_them_by_key_once_they_grew(db_url: str) -> None:
    # A young database: the plan the routing connection caches now is the one it keeps as the tables grow
    # (planned on empty tables, a hash join read all of routed_trades on every batch a minute later).
    pool = await create_pool(db_url, min_size=1, max_size=1, autocommit=True, options=PLANNER_OPTIONS)
    store = RouterStore(pool)
    args: dict[str, Any] = {"leader_trade_ids": ["lt_new"], "wallets": ["w_1", "w_2"], "markets": ["0xc"],
                            "assets": ["111"], "leader_assets": [("0xleader", "111")], "pnl_day_ms": DAY_MS,
                            "funding_wallets": ["w_1"]}
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, wallet, size)"
                     " VALUES ('w_0', '111', '0xa', 1)")
        conn.execute("ANALYZE routed_trades, positions, leader_positions, funding")
    try:
        for _ in range(8):
            await store.load_batch(**args)
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("INSERT INTO routed_trades (leader_trade_id, leader_wallet, asset_id, side, orders, skips,"
                         " payload) SELECT 'lt_' || g, '0xleader', '111', 'BUY', 1, 0, '\\x00'::bytea"
                         " FROM generate_series(1, 5000) g")
            for table, row in (("positions", "(follower_wallet_id, asset_id, wallet, size) SELECT 'w_' || g, '111',"
                                             " '0xa', 1"),
                               ("leader_positions", "(leader_wallet, asset_id, size, last_trade_id)"
                                                    " SELECT '0xl' || g, '111', 1, 'lt'"),
                               ("funding", "(follower_wallet_id, balance_usd, as_of, updated_at) SELECT 'w_' || g,"
                                           " 1, now(), now()")):
                conn.execute(f"INSERT INTO {table} {row} FROM generate_series(1, 5000) g")
        before = _scans(db_url)
        view = await store.load_batch(**args)
        assert view.asset_sizes == {("w_1", "111"): D(1), ("w_2", "111"): D(1)} and view.funding == {"w_1": D(1)}
    finally:
        await store.close()
        await pool.close()  # the session ends: its scan counts reach the statistics
    after = await eventually(lambda: (now := _scans(db_url))["routed_trades"][1] > before["routed_trades"][1] and now)
    assert {t: seq for t, (seq, _idx) in after.items()} == {t: seq for t, (seq, _idx) in before.items()}


def _scans(db_url: str) -> dict[str, tuple[int, int]]:
    """(sequential scans, index scans) of the tables the batch read looks up."""
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT relname, seq_scan, coalesce(idx_scan, 0) FROM pg_stat_user_tables WHERE relname IN"
                            " ('routed_trades', 'positions', 'leader_positions', 'funding')").fetchall()
    return {name: (int(seq), int(idx)) for name, seq, idx in rows}


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("waited_s", "made_again"), [(0.5, False), (2.5, True)])
async def test_plans_made_while_positions_was_tiny_are_made_again(db_url: str, waited_s: float,
                                                                   made_again: bool) -> None:
    """A cached plan is made again only after an ANALYZE: one made while positions held a row (analyzed) kept looking
    wallets up as on that table as it grew (through the (asset, wallet) index, a walk over the whole index per
    wallet, before the batch read had indexes of its own). Plans older than ``replan_interval_s`` (2 s here) are
    dropped, and the batch read is prepared and planned again on the grown table."""
    pool = await create_pool(db_url, min_size=1, max_size=1, autocommit=True, options=PLANNER_OPTIONS)
    clock = _Clock()
    store = RouterStore(pool, replan_interval_s=2.0, clock=clock)
    wallets = [f"w_{i}" for i in range(1, 301)]
    args: dict[str, Any] = {"leader_trade_ids": ["lt_new"], "wallets": wallets, "markets": ["0xc"], "assets": ["111"],
                            "leader_assets": [("0xleader", "111")], "pnl_day_ms": None, "funding_wallets": []}
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, wallet, size)"
                     " VALUES ('w_0', '999', '0xa', 1)")
        conn.execute("ANALYZE positions")
    try:
        await store.load_batch(**args)  # planned now, on one position
        first = await _prepared(store)
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, wallet, size)"
                         " SELECT 'w_' || g, '111', '0xa', 1 FROM generate_series(1, 3000) g")
        clock.now += waited_s
        view = await store.load_batch(**args)
        assert len(view.asset_sizes) == len(wallets)
        again = await _prepared(store)
    finally:
        await store.close()
        await pool.close()
    assert first and set(first) == set(again)
    assert (first != again) == made_again, (first, again)


async def _prepared(store: RouterStore) -> dict[str, Any]:
    """When each statement on the store's routing connection was prepared."""
    conn = store._hot
    assert conn is not None
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute("SELECT name, prepare_time FROM pg_prepared_statements", prepare=False)
        return {name: at for name, at in await cur.fetchall()}
