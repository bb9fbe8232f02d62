"""Performance rules read a subscription's fills only when the executor booked more of them, and then
only the new ones.

The executor's booking bumps ``subscription_stats.fills_version`` with every booking of a
subscription's fills; guard keeps what the fills add up to by that version, with the snapshot of its
last read, and next reads only the fills that snapshot could not see. Real PostgreSQL, real booking
code, fakes for control and the marks.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from common.storage import create_pool
from services.executor.adapters.fill_store import book
from services.executor.domain.fill_math import Booking
from services.executor.domain.ticket import Ticket
from services.guard.adapters.perf_store import PerfStore
from services.guard.perf_monitor import PerfMonitor
from tests.guard.standins import ASSET, WALLET, WALLET_ID, db, insert_subscription, now
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration

D = Decimal


@dataclass
class FakeControl:
    calls: list[dict[str, Any]] = field(default_factory=list)

    async def apply_perf_action(self, *, subscription_id: str, action: str, multiplier: Decimal | None,
                                reason: str, decision_id: str, decided_under: Any = None) -> bool:
        self.calls.append({"subscription_id": subscription_id, "action": action, "decision_id": decision_id})
        return True


@dataclass
class FixedMarks:
    prices: dict[str, Decimal]
    asked: list[set[str]] = field(default_factory=list)

    async def marks(self, asset_ids: Iterable[str]) -> dict[str, Decimal]:
        wanted = set(asset_ids)
        self.asked.append(wanted)
        return {a: p for a, p in self.prices.items() if a in wanted}

    async def fresh_marks(self, asset_ids: Iterable[str], max_age_ms: int) -> tuple[dict[str, Decimal], set[str]]:
        marks = await self.marks(asset_ids)
        return marks, set(marks)  # every book fresh


async def _book(db_url: str, n: int, side: int, size: str, price: str, sub_id: str = "sub_1") -> None:
    order = epb.Order(client_order_id=f"co_{n}", origin=epb.ORDER_ORIGIN_COPY, subscription_id=sub_id,
                      follower_wallet_id=WALLET_ID, follower_proxy=WALLET, asset_id=ASSET, side=side)
    fill = Booking(f"f_{n}", D(size), D(price), D(size) * D(price), D(0), True, int(time.time() * 1000))
    async with await psycopg.AsyncConnection.connect(db_url, row_factory=dict_row) as conn, conn.transaction():
        await book(conn.cursor(), [(Ticket(order, "PAPER", None, 0), fill)])


async def _monitor(db_url: str, marks: FixedMarks, control: FakeControl | None = None,
                   reads_per_pass: int = 500) -> tuple[PerfMonitor, Any]:
    """A performance monitor on its own pool (returned to be closed)."""
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    await pool.wait()
    return PerfMonitor(PerfStore(pool, now), control or FakeControl(), marks, interval_s=60,
                       unrealized_reads_per_pass=reads_per_pass), pool


async def test_fills_are_read_again_only_after_a_booking(db_url: str) -> None:
    conn = await db(db_url)
    await insert_subscription(conn, "sub_1", perf={"lossStopUsd": "400"})
    await _book(db_url, 1, cpb.SIDE_BUY, "1000", "0.60")
    control, marks = FakeControl(), FixedMarks({ASSET: D("0.45")})
    monitor, pool = await _monitor(db_url, marks, control)
    for _ in range(3):  # unrealized -150: nothing to do, and the fills are read once
        assert await monitor.evaluate_all() == []
    assert (monitor.stats.evaluations, monitor.stats.fill_reads) == (3, 1)
    marks.prices[ASSET] = D("0.30")  # the mark moves: -300, still read from the kept sum
    assert await monitor.evaluate_all() == []
    assert monitor.stats.fill_reads == 1 and marks.asked[-1] == {ASSET}
    await _book(db_url, 2, cpb.SIDE_SELL, "500", "0.20")  # realized -200
    marks.prices[ASSET] = D("0.20")  # unrealized 500 x 0.2 - 300 = -200: -400 in all, the loss stop
    [decision] = await monitor.evaluate_all()
    assert monitor.stats.fill_reads == 2
    assert (decision.pnl.realized, decision.pnl.unrealized) == (D(-200), D(-200))
    assert [c["action"] for c in control.calls] == ["PAUSE"]
    version = await (await conn.execute(
        "SELECT fills_version FROM subscription_stats WHERE subscription_id = 'sub_1'")).fetchone()
    assert version is not None and version["fills_version"] == 2  # one per booking
    await pool.close()
    await conn.close()


async def test_fills_without_a_booking_version_are_read_every_time(db_url: str) -> None:
    """Fills written without the executor's booking (no stats row) are looked for at every pass."""
    conn = await db(db_url)
    await insert_subscription(conn, "sub_1", perf={"lossStopUsd": "400"})
    await conn.execute(
        "INSERT INTO fills (id, subscription_id, follower_wallet_id, order_id, asset_id, side, size, price,"
        " notional_usd, venue, fill_time) VALUES ('f_x', 'sub_1', %s, 'co_x', %s, 'BUY', 1000, 0.6, 600, 'PAPER',"
        " now())", (WALLET_ID, ASSET))
    monitor, pool = await _monitor(db_url, FixedMarks({ASSET: D("0.5")}))
    await monitor.evaluate_all()
    await monitor.evaluate_all()
    assert (monitor.stats.fill_reads, monitor.stats.fills_read) == (2, 1)
    await conn.execute(
        "INSERT INTO fills (id, subscription_id, follower_wallet_id, order_id, asset_id, side, size, price,"
        " notional_usd, venue, fill_time) VALUES ('f_y', 'sub_1', %s, 'co_y', %s, 'SELL', 1000, 0.1, 100, 'PAPER',"
        " now())", (WALLET_ID, ASSET))
    [decision] = await monitor.evaluate_all()  # realized -500 on the one new fill read
    assert decision.pnl.realized == D(-500) and monitor.stats.fills_read == 2
    await pool.close()
    await conn.close()


