"""A copied SELL is never sized on shares an exit or a manual SELL in flight may still sell.

Guard's exits (take-profit, stop-loss: origin TRIGGER) and manual SELLs (origin MANUAL, the executor's SubmitOrder)
reserve nothing in Redis: the router's SELL index and reservations know only its own copies. Its batch read also
counts, for each wallet and asset a SELL of the batch trades, what the wallet's SELLs in flight that are not copies
may still sell (``order_pending`` open, ``orders`` neither NEW nor terminal, ``size - filled_size``), as the
executor does when it sizes a SELL (``order_sql.SELLABLE_PART``): held back from the wallet's shares and, when the
position keeps a split, from every part (the subscription they sell is not known). The router's copies are counted
from Redis only: counted there too, a copy in flight would be held back twice (the copies it did not send, re-sized
by the executor: ``test_sells_resized_in_flight.py``).

The running router (real PostgreSQL, Redis and gRPC): w_1 follows LEADER (sub_A) and LEADER_B (sub_B); the executor
booked sub_A's 100 shares, and sub_B's 50 when the position is split. LEADER holds 100, LEADER_B 50.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql

from common.decimals import MIN_HELD_SHARES
from common.reservations import WalletReserved, to_micro
from services.executor.adapters.order_sql import UNCLAIMED_SELL
from services.executor.domain.order_lifecycle import TERMINAL
from services.router.adapters.store import PositionAgg, RouterStore
from services.router.adapters.store_sql import LOAD, PLANNER_OPTIONS, TERMINAL_STATES
from services.router.domain.decide import client_order_id
from services.router.read_model import follower_state
from tests.helpers import eventually, plan_nodes
from tests.router.booked import bought
from tests.router.conftest import LEADER, YES, Stack, subscription
from tests.router.load_plans import load_params
from tests.router.test_sell_parts_leftovers import _sold
from tests.router.test_sell_parts_routed import LEADER_B, LEADER_C, _decided, _route, _sql, _start
from tradingtools.execution.v1 import execution_pb2 as epb

D = Decimal
ONLY_A = (subscription("sub_A", "w_1"),)


def _selling(db_url: str, coid: str, size: str | None, *, origin: str = "TRIGGER", state: str = "PLACED",
             filled: str = "0", ended: bool = False, sub: str | None = "sub_A", wallet: str = "w_1",
             asset: str = YES, side: str = "SELL") -> None:
    """An order as the executor keeps it: its row, and pending (``ended``: its end recorded, its reservation's release
    not yet), marked as the executor's insert marks it (``order_sql.UNCLAIMED_SELL``: a SELL the router does not count
    from Redis)."""
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO orders (client_order_id, state, venue, origin, subscription_id, follower_wallet_id,"
                     " asset_id, side, order_type, size, filled_size, order_proto)"
                     " VALUES (%s, %s, 'INSIDERS', %s, %s, %s, %s, %s, 'FAK', %s, %s, '')",
                     (coid, state, origin, sub, wallet, asset, side, size, filled))
        conn.execute("INSERT INTO order_pending (client_order_id, follower_wallet_id, asset_id, terminal_at,"
                     " unclaimed_sell) SELECT client_order_id, follower_wallet_id, asset_id,"
                     f" CASE WHEN %s THEN now() END, {UNCLAIMED_SELL} FROM orders WHERE client_order_id = %s",
                     (ended, coid))


# --- the running router: a position sized on the wallet's shares (no split) -----------------------------------------

# (orders of w_1 besides sub_A's BUY of 100: coid, size, _selling's keywords) -> sub_A's copy of LEADER's SELL of 50 of
# its 100 (half), or the skip's reason
UNSPLIT = [
    pytest.param([("ex_1", "60", {})], "20", id="an exit of 60 in flight: half of the 40 it leaves"),
    pytest.param([("ex_1", "60", {"state": "SUBMITTING"})], "20", id="an exit being posted"),
    pytest.param([("ex_1", "60", {"state": "UNKNOWN"})], "20", id="an exit whose post had no answer"),
    pytest.param([("man_1", "60", {"origin": "MANUAL", "sub": None})], "20", id="a manual SELL counts as an exit"),
    pytest.param([("ex_1", "30", {}), ("man_1", "30", {"origin": "MANUAL", "sub": None})], "20",
                 id="an exit and a manual SELL add up"),
    pytest.param([("ex_1", "60", {"state": "FILLED"})], "50", id="a terminal exit counts nothing"),
    pytest.param([("ex_1", "60", {"state": "CANCELLED"})], "50", id="a cancelled exit"),
    pytest.param([("ex_1", "60", {"ended": True})], "50", id="an exit whose end is recorded counts nothing"),
    pytest.param([("ex_1", "60", {"state": "NEW"})], "50", id="an exit not sent yet (NEW) counts nothing"),
    pytest.param([("ex_1", None, {})], "50", id="a SELL with no size yet counts nothing"),
    pytest.param([("ex_1", "60", {"asset": "999"})], "50", id="an exit of another asset"),
    pytest.param([("ex_1", "60", {"wallet": "w_2"})], "50", id="an exit of another wallet"),
    pytest.param([("ex_1", "100", {})], "NOTHING_HELD", id="an exit of all of it: nothing left to sell"),
    pytest.param([("lost_1", "60", {"state": "LOST", "ended": True})], "20",
                 id="a SELL ended LOST may have sold: counted until the venue's count is read"),
    pytest.param([("lost_1", "60", {"state": "LOST", "ended": True, "origin": "COPY"})], "20",
                 id="a copy ended LOST too (its claim released)"),
]


@pytest.mark.integration
@pytest.mark.parametrize(("orders", "expected"), UNSPLIT)
async def test_a_copy_is_sized_on_what_the_exits_in_flight_leave(stack: Stack, orders: list[tuple[str, str | None,
                                                                 dict[str, Any]]], expected: str) -> None:
    await _start(stack, b_bought=False, subs=ONLY_A)
    for coid, size, kw in orders:
        _selling(stack.db_url, coid, size, **kw)
    routed = await _route(stack, "lt_a_half", LEADER, "50")
    assert _decided(routed) == [("sub_A", expected)]


@pytest.mark.integration
@pytest.mark.parametrize(("reconciled_after_s", "expected"), [(3, "20"), (11, "50")])
async def test_a_lost_sell_counts_until_a_reconciliation_read_the_venue_after_it(
        stack: Stack, reconciled_after_s: int, expected: str) -> None:
    """Read too soon after the LOST (the sale may not be on-chain yet), the venue's count does not clear it."""
    await _start(stack, b_bought=False, subs=ONLY_A)
    _selling(stack.db_url, "lost_1", "60", state="LOST", ended=True)
    _sql(stack.db_url, f"UPDATE positions SET reconciled_at = (SELECT terminal_at FROM lost_sells)"
                       f" + interval '{reconciled_after_s} s' RETURNING 1")
    routed = await _route(stack, "lt_a_half", LEADER, "50")
    assert _decided(routed) == [("sub_A", expected)]


