"""Routed trades a Redis restart or failover lost (acknowledged appends not yet on disk or on the replica) are
appended again from PostgreSQL, without the orders the executor already admitted."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
import pytest

from common.routed import parse_routed
from common.streams import ROUTED_TRADES
from services.router.adapters.redis_state import marker_key
from services.router.relog import Relog, unadmitted
from tests.helpers import eventually
from tests.router.conftest import Stack, leader_trade, subscription
from tradingtools.execution.v1 import execution_pb2 as epb


def _routed(*coids: str) -> epb.RoutedTrade:
    routed = epb.RoutedTrade(trade=leader_trade("lt_x"))
    routed.orders.extend(epb.Order(client_order_id=c) for c in coids)
    routed.skips.add(subscription_id="sub_s", reason="PRICE_ABOVE_MAX")
    return routed


@pytest.mark.parametrize(
    ("orders", "admitted", "kept"),
    [(("a", "b"), set(), ["a", "b"]), (("a", "b"), {"a"}, ["b"]), (("a", "b"), {"a", "b", "c"}, None),
     ((), set(), None)],
)
def test_unadmitted_keeps_the_orders_the_executor_never_saw(orders: tuple[str, ...], admitted: set[str],
                                                            kept: list[str] | None) -> None:
    out = unadmitted(_routed(*orders), admitted)
    if kept is None:
        assert out is None
        return
    assert out is not None and [o.client_order_id for o in out.orders] == kept
    assert out.trade.id == "lt_x" and len(out.skips) == 1  # the rest of the trade is kept as it was


class _Rows:
    def __init__(self, rows: list[tuple[str, str]], payloads: dict[str, bytes]) -> None:
        self.rows, self.payload_of = rows, payloads
        self.recorded: list[tuple[str, str]] = []

    async def appended_since(self, window_s: float) -> list[tuple[str, str]]:
        return self.rows

    async def payloads(self, leader_trade_ids: Sequence[str]) -> dict[str, bytes]:
        return {lt: self.payload_of[lt] for lt in leader_trade_ids}

    async def admitted(self, client_order_ids: Sequence[str]) -> set[str]:
        return set()

    async def reappended(self, items: Sequence[tuple[str, str]]) -> None:
        self.recorded += items


class _Log:
    def __init__(self) -> None:
        self.server, self.entries = "run-1", {"1-0"}

    async def present(self, cursors: Sequence[str]) -> list[bool]:
        return [c in self.entries for c in cursors]

    async def server_id(self) -> str:
        return self.server


class _Emitter:
    def __init__(self, log: _Log) -> None:
        self.log, self.emitted = log, []  # type: ignore[var-annotated]

    async def emit(self, lt: str, routed: epb.RoutedTrade, payload: bytes, *, mark: bool = True) -> Any:
        cursor = f"{9 + len(self.emitted)}-0"
        self.emitted.append(lt)
        self.log.entries.add(cursor)
        return type("Emitted", (), {"cursor": cursor, "appended_now": True, "routed": routed})()


async def test_the_check_runs_at_the_first_call_and_again_only_when_the_redis_server_changed() -> None:
    log = _Log()
    rows = _Rows([("lt_1", "1-0"), ("lt_2", "2-0")], {"lt_2": _routed("co_2").SerializeToString()})
    emitter = _Emitter(log)
    relog = Relog(rows, log, emitter)  # type: ignore[arg-type]
    assert await relog.check() == 1  # lt_2's entry is missing from the log
    assert emitter.emitted == ["lt_2"] and rows.recorded == [("lt_2", "9-0")]
    rows.rows = [("lt_1", "1-0"), ("lt_2", "2-0"), ("lt_3", "3-0")]  # lt_3 lost too, but the server is the same
    rows.payload_of["lt_3"] = _routed("co_3").SerializeToString()
    assert await relog.check() == 0 and emitter.emitted == ["lt_2"]
    log.server = "run-2"  # Redis restarted (or failed over): it may have come back with an older state
    assert await relog.check() == 2  # lt_2's first cursor is still the one in these rows: appended again too
    assert emitter.emitted == ["lt_2", "lt_2", "lt_3"]


def _admit(db_url: str, coid: str) -> None:
    """What the executor records when it admits an order: an intent row."""
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO orders (client_order_id, state, venue, origin, follower_wallet_id, asset_id, side, "
                     "order_type, order_proto) VALUES (%s, 'SUBMITTING', 'INSIDERS', 'router', 'w_0', 'a', 'BUY', "
                     "'FAK', '\\x00')", (coid,))


def _cursors(db_url: str) -> dict[str, str]:
    with psycopg.connect(db_url) as conn:
        return dict(conn.execute("SELECT leader_trade_id, appended_cursor FROM routed_trades").fetchall())


@pytest.mark.integration
async def test_a_restarted_router_appends_again_what_redis_lost_without_what_the_executor_admitted(
        stack: Stack) -> None:
    await stack.add(subscription("sub_0", "w_0"), subscription("sub_1", "w_1"))
    await stack.start_router()
    await stack.publish(*(leader_trade(t) for t in ("lt_1", "lt_2", "lt_3")))
    first = await eventually(lambda: _all_routed(stack, 3), timeout_s=20, message="three trades routed")
    await stack.stop_router()
    entries = {r.trade.id: (cursor, r) for cursor, r in first}
    # Redis comes back without its last two appends (its markers, claims and entries): a crash before its
    # fsync, or a failover to a replica that had not received them. The executor had admitted one order.
    for lt in ("lt_2", "lt_3"):
        cursor, routed = entries[lt]
        await stack.redis.xdel(ROUTED_TRADES, cursor)
        await stack.redis.delete(marker_key(lt), *(f"tt:order:{o.client_order_id}" for o in routed.orders))
    admitted = entries["lt_2"][1].orders[0].client_order_id
    _admit(stack.db_url, admitted)

    await stack.start_router()
    after = await eventually(lambda: _all_routed(stack, 3), timeout_s=20, message="the lost trades appended again")
    restored = {r.trade.id: [o.client_order_id for o in r.orders] for _c, r in after}
    assert restored["lt_1"] == [o.client_order_id for o in entries["lt_1"][1].orders]  # never lost: not again
    assert restored["lt_2"] == [o.client_order_id for o in entries["lt_2"][1].orders if o.client_order_id != admitted]
    assert restored["lt_3"] == [o.client_order_id for o in entries["lt_3"][1].orders]
    assert _cursors(stack.db_url) == {r.trade.id: c for c, r in after}  # the new cursors are recorded
    for lt in ("lt_2", "lt_3"):  # claimed and reserved again, as at the first emit
        assert await stack.redis.exists(marker_key(lt))
        assert all([await stack.redis.exists(f"tt:order:{c}") for c in restored[lt]])
    assert not await stack.redis.exists(f"tt:order:{admitted}")

    await stack.stop_router()
    await stack.start_router()  # nothing is missing any more: nothing is appended again
    assert len(await stack.routed()) == 3  # lt_1's first entry, lt_2's and lt_3's new ones


async def _all_routed(stack: Stack, n: int) -> list[tuple[str, epb.RoutedTrade]]:
    """The log's newest entry per leader trade, once ``n`` trades have one."""
    newest: dict[str, tuple[str, epb.RoutedTrade]] = {}
    for cursor, payload in await stack.routed_log.read("0-0", count=100_000, block_ms=0):
        routed = parse_routed(payload)
        newest[routed.trade.id] = (cursor, routed)
    return list(newest.values()) if len(newest) >= n else []
