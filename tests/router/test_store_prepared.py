"""The routing statements as bare prepared statements: typed as psycopg types them, prepared again on a connection
the routing path takes back from the pool."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg
import pytest

from common.storage import create_pool
from services.router.adapters.store import RoutedRow, RouterStore
from services.router.adapters.store_sql import LOAD, PERSIST, PLANNER_OPTIONS, Prepared

pytestmark = pytest.mark.integration


def _row(lt: str, orders: int = 1) -> RoutedRow:
    return RoutedRow(leader_trade_id=lt, leader_wallet="0xleader", asset_id="111", condition_id="0xc", side="BUY",
                     payload=b"\x00\x1f\xffpayload", leader_delta=Decimal("5"), orders=orders,
                     skip_subs=["sub_1"], skip_wallets=["w_1"], skip_reasons=["NOTHING_HELD"], skip_details=[""])


def _types(conn: psycopg.Connection[Any], where: str) -> list[str]:
    row = conn.execute(f"SELECT parameter_types::text[] FROM pg_prepared_statements WHERE {where}").fetchone()
    assert row is not None
    return list(row[0])


async def test_statements_take_the_parameter_types_psycopg_gives_them(db_url: str) -> None:
    pool = await create_pool(db_url, min_size=1, max_size=1, autocommit=True, options=PLANNER_OPTIONS)
    store = RouterStore(pool)
    load_params: dict[str, Any] = {}
    persist_params: dict[str, Any] = {}
    hot_one = store._hot_one

    async def keep(stmt: Prepared, params: dict[str, Any]) -> Any:
        (load_params if stmt.names[0] == "wallets" else persist_params).update(params)
        return await hot_one(stmt, params)

    store._hot_one = keep  # type: ignore[method-assign]
    try:
        await store.load_batch(leader_trade_ids=["lt_x"], wallets=["w_1"], markets=["0xc"], assets=["111"],
                               leader_assets=[("0xleader", "111")], pnl_day_ms=86_400_000, funding_wallets=["w_1"])
        assert await store.persist(_row("lt_1"))
        hot = store._hot  # the routing connection: its session's statements
        assert hot is not None
        cur = await hot.execute("SELECT name, parameter_types::text[] AS types FROM pg_prepared_statements")
        ours = {r["name"]: list(r["types"]) for r in await cur.fetchall()}
    finally:
        await store.close()
        await pool.close()
    with psycopg.connect(db_url, autocommit=True, options=PLANNER_OPTIONS) as conn:
        conn.execute(LOAD, load_params, prepare=True)
        assert ours["tt_router_load"] == _types(conn, "name LIKE '_pg3_%'")
        conn.execute("DEALLOCATE ALL")
        conn.execute(PERSIST, {**persist_params, "lts": "lt_2"}, prepare=True)
        assert ours["tt_router_persist"] == _types(conn, "name LIKE '_pg3_%'")


@pytest.mark.parametrize("replaced", [False, True])
async def test_the_connection_taken_after_a_failure_runs_the_statements(db_url: str, replaced: bool) -> None:
    """A statement that fails gives the routing connection back to the pool with its statements still prepared;
    the next statement takes a connection from the pool again: that one (``replaced`` False), or a new one."""
    pool = await create_pool(db_url, min_size=1, max_size=1, autocommit=True, options=PLANNER_OPTIONS)
    store = RouterStore(pool)
    try:
        assert await store.persist(_row("lt_1"))
        with pytest.raises(psycopg.errors.NumericValueOutOfRange):
            await store.persist(_row("lt_2", orders=2**40))  # past an int
        if replaced:
            async with pool.connection() as conn:
                await conn.close()
        assert await store.persist(_row("lt_2"))
        view = await store.load_batch(leader_trade_ids=["lt_1", "lt_2"], wallets=[], markets=[], assets=[],
                                      leader_assets=[("0xleader", "111")], pnl_day_ms=None, funding_wallets=[])
        assert {lt: e.payload for lt, e in view.existing.items()} == {"lt_1": b"\x00\x1f\xffpayload",
                                                                      "lt_2": b"\x00\x1f\xffpayload"}
        assert view.leaders == {("0xleader", "111"): Decimal(10)}
    finally:
        await store.close()
        await pool.close()


def test_a_placeholder_used_twice_is_one_parameter() -> None:
    stmt = Prepared.of("x", "SELECT %(a)s, %(b)s, %(a)s")
    assert stmt.sql == b"SELECT $1, $2, $1" and stmt.names == ("a", "b")
    assert stmt.encode({"a": "v", "b": b"\x00"}) == ([b"v", b"\x00"], [0, 17], [0, 1])


def test_a_bare_percent_is_refused() -> None:
    with pytest.raises(ValueError):
        Prepared.of("x", "SELECT 5 % 2, %(a)s")


async def test_plans_are_dropped_again_and_again(db_url: str) -> None:
    """Every ``replan_interval_s`` the routing connection drops its plans, as often as it lasts."""
    pool = await create_pool(db_url, min_size=1, max_size=1, autocommit=True, options=PLANNER_OPTIONS)
    now = [0.0]
    store = RouterStore(pool, replan_interval_s=1.0, clock=lambda: now[0])
    try:
        for n in range(12):
            now[0] += 1.0
            assert await store.persist(_row(f"lt_{n}"))
        assert store._hot is not None
        cur = await store._hot.execute("SELECT count(*) AS n FROM pg_prepared_statements")
        assert await cur.fetchone() == {"n": 1}  # the one of the statements run since the last drop
    finally:
        await store.close()
        await pool.close()