@pytest.mark.integration
async def test_a_partly_filled_exit_counts_only_what_it_may_still_sell(stack: Stack) -> None:
    """The exit of 60 filled 30: the position fell to 70 with the fill (booked in one transaction with the order's
    filled_size); the 30 still to sell are held back, the 30 sold not twice."""
    await _start(stack, b_bought=False, subs=ONLY_A)
    _selling(stack.db_url, "ex_1", "60", state="PARTIALLY_FILLED", filled="30")
    await _sold(stack.db_url, "ex_1", "sub_A", epb.ORDER_ORIGIN_TRIGGER, "30")
    assert _sql(stack.db_url, "SELECT size FROM positions") == [(D(70),)]
    routed = await _route(stack, "lt_a_half", LEADER, "50")
    assert _decided(routed) == [("sub_A", "20")]  # half of 70 - 30 (35 before: the exit was not seen)


@pytest.mark.integration
async def test_nothing_left_the_skip_names_what_the_exits_are_selling(stack: Stack) -> None:
    await _start(stack, b_bought=False, subs=ONLY_A)
    _selling(stack.db_url, "ex_1", "70")
    _selling(stack.db_url, "man_1", "30", origin="MANUAL", sub=None)
    routed = await _route(stack, "lt_a_half", LEADER, "50")
    assert _decided(routed) == [("sub_A", "NOTHING_HELD")]
    assert routed.skips[0].detail == "follower holds 100 shares (100 already being sold)"


@pytest.mark.integration
@pytest.mark.parametrize(("exit_size", "expected"), [(None, "25"), ("20", "15")])
async def test_the_routers_own_copy_in_flight_is_counted_once(stack: Stack, exit_size: str | None,
                                                              expected: str) -> None:
    """Leader A sells half: sub_A's copy of 50 reserves its shares in Redis (and is indexed there); the executor keeps
    it in order_pending too, placed, unfilled. Leader A sells half of the 50 left: half of the 50 that copy leaves
    (less an exit's 20 when one is in flight too), never held back a second time from PostgreSQL (0 left)."""
    await _start(stack, b_bought=False, subs=ONLY_A)
    first = await _route(stack, "lt_a_half", LEADER, "50")
    assert _decided(first) == [("sub_A", "50")]
    _selling(stack.db_url, first.orders[0].client_order_id, "50", origin="COPY")
    if exit_size is not None:
        _selling(stack.db_url, "ex_1", exit_size)
    await eventually(lambda: _sql(stack.db_url, "SELECT size FROM leader_positions WHERE leader_wallet = %s",
                                  LEADER) == [(D(50),)])
    second = await _route(stack, "lt_a_quarter", LEADER, "25")
    assert _decided(second) == [("sub_A", expected)]


