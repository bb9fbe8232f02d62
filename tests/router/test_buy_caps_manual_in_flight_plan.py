"""The batch read finds the BUYs in flight the router did not send by key: each wallet's open orders it counts through
order_pending_unclaimed (migration 0800: the router's own copies are not in it), each one's order by its key (the plan
the routing connection caches, and one made for the values)."""

from __future__ import annotations

import re

import psycopg
import pytest

from services.executor.adapters.order_sql import UNCLAIMED_SELL
from services.router.adapters.store_sql import LOAD, PLANNER_OPTIONS, ROUTER_COPY_ID, UNCLAIMED
from services.router.domain.decide import client_order_id
from tests.helpers import plan_nodes
from tests.router.load_plans import explain_load, load_params

WALLETS = [f"w_{i}" for i in range(1, 201)]


def _grow(db_url: str) -> None:
    """20,000 orders: 9,800 of the router's copies open (BUYs and SELLs), 100 exits and 100 manual BUYs open, 10,000
    ended; 2,000 wallets, each holding one position (as the executor marks and keeps them), analyzed."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, wallet, size)"
                     " SELECT 'w_' || g, '111', '0xa', 10 FROM generate_series(1, 2000) g")
        conn.execute("INSERT INTO orders (client_order_id, state, venue, origin, follower_wallet_id, asset_id, side,"
                     " order_type, amount_usd, size, order_proto)"
                     " SELECT CASE WHEN g <= 100 OR g > 10000 THEN 'ex_' || g WHEN g <= 200 THEN 'man_' || g"
                     "             ELSE 'co_' || md5(g::text) END,"
                     " CASE WHEN g > 10000 THEN 'FILLED' ELSE 'PLACED' END, 'INSIDERS',"
                     " CASE WHEN g <= 100 OR g > 10000 THEN 'TRIGGER' WHEN g <= 200 THEN 'MANUAL' ELSE 'COPY' END,"
                     " 'w_' || (g % 2000), CASE WHEN g % 5 = 0 THEN '111' ELSE 'a_' || (g % 50) END,"
                     " CASE WHEN g > 100 AND g <= 200 OR g % 3 = 0 AND g <= 10000 THEN 'BUY' ELSE 'SELL' END, 'FAK',"
                     " 10, 1, '' FROM generate_series(1, 20000) g")
        conn.execute("INSERT INTO order_pending (client_order_id, follower_wallet_id, asset_id, terminal_at,"
                     f" unclaimed_sell) SELECT client_order_id, follower_wallet_id, asset_id,"
                     f" CASE WHEN state = 'FILLED' THEN now() END, {UNCLAIMED_SELL} FROM orders")
        conn.execute("ANALYZE positions, orders, order_pending")


@pytest.mark.integration
@pytest.mark.parametrize("options", ["", PLANNER_OPTIONS])
@pytest.mark.parametrize("generic", [True, False], ids=["generic plan", "custom plan"])
@pytest.mark.parametrize("sell_assets", [[], ["111"]], ids=["BUYs", "a SELL"])
async def test_the_orders_in_flight_the_router_did_not_send_are_read_by_key(db_url: str, options: str, generic: bool,
                                                                            sell_assets: list[str]) -> None:
    _grow(db_url)
    with psycopg.connect(db_url) as conn:
        row = conn.execute(f"SELECT count(*) FILTER (WHERE p.client_order_id !~ '{ROUTER_COPY_ID}'), count(*)"
                           " FROM order_pending p"
                           " WHERE p.terminal_at IS NULL AND p.follower_wallet_id = ANY(%s)"
                           " AND (NOT p.unclaimed_sell OR p.asset_id = ANY(%s))", (WALLETS, sell_assets)).fetchone()
    assert row is not None
    theirs, read = row
    assert 0 < theirs < read  # some manual orders (or exits) among the router's copies
    params = await load_params(wallets=WALLETS, markets=["0xc"], assets=["111"], sell_assets=sell_assets)
    nodes = plan_nodes(explain_load(db_url, params, options, generic=generic))
    indexes = {n["Index Name"] for n in nodes if n.get("Index Name", "").startswith("order")}
    assert indexes == {"order_pending_unclaimed", "orders_pkey"}  # (an index scan, or a bitmap of it)
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan" and n["Relation Name"] in ("order_pending", "orders")]
    fetched = [n for n in nodes if n.get("Relation Name") == "orders"]
    assert sum(n["Actual Loops"] for n in fetched) == theirs  # the router's copies: no order row read


@pytest.mark.parametrize("coid", [client_order_id("lt_1", "w_1", "111"), "co_" + "0" * 32, "co_" + "f" * 32])
def test_every_id_of_the_routers_form_is_left_out(coid: str) -> None:
    """LOAD leaves out the unmarked rows whose id is of ROUTER_COPY_ID ("co_" + 32 hex digits), as UNCLAIMED tells it
    (35 bytes, "co_" once rtrim took the hex digits): every copy the router claims in Redis."""
    assert re.fullmatch(ROUTER_COPY_ID, coid)
    assert len(coid.encode()) == 35 and coid.rstrip("0123456789abcdef") == "co_"
    assert "octet_length(x.client_order_id) <> 35" in UNCLAIMED and UNCLAIMED in LOAD
    assert "rtrim(x.client_order_id, '0123456789abcdef') <> 'co_'" in UNCLAIMED
