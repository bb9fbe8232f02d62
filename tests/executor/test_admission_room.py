"""Routed trades wait for room: while ``max_open`` orders are open (running, or placed and tracked), the next
trade is not admitted, so a backlog waits in the routed log instead of in memory; a SELL never waits."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.executor.admission import OrderAdmission
from services.executor.burst_gate import BurstGate
from services.executor.domain import order_lifecycle as lc
from services.executor.domain.order_intake import IntakeRules
from services.executor.domain.ticket import Ticket
from tests.executor.conftest import AcceptingStore, NoRedis, make_order
from tests.helpers import eventually
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb


class FakeRunner:
    """Started orders stay open (``tasks``) until a test ends them; ``tracker`` holds placed ones."""

    def __init__(self) -> None:
        self.burst = BurstGate(5.0, min_pending=32)
        self.tasks: dict[str, object] = {}
        self.tracker: set[str] = set()

    def running(self, client_order_id: str) -> bool:
        return client_order_id in self.tasks or client_order_id in self.tracker

    def start(self, ticket: Ticket, life: lc.OrderLife, *, notify: bool = False) -> None:
        self.tasks[ticket.client_order_id] = object()

    async def refuse(self, tickets: list[Any], *, urgent: bool = False) -> set[str]:
        return set()

    async def resume(self, rows: list[Any]) -> int:
        return 0

    def end(self, n: int) -> None:
        for coid in list(self.tasks)[:n]:
            del self.tasks[coid]


def routed(first: int, n: int) -> epb.RoutedTrade:
    return epb.RoutedTrade(orders=[make_order(i) for i in range(first, first + n)])


def admission(runner: FakeRunner, max_open: int, room_wait_s: float = 10.0) -> OrderAdmission:
    return OrderAdmission(runner, AcceptingStore(), NoRedis(), IntakeRules(live_configured=True),  # type: ignore[arg-type]
                          max_open=max_open, room_wait_s=room_wait_s)


async def test_a_routed_trade_waits_until_fewer_orders_than_the_bound_are_open() -> None:
    runner = FakeRunner()
    adm = admission(runner, max_open=25)
    await adm.handle(routed(0, 20))  # none open: admitted at once (a trade may take it past the bound)
    await adm.handle(routed(20, 20))  # 20 < 25: admitted, 40 open now
    assert len(runner.tasks) == 40 and adm.room_waits == 0
    third = asyncio.create_task(adm.handle(routed(40, 20)))
    await asyncio.sleep(0.1)
    assert not third.done() and len(runner.tasks) == 40 and adm.room_waits == 1
    runner.end(10)  # 30 open: still at or above the bound
    await asyncio.sleep(0.1)
    assert not third.done()
    runner.end(6)  # 24
    await asyncio.wait_for(third, timeout=5)
    assert len(runner.tasks) == 44 and adm.room_timeouts == 0


async def test_placed_orders_the_tracker_polls_count_as_open() -> None:
    runner = FakeRunner()
    runner.tracker.update(f"co_placed{i}" for i in range(30))
    adm = admission(runner, max_open=25)
    waiting = asyncio.create_task(adm.handle_batch([routed(0, 5), routed(5, 5)]))
    await asyncio.sleep(0.1)
    assert not waiting.done() and not runner.tasks
    runner.tracker.clear()
    await asyncio.wait_for(waiting, timeout=5)
    assert len(runner.tasks) == 10


async def test_a_wait_that_runs_out_admits_the_trade_anyway() -> None:
    runner = FakeRunner()
    runner.tracker.update(f"co_placed{i}" for i in range(30))
    adm = admission(runner, max_open=25, room_wait_s=0.1)
    await asyncio.wait_for(adm.handle(routed(0, 5)), timeout=5)
    assert len(runner.tasks) == 5 and adm.room_waits == 1 and adm.room_timeouts == 1


async def test_a_trigger_sell_never_waits_for_room() -> None:
    runner = FakeRunner()
    runner.tracker.update(f"co_placed{i}" for i in range(30))
    adm = admission(runner, max_open=25)
    sell = make_order(99, side=cpb.SIDE_SELL, amount_usd="", size="10", origin=epb.ORDER_ORIGIN_TRIGGER)
    duplicate, _ = await asyncio.wait_for(adm.submit(sell), timeout=5)
    assert not duplicate and sell.client_order_id in runner.tasks and adm.room_waits == 0


@pytest.mark.parametrize("max_open", [0, -1])
async def test_no_bound_never_waits(max_open: int) -> None:
    runner = FakeRunner()
    runner.tracker.update(f"co_placed{i}" for i in range(30))
    adm = admission(runner, max_open=max_open)
    await asyncio.wait_for(adm.handle(routed(0, 5)), timeout=5)
    await eventually(lambda: len(runner.tasks) == 5)
    assert adm.room_waits == 0