async def test_a_booking_reads_only_the_fills_it_added(db_url: str) -> None:
    conn = await db(db_url)
    await insert_subscription(conn, "sub_1", perf={"lossStopUsd": "10000"})
    for n in range(1, 21):
        await _book(db_url, n, cpb.SIDE_BUY, "10", "0.50")
    monitor, pool = await _monitor(db_url, FixedMarks({ASSET: D("0.5")}))
    await monitor.evaluate_all()
    assert monitor.stats.fills_read == 20
    await _book(db_url, 21, cpb.SIDE_SELL, "100", "0.60")  # realized 100 x (0.60 - 0.50)
    await monitor.evaluate_all()
    assert (monitor.stats.fill_reads, monitor.stats.fills_read) == (2, 21)
    book = await monitor._holdings("sub_1", None)
    assert book is not None and book.realized == D(10) and book.held[ASSET] == (D(100), D(50))
    await pool.close()
    await conn.close()


async def test_a_fill_whose_transaction_began_first_but_committed_later_is_not_missed(db_url: str) -> None:
    """Transaction A takes its id, B books and commits, guard reads (A's fill not visible yet), then A books
    and commits: the next read finds A's fill although its transaction id is below B's."""
    conn = await db(db_url)
    await insert_subscription(conn, "sub_1", perf={"lossStopUsd": "10000"})
    await _book(db_url, 1, cpb.SIDE_BUY, "100", "0.50")
    monitor, pool = await _monitor(db_url, FixedMarks({ASSET: D("0.5")}))
    await monitor.evaluate_all()
    order = epb.Order(client_order_id="co_late", origin=epb.ORDER_ORIGIN_COPY, subscription_id="sub_1",
                      follower_wallet_id=WALLET_ID, follower_proxy=WALLET, asset_id=ASSET, side=cpb.SIDE_SELL)
    late = Booking("f_late", D(40), D("0.75"), D(30), D(0), True, int(time.time() * 1000))
    async with await psycopg.AsyncConnection.connect(db_url, row_factory=dict_row) as slow, slow.transaction():
        first = await (await slow.execute("SELECT pg_current_xact_id()::text AS x")).fetchone()
        await _book(db_url, 2, cpb.SIDE_BUY, "100", "0.70")  # another transaction, a later id, committed
        await monitor.evaluate_all()
        assert monitor.stats.fills_read == 2
        await book(slow.cursor(), [(Ticket(order, "PAPER", None, 0), late)])
    await monitor.evaluate_all()
    assert monitor.stats.fills_read == 3
    row = await (await conn.execute("SELECT xact::text AS x FROM fills WHERE id = 'f_late'")).fetchone()
    assert first is not None and row is not None and row["x"] == first["x"]
    kept = await monitor._holdings("sub_1", None)
    assert kept is not None
    # 200 shares for 120 (avg 0.60), 40 sold at 0.75: realized 6, 160 shares for 96 left
    assert (kept.realized, kept.held[ASSET]) == (D(6), (D(160), D(96)))
    await pool.close()
    await conn.close()


