"""Guard's write of many subscriptions' unrealized PnL looks each stats row up by key: a join of its value list
with its list of locked rows compared every pair (4 million comparisons, about half a second, for 2,000
subscriptions), while those rows stayed locked against the executor's fill booking."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest
from psycopg.rows import dict_row

from common.storage import KEYED_LOOKUPS
from services.guard.adapters.perf_store import _SAVE_UNREALIZED
from tests.helpers import plan_nodes

pytestmark = pytest.mark.integration

N = 2_000


@pytest.mark.parametrize("analyzed", [True, False])
def test_the_write_of_many_subscriptions_is_one_lookup_each(db_url: str, analyzed: bool) -> None:
    ids = [f"sub_{i:05d}" for i in range(N)]
    values = [Decimal(i) / 100 for i in range(N)]
    with psycopg.connect(db_url, autocommit=True, options=KEYED_LOOKUPS, row_factory=dict_row) as conn:
        conn.execute("INSERT INTO subscription_stats (subscription_id) SELECT unnest(%s::text[])", (ids,))
        conn.execute("INSERT INTO subscription_stats (subscription_id) SELECT 'other_' || i"
                     " FROM generate_series(1, 5000) AS i")
        if analyzed:
            conn.execute("ANALYZE subscription_stats")
        conn.execute("BEGIN")
        row = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + _SAVE_UNREALIZED, (ids, values)).fetchone()
        written = conn.execute("SELECT count(*) AS n FROM subscription_stats WHERE subscription_id = ANY(%s)"
                               " AND unrealized_pnl_usd = (substr(subscription_id, 5)::int / 100.0)", (ids,)).fetchone()
        conn.execute("ROLLBACK")
    assert row is not None and written == {"n": N}
    nodes = plan_nodes(row["QUERY PLAN"][0]["Plan"])
    compared = sum(int(n.get("Rows Removed by Join Filter", 0)) for n in nodes)
    assert compared < 10 * N, f"{compared} pairs compared and dropped for {N} subscriptions"