# --- the running router: a position several subscriptions bought (a split kept) ------------------------------------

@pytest.mark.integration
@pytest.mark.parametrize(("third", "exit_size", "closing", "expected", "detail"), [
    # sub_A's exit of 120 may take all but 30 of the wallet's 150: sub_B's close never sells more than what it leaves
    (False, "120", LEADER_B, ("sub_B", "NOTHING_HELD"),
     "subscription holds 50 of the follower's 150 shares (120 already being sold)"),
    # with a third part (sub_C's 50), sized on its own 50 sub_B's close took 20 of sub_C's shares
    (True, "120", LEADER_B, ("sub_B", "NOTHING_HELD"),
     "subscription holds 50 of the follower's 200 shares (120 already being sold)"),
    (True, "20", LEADER_B, ("sub_B", "30"), ""),  # the exit's 20 may come off sub_B's part: 30 of it surely left
    (False, "20", LEADER, ("sub_A", "80"), ""),  # whoever's subscription the exit is of, it counts against every part
])
async def test_an_exit_in_flight_is_held_back_from_every_part(stack: Stack, third: bool, exit_size: str, closing: str,
                                                              expected: tuple[str, str], detail: str) -> None:
    subs = (subscription("sub_A", "w_1"), subscription("sub_B", "w_1", leader=LEADER_B),
            subscription("sub_C", "w_1", leader=LEADER_C))
    await _start(stack, subs=subs)
    if third:
        await bought(stack.db_url, "co_buy_c", "sub_C", "50", "0.5")
    _selling(stack.db_url, "ex_a", exit_size, sub="sub_A")
    routed = await _route(stack, "lt_close", closing, "100" if closing == LEADER else "50")
    assert _decided(routed) == [expected]
    if detail:
        assert routed.skips[0].detail == detail


# --- PostgreSQL: the batch read -----------------------------------------------------------------------------------

@pytest.mark.integration
async def test_load_batch_reads_the_wallets_exits_in_flight_of_the_sell_assets(store: RouterStore,
                                                                               db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, wallet, size, cost_usd) VALUES"
                     " ('w_1', '111', '0xa', 100, 40), ('w_1', '222', '0xa', 100, 40), ('w_2', '111', '0xa', 50, 20),"
                     " ('w_3', '111', '0xa', %s, 0)", (MIN_HELD_SHARES / 2,))
    _selling(db_url, "ex_1", "60", asset="111", filled="15", state="PARTIALLY_FILLED")
    _selling(db_url, "man_1", "10", asset="111", origin="MANUAL", sub=None)
    _selling(db_url, client_order_id("lt_1", "w_1", "111"), "20", asset="111", origin="COPY")  # the router's own:
    # counted from Redis
    _selling(db_url, "ex_2", "60", asset="222")  # not a SELL's asset of the batch
    _selling(db_url, "ex_3", "5", asset="111", wallet="w_3")  # nothing held: no lookup
    _selling(db_url, "buy_1", "5", asset="111", wallet="w_2", side="BUY", origin="MANUAL")
    kw: dict[str, Any] = dict(leader_trade_ids=["lt_x"], wallets=["w_1", "w_2", "w_3"], markets=["0xc"],
                              assets=["111", "222"], leader_assets=[], pnl_day_ms=None, funding_wallets=[])
    got = await store.load_batch(**kw, sell_assets=["111"])
    assert got.exiting == {("w_1", "111"): D(55)}
    assert got.position("w_1", "0xc", "111").asset_exiting == D(55)
    assert got.position("w_1", "0xc", "222").asset_exiting == D(0)
    assert got.position("w_2", "0xc", "111").asset_exiting == D(0)
    assert (await store.load_batch(**kw, sell_assets=[])).exiting == {}  # a batch of BUYs looks up none