async def _shown(conn: Any, sub_id: str = "sub_1") -> Decimal:
    row = await (await conn.execute(
        "SELECT unrealized_pnl_usd FROM subscription_stats WHERE subscription_id = %s", (sub_id,))).fetchone()
    assert row is not None
    return Decimal(row["unrealized_pnl_usd"])


async def test_unrealized_pnl_is_written_to_the_stats_of_every_subscription_with_fills(db_url: str) -> None:
    """``stats.unrealizedPnlUsd`` follows the marks for subscriptions with and without perf rules (stopped ones
    too: their shares are still held), is written only when it changed, and is 0 once the position closed."""
    conn = await db(db_url)
    await insert_subscription(conn, "sub_1")  # no perf rules
    await insert_subscription(conn, "sub_2", perf={"lossStopUsd": "10000"}, leader="0x" + "b" * 40)
    await _book(db_url, 1, cpb.SIDE_BUY, "1000", "0.60")
    await _book(db_url, 2, cpb.SIDE_BUY, "100", "0.50", sub_id="sub_2")
    marks = FixedMarks({ASSET: D("0.45")})
    monitor, pool = await _monitor(db_url, marks)
    await monitor.evaluate_all()
    assert await monitor.publish_unrealized() == 2
    assert (await _shown(conn), await _shown(conn, "sub_2")) == (D("-150"), D("-5"))
    assert await monitor.publish_unrealized() == 0  # nothing moved: nothing written
    marks.prices[ASSET] = D("0.52")
    assert await monitor.publish_unrealized() == 2
    assert (await _shown(conn), await _shown(conn, "sub_2")) == (D("-80"), D("2"))
    await _book(db_url, 3, cpb.SIDE_SELL, "1000", "0.52")  # sub_1 closes its position
    await conn.execute("UPDATE subscriptions SET state = 'STOPPED' WHERE id = 'sub_2'")
    marks.prices[ASSET] = D("0.70")
    assert await monitor.publish_unrealized() == 2
    assert (await _shown(conn), await _shown(conn, "sub_2")) == (D(0), D(20))  # stopped, its shares still held
    assert await monitor.publish_unrealized() == 0
    assert monitor.stats.fill_reads == 3  # sub_1 and sub_2 once, sub_1 again after its SELL
    await pool.close()
    await conn.close()


async def test_unrealized_pnl_reads_a_bounded_number_of_subscriptions_per_pass(db_url: str) -> None:
    conn = await db(db_url)
    for n in (1, 2, 3):
        await insert_subscription(conn, f"sub_{n}", leader="0x" + str(n) * 40)
        await _book(db_url, n, cpb.SIDE_BUY, "100", "0.50", sub_id=f"sub_{n}")
    monitor, pool = await _monitor(db_url, FixedMarks({ASSET: D("0.60")}), reads_per_pass=2)
    assert await monitor.publish_unrealized() == 2  # two read; the third waits for the next pass
    assert [await _shown(conn, f"sub_{n}") for n in (1, 2, 3)] == [D(10), D(10), D(0)]
    assert await monitor.publish_unrealized() == 1
    assert await _shown(conn, "sub_3") == D(10)
    assert monitor.stats.fill_reads == 3
    await pool.close()
    await conn.close()


class CountingStore(PerfStore):
    """The real store, counting the batched fill reads."""

    def __init__(self, pool: Any, clock: Any) -> None:
        super().__init__(pool, clock)
        self.batched: list[int] = []

    async def fills_since_many(self, seen: dict[str, str | None]) -> Any:
        self.batched.append(len(seen))
        return await super().fills_since_many(seen)


