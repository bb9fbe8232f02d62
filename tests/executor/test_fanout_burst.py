"""A routed trade holds the burst gate for all its orders from the start, and gives back exactly what it holds."""

from __future__ import annotations

from typing import Any

import pytest

from services.executor.admission import OrderAdmission
from services.executor.burst_gate import BurstGate
from services.executor.domain import order_lifecycle as lc
from services.executor.domain.order_intake import IntakeRules
from services.executor.domain.ticket import Ticket
from tests.executor.conftest import AcceptingStore, NoRedis, make_order
from tradingtools.execution.v1 import execution_pb2 as epb


class FakeRunner:
    """The part of the runner the fan-out uses; started orders hold a burst slot until answered."""

    def __init__(self) -> None:
        self.burst = BurstGate(5.0, min_pending=32)
        self.started: list[str] = []

    def running(self, client_order_id: str) -> bool:
        return client_order_id in self.started

    def start(self, ticket: Ticket, life: lc.OrderLife, *, notify: bool = False) -> None:
        if life.state is lc.State.SUBMITTING:
            self.burst.add()
        self.started.append(ticket.client_order_id)

    async def refuse(self, tickets: list[Any], *, urgent: bool = False) -> set[str]:
        return set()

    async def resume(self, rows: list[Any]) -> int:
        return 0


class FakeStore(AcceptingStore):
    """Records the gate's pending count at each intent insert; can fail an insert."""

    def __init__(self, runner: FakeRunner, fail_at: int = -1) -> None:
        self.runner = runner
        self.fail_at = fail_at
        self.pending_at_insert: list[int] = []
        self.sizes: list[int] = []

    async def insert_intents(self, items: list[tuple[Ticket, lc.OrderLife]]) -> set[str]:
        self.pending_at_insert.append(self.runner.burst.pending)
        self.sizes.append(len(items))
        if len(self.pending_at_insert) - 1 == self.fail_at:
            raise RuntimeError("insert failed")
        return await super().insert_intents(items)


def routed(n: int, part: int = 0, first: int = 0) -> epb.RoutedTrade:
    return epb.RoutedTrade(orders=[make_order(first + i) for i in range(n)], part=part, parts=max(1, part + 1))


async def test_answers_wait_for_the_whole_trade_not_just_the_chunks_started() -> None:
    runner = FakeRunner()
    store = FakeStore(runner)
    admission = OrderAdmission(runner, store, NoRedis(), IntakeRules(live_configured=True))  # type: ignore[arg-type]
    await admission.handle(routed(100))
    assert len(store.pending_at_insert) == 3  # chunks of 8, 32, 60
    assert all(p >= 100 for p in store.pending_at_insert)  # answers of chunk 1 wait while chunk 3 is inserted
    assert runner.burst.pending == 100  # what is left is held by the started orders themselves
    runner.burst.done(100)
    assert runner.burst.pending == 0


@pytest.mark.parametrize("fail_at", [0, 2])
async def test_a_failed_chunk_gives_back_its_slots(fail_at: int) -> None:
    runner = FakeRunner()
    store = FakeStore(runner, fail_at=fail_at)
    admission = OrderAdmission(runner, store, NoRedis(), IntakeRules(live_configured=True))  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        await admission.handle(routed(100))
    assert runner.burst.pending == len(runner.started)  # only the started orders still hold a slot


# (orders, part, first order's number) of each routed trade: built in the test, since orders built when the tests
# are collected are stale by the time a long run reaches this one (and refused without an INSERT)
@pytest.mark.parametrize(("trades", "sizes"), [
    ([(1000, 0, 0)], [8, 32, 128, 512, 320]),  # the first POSTs leave after a small INSERT
    ([(1000, 1, 0)], [512, 488]),  # a later part: the trade's first POSTs are out already
    ([(1100, 2, 0), (5, 0, 2000)], [512, 512, 76, 5]),  # a part alone, then a trade of its own
    ([(20, 3, 0), (5, 0, 2000)], [25]),  # a small last part and a trade: one INSERT together
])
async def test_chunks_of_an_intent_insert(trades: list[tuple[int, int, int]], sizes: list[int]) -> None:
    runner = FakeRunner()
    store = FakeStore(runner)
    admission = OrderAdmission(runner, store, NoRedis(), IntakeRules(live_configured=True))  # type: ignore[arg-type]
    await admission.handle_batch([routed(n, part=part, first=first) for n, part, first in trades])
    assert store.sizes == sizes
    assert len(runner.started) == sum(n for n, _, _ in trades)