@pytest.mark.integration
@pytest.mark.parametrize("options", ["", PLANNER_OPTIONS])
@pytest.mark.parametrize("generic", [True, False], ids=["generic plan", "custom plan"])
async def test_the_exits_are_looked_up_by_key_in_a_grown_order_pending(db_url: str, options: str,
                                                                       generic: bool) -> None:
    """20,000 pending orders, as the executor marks them, and as many order rows, analyzed: 9,900 of the router's own
    copies open (SELLs and BUYs, 2,000 of the SELL's asset), 100 exits open (2 of the SELL's asset), 10,000 exits ended.
    The batch read reaches order_pending only through the index of the open rows it counts (order_pending_unclaimed),
    by the batch's wallets, and the order of each by key: the copies' orders are never read (with or without the
    router's settings; the plan the routing connection caches, and one made for the values)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, wallet, size)"
                     " SELECT 'w_' || g, '111', '0xa', 10 FROM generate_series(1, 2000) g")
        conn.execute("INSERT INTO orders (client_order_id, state, venue, origin, follower_wallet_id, asset_id, side,"
                     " order_type, size, order_proto)"
                     " SELECT CASE WHEN g <= 100 OR g > 10000 THEN 'ex_' || g ELSE 'co_' || md5(g::text) END,"
                     " CASE WHEN g > 10000 THEN 'FILLED' ELSE 'PLACED' END, 'INSIDERS',"
                     " CASE WHEN g <= 100 OR g > 10000 THEN 'TRIGGER' ELSE 'COPY' END, 'w_' || (g % 2000),"
                     " CASE WHEN g % 5 = 0 THEN '111' ELSE 'a_' || (g % 50) END,"
                     " CASE WHEN g % 3 = 0 AND g > 100 AND g <= 10000 THEN 'BUY' ELSE 'SELL' END, 'FAK', 1, ''"
                     " FROM generate_series(1, 20000) g")
        conn.execute("INSERT INTO order_pending (client_order_id, follower_wallet_id, asset_id, terminal_at,"
                     f" unclaimed_sell) SELECT client_order_id, follower_wallet_id, asset_id,"
                     f" CASE WHEN state = 'FILLED' THEN now() END, {UNCLAIMED_SELL} FROM orders")
        conn.execute("ANALYZE positions, orders, order_pending")
        assert conn.execute("SELECT count(*) FILTER (WHERE unclaimed_sell AND terminal_at IS NULL),"
                            " count(*) FILTER (WHERE NOT unclaimed_sell AND terminal_at IS NULL AND asset_id = '111')"
                            " FROM order_pending").fetchone() == (100, 1980)
    params = await load_params(wallets=["w_1", "w_2"], markets=["0xc"], assets=["111"], sell_assets=["111"])
    plan = _plan(db_url, LOAD, params, options, generic=generic)
    nodes = plan_nodes(plan)
    indexes = {n["Index Name"] for n in nodes if n.get("Index Name", "").startswith("order")}
    assert indexes == {"order_pending_unclaimed", "orders_pkey"}  # (an index scan, or a bitmap of it)
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan" and n["Relation Name"] in ("order_pending", "orders")]


def _plan(db_url: str, sql: str, params: dict[str, Any], options: str, *, generic: bool) -> dict[str, Any]:
    """``EXPLAIN (FORMAT JSON)`` of ``sql``'s plan: ``generic``, the plan the router's connection prepares and caches
    (force_generic_plan: prepared, then explained as executed), else one made for the values."""
    with psycopg.connect(db_url, options=options, autocommit=True) as conn:
        conn.execute("SET plan_cache_mode = force_generic_plan")
        if not generic:
            row = conn.execute("EXPLAIN (FORMAT JSON) " + sql, params).fetchone()
        else:
            names: list[str] = []
            for name in re.findall(r"%\((\w+)\)s", sql):
                if name not in names:
                    names.append(name)
            text = re.sub(r"%\((\w+)\)s", lambda m: f"${names.index(m.group(1)) + 1}", sql)
            conn.execute("PREPARE load_x AS " + text)
            row = conn.execute(pgsql.SQL("EXPLAIN (FORMAT JSON) EXECUTE load_x({})").format(
                pgsql.SQL(", ").join(pgsql.Literal(params[n]) for n in names))).fetchone()
    assert row is not None
    return row[0][0]["Plan"]


def test_the_routers_terminal_states_are_the_executors() -> None:
    assert {s.strip(" '") for s in TERMINAL_STATES.strip("()").split(",")} == {s.value for s in TERMINAL}


# --- pure: the follower's state ---------------------------------------------------------------------

@pytest.mark.parametrize(("reserved", "sells", "exiting", "expected"), [
    ("0", [], "0", D(0)),
    ("0", [], "60", D(60)),  # exits only
    ("50", [("50", "0")], "20", D(70)),  # the router's copy of 50 and an exit's 20
    ("50", [("50", "50")], "20", D(20)),  # the copy filled (its release pending): the exit's 20 alone
    ("50", [], "20", D(70)),  # a reservation not known by id is kept whole
])
def test_follower_state_adds_the_exits_to_the_sells_in_flight(reserved: str, sells: list[tuple[str, str]],
                                                              exiting: str, expected: Decimal) -> None:
    res = WalletReserved(asset_shares_micro=to_micro(D(reserved)))
    st = follower_state(PositionAgg(asset_size=D(100), asset_exiting=D(exiting)), res, D(0), None,
                        [(D(own), D(filled)) for own, filled in sells])
    assert st.reserved_sell_size == expected
    assert st.selling_by is None  # not known by subscription: held back from every part
