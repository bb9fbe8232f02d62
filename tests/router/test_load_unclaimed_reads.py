"""The batch read reaches only the open orders it counts: a wallet's marked SELLs and its BUYs of an id not of the
router's form (index order_pending_unclaimed, migration 0800); the router's own copies in flight are not even read
from order_pending (they are counted from Redis), however many a wallet has."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import psycopg
import pytest

from services.executor.adapters.order_sql import ROUTER_COPY_ID as EXECUTOR_COPY_ID
from services.executor.adapters.order_sql import UNCLAIMED_SELL
from services.router.adapters.store import RouterStore
from services.router.adapters.store_sql import LOAD, PLANNER_OPTIONS, ROUTER_COPY_ID, UNCLAIMED
from services.router.domain.decide import client_order_id
from tests.helpers import plan_nodes
from tests.router.factories import ASSET, CONDITION
from tests.router.load_plans import explain_load, load_params

pytestmark = pytest.mark.integration


def _open(db_url: str, rows: list[tuple[str, str, str, str]]) -> None:
    """Open orders of w_1 ``(client order id, origin, side, asset)``, pending and marked as the executor marks them."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        for coid, origin, side, asset in rows:
            conn.execute("INSERT INTO orders (client_order_id, state, venue, origin, follower_wallet_id, asset_id,"
                         " side, order_type, amount_usd, size, order_proto)"
                         " VALUES (%s, 'PLACED', 'INSIDERS', %s, 'w_1', %s, %s, 'FAK', 25, 10, '')",
                         (coid, origin, asset, side))
        conn.execute("INSERT INTO order_pending (client_order_id, follower_wallet_id, asset_id, unclaimed_sell)"
                     f" SELECT client_order_id, follower_wallet_id, asset_id, {UNCLAIMED_SELL} FROM orders")
        # other wallets' copies in flight: a table grown past what a scan of it would read
        conn.execute("INSERT INTO order_pending (client_order_id, follower_wallet_id, asset_id)"
                     " SELECT 'co_' || md5(g::text), 'w_' || (g %% 2000 + 2), %s FROM generate_series(1, 10000) g",
                     (ASSET,))
        conn.execute("ANALYZE orders, order_pending")


async def _params(**kw: Any) -> dict[str, Any]:
    """LOAD's parameters for a batch of one BUY of wallet w_1."""
    return await load_params(**{"wallets": ["w_1"], "markets": [CONDITION], "assets": [ASSET], **kw})


@pytest.mark.parametrize("options", ["", PLANNER_OPTIONS])
@pytest.mark.parametrize("generic", [True, False], ids=["generic plan", "custom plan"])
async def test_a_wallets_router_copies_in_flight_are_not_read(db_url: str, options: str, generic: bool) -> None:
    copies = [(client_order_id(f"lt_{i}", "w_1", ASSET), "COPY", "BUY" if i % 2 else "SELL", ASSET)
              for i in range(60)]
    _open(db_url, [*copies, ("man_1", "MANUAL", "BUY", ASSET), ("ex_1", "TRIGGER", "SELL", "9")])
    nodes = plan_nodes(explain_load(db_url, await _params(sell_assets=[]), options, generic=generic))
    scans = [n for n in nodes if n.get("Relation Name") == "order_pending"]
    assert scans and {n["Index Name"] for n in nodes if n.get("Index Name", "").startswith("order_pending")} == {
        "order_pending_unclaimed"}
    assert all(n["Actual Loops"] == 1 for n in scans)  # one wallet
    read = sum(n["Actual Rows"] + n.get("Rows Removed by Filter", 0) + n.get("Rows Removed by Index Recheck", 0)
               for n in scans)
    assert read == 2  # the manual BUY and the exit (of an asset the batch does not sell): none of the 60 copies


@pytest.mark.parametrize("coid", ["co_" + "g" * 32, "co_" + "A" * 32, "co_" + "0" * 31 + "é"])
async def test_a_manual_buy_of_an_id_shaped_like_a_copys_counts(store: RouterStore, db_url: str, coid: str) -> None:
    """"co_" and 35 characters, but not 32 lower-case hex digits: not the router's (it never claimed it in Redis)."""
    assert not re.fullmatch(ROUTER_COPY_ID, coid)
    _open(db_url, [(coid, "MANUAL", "BUY", ASSET)])
    b = await store.load_batch(leader_trade_ids=["lt_x"], wallets=["w_1"], markets=[CONDITION], assets=[ASSET],
                               leader_assets=[], pnl_day_ms=None, funding_wallets=[], sell_assets=[])
    assert b.position("w_1", CONDITION, ASSET).buying_total_usd == 25


def test_the_index_predicate_is_loads() -> None:
    """PostgreSQL uses the index when LOAD's WHERE has its predicate: the same expression."""
    text = (Path(__file__).resolve().parents[2] / "common/migrations/0800_order_pending_unclaimed.sql").read_text()
    indexed = " ".join(text[text.index("CREATE INDEX"):].split(";")[0].split())
    assert indexed.endswith(" WHERE " + UNCLAIMED.replace("x.", ""))
    assert UNCLAIMED in LOAD


IDS = [client_order_id("lt_1", "w_1", ASSET), "co_" + "0" * 32, "co_" + "f" * 32, "co_" + "9a" * 16,
       "co_" + "g" * 32, "co_" + "A" * 32, "co_" + "0" * 31, "co_" + "0" * 33, "co_" + "0" * 31 + "é",
       "co_" + "0" * 31 + "\n", "co_rs_" + "a" * 29, "cO_" + "a" * 32, "xco_" + "a" * 31, "co__" + "a" * 31, "man_1",
       "", "co_", "éco_" + "a" * 30, "co_" + "a" * 32 + "\n"]


def test_the_predicate_tells_the_routers_form_as_router_copy_id(db_url: str) -> None:
    """An id is left out exactly when it matches ROUTER_COPY_ID (the executor's, the same), multi-byte ones too."""
    assert ROUTER_COPY_ID == EXECUTOR_COPY_ID
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT id, id ~ %s, NOT (" + UNCLAIMED.replace("x.terminal_at IS NULL AND ", "")
                            .replace("x.unclaimed_sell", "false").replace("x.client_order_id", "id") + ")"
                            " FROM unnest(%s::text[]) AS x(id)", (ROUTER_COPY_ID, [i.replace("\\n", "\n") for i in IDS])
                            ).fetchall()
    assert [r[1] for r in rows] == [r[2] for r in rows] == [bool(re.fullmatch(ROUTER_COPY_ID, i.replace("\\n", "\n")))
                                                            for i in IDS]
