"""Several routed trades admitted together: one intent INSERT, and safe to redo trade by trade after a failure."""

from __future__ import annotations

import time
from typing import Any

import pytest

from services.executor.admission import OrderAdmission
from services.executor.domain import order_lifecycle as lc
from services.executor.domain.order_intake import IntakeRules
from services.executor.domain.ticket import Ticket
from tests.executor.conftest import ASSET, Harness, make_order
from tests.executor.test_fanout_burst import FakeRunner
from tests.helpers import eventually
from tradingtools.execution.v1 import execution_pb2 as epb


class IntentTable:
    """``orders`` as the fan-out sees it: ``ON CONFLICT DO NOTHING`` inserts; can fail chosen inserts."""

    def __init__(self, fail_at: set[int] | None = None) -> None:
        self.rows: set[str] = set()
        self.inserts: list[list[str]] = []
        self.fail_at = fail_at or set()

    async def insert_intents(self, items: list[tuple[Ticket, lc.OrderLife]]) -> set[str]:
        self.inserts.append([t.client_order_id for t, _ in items])
        if len(self.inserts) - 1 in self.fail_at:
            raise RuntimeError("insert failed")
        new = {t.client_order_id for t, _ in items} - self.rows
        self.rows |= new
        return new

    async def order_row(self, client_order_id: str) -> dict[str, Any] | None:
        return None  # resumed orders are not the point here


class Books:
    """Counts book reads (every order here carries a reference price, so a missing book is fine)."""

    def __init__(self) -> None:
        self.reads: list[str] = []

    async def get(self, key: str) -> None:
        self.reads.append(key)
        return None


def trades(n: int, per_trade: int = 1, start: int = 0) -> list[epb.RoutedTrade]:
    return [epb.RoutedTrade(orders=[make_order(start + t * per_trade + i) for i in range(per_trade)])
            for t in range(n)]


async def test_a_batch_of_single_order_trades_is_one_insert_and_one_book_read() -> None:
    runner, table, books = FakeRunner(), IntentTable(), Books()
    admission = OrderAdmission(runner, table, books, IntakeRules(live_configured=True))  # type: ignore[arg-type]
    batch = trades(5)
    await admission.handle_batch(batch)
    assert table.inserts == [[o.client_order_id for rt in batch for o in rt.orders]]
    assert len([k for k in books.reads if k.startswith("tt:book:")]) == 1  # one asset
    assert runner.started == [o.client_order_id for rt in batch for o in rt.orders]  # in stream order
    assert admission.handled_trades == 5
    runner.burst.done(len(runner.started))
    assert runner.burst.pending == 0  # the batch gave back every slot it held


@pytest.mark.parametrize(("orders", "inserts"), [
    (1, [1]),
    (10, [10]),  # a small trade is one INSERT: a second would only add a commit and a wait
    (32, [32]),
    (33, [8, 25]),  # a bigger one sends its first POSTs after a small INSERT, the rest in growing chunks
    (100, [8, 32, 60]),
])
async def test_one_trade_in_a_batch_goes_the_fan_out_way(orders: int, inserts: list[int]) -> None:
    runner, table = FakeRunner(), IntentTable()
    admission = OrderAdmission(runner, table, Books(), IntakeRules(live_configured=True))  # type: ignore[arg-type]
    await admission.handle_batch(trades(1, per_trade=orders))
    assert [len(i) for i in table.inserts] == inserts
    assert sorted(runner.started) == sorted(c for i in table.inserts for c in i)
    assert admission.handled_trades == 1


@pytest.mark.parametrize("fail_at", [0, 1, 2])
async def test_a_failed_batch_redone_trade_by_trade_starts_every_order_exactly_once(fail_at: int) -> None:
    """What the consumer does when ``handle_batch`` raises: each trade again through ``handle``."""
    runner, table = FakeRunner(), IntentTable(fail_at={fail_at})
    admission = OrderAdmission(runner, table, Books(), IntakeRules(live_configured=True))  # type: ignore[arg-type]
    batch = [*trades(3, per_trade=20), *trades(4, start=60)]  # 64 orders: chunks of 8, 32, 24
    with pytest.raises(RuntimeError):
        await admission.handle_batch(batch)
    for rt in batch:
        await admission.handle(rt)
    coids = [o.client_order_id for rt in batch for o in rt.orders]
    assert sorted(runner.started) == sorted(coids)  # none lost, none started twice
    assert table.rows == set(coids)
    assert runner.burst.pending == len(runner.started)  # only started orders hold a burst slot


@pytest.mark.integration
async def test_trades_waiting_in_the_stream_are_admitted_in_batches_each_order_posted_once(harness: Harness) -> None:
    await harness.set_book(ASSET, [("0.49", "100000")], [("0.50", "1000000")])
    orders = [make_order(i) for i in range(40)]
    for o in orders:  # waiting before the executor starts: they arrive faster than one at a time
        await harness.route(o)
    running = await harness.start_executor()
    await eventually(lambda: harness.all_terminal(orders), timeout_s=30)  # type: ignore[arg-type,return-value]
    assert running.consumer.stats.handled == 40
    assert 0 < running.consumer.stats.batches < 40
    assert harness.fake.post_counts() == {o.client_order_id: 1 for o in orders}
    assert {(await harness.terminal(o.client_order_id)).type for o in orders} == {  # type: ignore[union-attr]
        epb.ORDER_EVENT_TYPE_FILLED}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class StoredBooks:
    """``GET tt:book:{asset}`` answers from a dict (the stored JSON)."""

    def __init__(self) -> None:
        self.raw: dict[str, bytes] = {}

    async def get(self, key: str) -> bytes | None:
        return self.raw.get(key)