async def test_a_pass_reads_the_new_fills_of_many_subscriptions_in_one_statement_and_misses_no_late_commit(
        db_url: str) -> None:
    """First reads and later reads share one statement; a fill whose transaction began before another committed
    one is found by the next pass; what is kept adds up to what a read of everything from scratch finds."""
    conn = await db(db_url)
    for n in (1, 2, 3):
        await insert_subscription(conn, f"sub_{n}", leader="0x" + str(n) * 40)
        await _book(db_url, n, cpb.SIDE_BUY, "100", "0.50", sub_id=f"sub_{n}")
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    await pool.wait()
    store = CountingStore(pool, now)
    monitor = PerfMonitor(store, FakeControl(), FixedMarks({ASSET: D("0.60")}), interval_s=60)
    assert await monitor.publish_unrealized() == 3
    assert store.batched == [3]
    await insert_subscription(conn, "sub_4", leader="0x" + "4" * 40)
    order = epb.Order(client_order_id="co_late", origin=epb.ORDER_ORIGIN_COPY, subscription_id="sub_1",
                      follower_wallet_id=WALLET_ID, follower_proxy=WALLET, asset_id=ASSET, side=cpb.SIDE_SELL)
    late = Booking("f_late", D(40), D("0.75"), D(30), D(0), True, int(time.time() * 1000))
    async with await psycopg.AsyncConnection.connect(db_url, row_factory=dict_row) as slow, slow.transaction():
        await slow.execute("SELECT pg_current_xact_id()")
        await _book(db_url, 5, cpb.SIDE_BUY, "100", "0.70", sub_id="sub_2")  # a later id, committed first
        await _book(db_url, 6, cpb.SIDE_BUY, "10", "0.40", sub_id="sub_4")  # a first read
        assert await monitor.publish_unrealized() == 2
        assert store.batched == [3, 2]
        await book(slow.cursor(), [(Ticket(order, "PAPER", None, 0), late)])
    assert await monitor.publish_unrealized() == 1
    assert store.batched == [3, 2, 1]
    assert [await _shown(conn, f"sub_{n}") for n in (1, 2, 3, 4)] == [D(6), D(0), D(10), D(2)]
    fresh = PerfMonitor(PerfStore(pool, now), FakeControl(), FixedMarks({}), interval_s=60)
    for n in (1, 2, 3, 4):
        assert await monitor._holdings(f"sub_{n}", None) == await fresh._holdings(f"sub_{n}", None)
    await pool.close()
    await conn.close()


async def test_a_pass_reads_many_subscriptions_a_few_a_statement_and_keeps_the_same_books(db_url: str) -> None:
    """The fills of a pass's subscriptions are read in parts (the tick loop runs between two), and what is kept is
    what one statement for all of them keeps."""
    conn = await db(db_url)
    for n in (1, 2, 3, 4, 5):
        await insert_subscription(conn, f"sub_{n}", leader="0x" + str(n) * 40)
        await _book(db_url, n, cpb.SIDE_BUY, str(10 * n), "0.50", sub_id=f"sub_{n}")
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    await pool.wait()
    parts, whole = CountingStore(pool, now), CountingStore(pool, now)
    marks = FixedMarks({ASSET: D("0.60")})
    by_parts = PerfMonitor(parts, FakeControl(), marks, interval_s=60, reads_per_statement=2)
    at_once = PerfMonitor(whole, FakeControl(), marks, interval_s=60, reads_per_statement=500)
    assert await by_parts.publish_unrealized() == 5
    assert parts.batched == [2, 2, 1]
    assert await at_once.publish_unrealized() == 0  # the same figures: nothing left to write
    assert whole.batched == [5]
    for n in (1, 2, 3, 4, 5):
        assert await by_parts._holdings(f"sub_{n}", None) == await at_once._holdings(f"sub_{n}", None)
    await pool.close()
    await conn.close()


async def test_rules_changed_between_passes_are_read_again_and_unchanged_ones_are_kept(db_url: str) -> None:
    """The rules of an ACTIVE subscription are parsed once while its perf JSON is unchanged; a changed loss
    stop applies from the next pass, and an unreadable one stops the evaluation without stopping the pass."""
    conn = await db(db_url)
    await insert_subscription(conn, "sub_1", perf={"lossStopUsd": "400"})
    await insert_subscription(conn, "sub_2", perf={"lossStopUsd": "1000"}, leader="0x" + "b" * 40)
    await _book(db_url, 1, cpb.SIDE_BUY, "1000", "0.60")
    control = FakeControl()
    monitor, pool = await _monitor(db_url, FixedMarks({ASSET: D("0.45")}), control)  # sub_1 at -150
    assert await monitor.evaluate_all() == []
    kept = monitor._rules["sub_1"][1]
    assert await monitor.evaluate_all() == []
    assert monitor._rules["sub_1"][1] is kept
    await conn.execute("""UPDATE subscriptions SET perf = '{"lossStopUsd": "not a number"}' WHERE id = 'sub_2'""")
    await conn.execute("""UPDATE subscriptions SET perf = '{"lossStopUsd": "100"}' WHERE id = 'sub_1'""")
    [decision] = await monitor.evaluate_all()
    assert (decision.subscription_id, [c["action"] for c in control.calls]) == ("sub_1", ["PAUSE"])
    assert monitor._rules["sub_2"][1] is None
    await pool.close()
    await conn.close()

