"""A page of a wallet's OPEN positions does not read its ended lives: ``position_history`` holds only ended lives,
and its branch of the page read every one of the wallet's (by its wallet index, filtering on the state) to find none,
a cost growing with the wallet's history on each request."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.rows import dict_row

from services.control import position_repo
from tests.helpers import rows_read

pytestmark = pytest.mark.integration

WALLET = "0x" + "cd" * 20
NOW = datetime(2026, 11, 30, tzinfo=UTC)
ENDED = 2_000


def _seed(conn: psycopg.Connection[dict[str, object]]) -> None:
    conn.execute("INSERT INTO position_history (id, follower_wallet_id, asset_id, wallet, state, origin, venue, size,"
                 " avg_price, cost_usd, realized_pnl_usd, opened_at, closed_at, updated_at)"
                 " SELECT 'ph_' || g, 'w_1', 'a_' || g, %s, 'CLOSED', 'COPY', 'PAPER', 0, 0.5, 0, 0,"
                 " %s - g * interval '1 minute', %s, %s FROM generate_series(1, %s) g", (WALLET, NOW, NOW, NOW, ENDED))
    conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, wallet, size, avg_price, cost_usd, id,"
                 " opened_at) SELECT 'w_1', 'open_' || g, %s, 10, 0.5, 5, 'pos_' || g, %s FROM generate_series(1, 3) g",
                 (WALLET, NOW - timedelta(hours=1)))
    conn.execute("ANALYZE position_history")
    conn.execute("ANALYZE positions")


async def test_the_open_page_reads_no_ended_life(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as conn:
        _seed(conn)
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True, row_factory=dict_row) as conn:
        page = await position_repo.list_page(conn, wallet=WALLET, state="OPEN", after=None, limit=50)
        assert sorted(r["asset_id"] for r in page) == ["open_1", "open_2", "open_3"]
        ended = await position_repo.list_page(conn, wallet=WALLET, state="CLOSED", after=None, limit=5)
        assert [r["asset_id"] for r in ended] == [f"a_{g}" for g in range(1, 6)]  # the history is still listed
        explained: list[dict[str, object]] = []
        real_execute = conn.execute

        async def explain(sql: str, params: object = None) -> object:  # the page's own statement, explained
            cur = await real_execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)
            explained.append((await cur.fetchone())["QUERY PLAN"][0]["Plan"])  # type: ignore[index]
            return await real_execute(sql, params)

        conn.execute = explain  # type: ignore[method-assign]
        await position_repo.list_page(conn, wallet=WALLET, state="OPEN", after=None, limit=50)
    [plan] = explained
    read = rows_read(plan, "position_history")
    assert read == 0, f"{read} ended lives read for a page of open positions"