async def test_the_book_is_read_every_time_and_parsed_again_only_when_it_changed() -> None:
    from decimal import Decimal as D

    from common.marketstate import BookSnapshot, book_key

    stored, now = StoredBooks(), now_ms()
    admission = OrderAdmission(FakeRunner(), IntentTable(), stored, IntakeRules(live_configured=True))  # type: ignore[arg-type]
    first = BookSnapshot(ASSET, "0xc", ((D("0.49"), D("10")),), ((D("0.50"), D("10")),), D("0.01"), 1, now)
    stored.raw[book_key(ASSET)] = first.to_json()
    a = await admission._book(ASSET)
    assert a == first and await admission._book(ASSET) is a  # unchanged: the parsed book is reused
    moved = BookSnapshot(ASSET, "0xc", ((D("0.59"), D("10")),), ((D("0.60"), D("10")),), D("0.01"), 2, now)
    stored.raw[book_key(ASSET)] = moved.to_json()
    assert await admission._book(ASSET) == moved  # a new book is seen at once
    del stored.raw[book_key(ASSET)]
    assert await admission._book(ASSET) is None


class RecordingRunner(FakeRunner):
    def __init__(self) -> None:
        super().__init__()
        self.tickets: list[Ticket] = []

    def start(self, ticket: Ticket, life: lc.OrderLife, *, notify: bool = False) -> None:
        super().start(ticket, life, notify=notify)
        self.tickets.append(ticket)


async def test_orders_are_priced_on_the_book_stored_when_they_arrive() -> None:
    from decimal import Decimal as D

    from common.marketstate import BookSnapshot, book_key

    stored, runner = StoredBooks(), RecordingRunner()
    admission = OrderAdmission(runner, IntentTable(), stored, IntakeRules(live_configured=True))  # type: ignore[arg-type]

    def store_book(ask: str) -> None:
        stored.raw[book_key(ASSET)] = BookSnapshot(ASSET, "0xc", ((D("0.10"), D("1000")),),
                                                   ((D(ask), D("1000")),), D("0.01"), 1, now_ms()).to_json()

    store_book("0.50")
    await admission.handle(trades(1)[0])
    await admission.handle(trades(1, start=1)[0])  # same book: priced from the memo
    store_book("0.60")
    await admission.handle(trades(1, start=2)[0])
    limits = [t.request.limit_price for t in runner.tickets if t.request is not None]
    assert len(limits) == 3 and limits[0] == limits[1] and limits[2] > limits[1]


async def test_a_batch_of_many_orders_is_admitted_in_groups() -> None:
    runner, table = FakeRunner(), IntentTable()
    admission = OrderAdmission(runner, table, Books(), IntakeRules(live_configured=True))  # type: ignore[arg-type]
    batch = [*trades(3, per_trade=400), *trades(2, per_trade=1, start=1200)]  # 1,202 orders
    await admission.handle_batch(batch)
    firsts = [ids[0] for ids in table.inserts if len(ids) == 8]  # each group starts with a chunk of 8
    assert firsts == ["co_test00000", "co_test00800"]  # 800 + 402 orders, not all 1,202 at once
    assert sorted(runner.started) == sorted(o.client_order_id for rt in batch for o in rt.orders)
    assert admission.handled_trades == 5


@pytest.mark.integration
async def test_a_refused_order_is_written_at_once_and_holds_up_no_copy_behind_it(harness: Harness) -> None:
    """Admission waits for a refusal's write, and the routed trades behind it wait for admission: the refusal
    skips the journal's pause between transactions under load (here 30 s) instead of sharing the next one."""
    await harness.set_book(ASSET, [("0.49", "100000")], [("0.50", "1000000")])
    running = await harness.start_executor(TT_TUNE_EXECUTOR_JOURNAL_MIN_INTERVAL_S="30")
    first = make_order(1, leader_trade_id="lt_first")
    await harness.route(first)
    await eventually(lambda: harness.fake.post_counts().get(first.client_order_id) == 1)
    await eventually(lambda: running.journal.stats.commits >= 1)  # the pause now runs from this transaction
    stale = make_order(2, leader_trade_id="lt_stale", routed_time_ns=time.time_ns() - 3_600 * 10**9)
    await harness.route(stale)

    async def stale_taken() -> bool:  # waiting in the journal's queue, or written already
        return running.journal.queue.qsize() > 0 or bool(await harness.events_of(stale.client_order_id))

    await eventually(stale_taken, timeout_s=10)  # type: ignore[arg-type]  # helpers.eventually typing
    behind = make_order(3, leader_trade_id="lt_behind")
    await harness.route(behind)
    await eventually(lambda: harness.fake.post_counts().get(behind.client_order_id) == 1, timeout_s=10)
    rejected = await harness.events_of(stale.client_order_id)
    assert [e.type for e in rejected] == [epb.ORDER_EVENT_TYPE_REJECTED]
    assert rejected[0].reason == "STALE_ORDER"
