"""Risen trailing marks are written in small statements with pauses between them, and none is lost when a
flush fails or is stopped half-way."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal

import pytest

from services.guard.mark_flush import MarkFlusher, Marks, pause_after

D = Decimal


class FakeStore:
    """Records each statement's marks; fails the statements numbered in ``fail_at`` (1-based)."""

    def __init__(self, clock: FakeClock, busy_s: float = 0.004, fail_at: tuple[int, ...] = ()) -> None:
        self.clock = clock
        self.busy_s = busy_s
        self.fail_at = fail_at
        self.statements: list[list[tuple[str, Decimal]]] = []
        self.calls = 0

    async def save_marks(self, marks: Marks) -> None:
        self.calls += 1
        self.clock.now += self.busy_s
        if self.calls in self.fail_at:
            raise ConnectionError("PostgreSQL unavailable")
        self.statements.append([(tid, mark) for mark, ids in marks for tid in ids])

    def written(self) -> dict[str, Decimal]:
        return {tid: mark for part in self.statements for tid, mark in part}


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.pauses: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


def rising(n: int, price: str = "0.5") -> list[tuple[Decimal, list[str]]]:
    return [(D(price), [f"trg_{i:05d}" for i in range(n)])]


def flusher(marks: list[list[tuple[Decimal, list[str]]]], store: FakeStore, clock: FakeClock, *, rows: int = 200,
            duty: float = 0.25) -> MarkFlusher:
    """A flusher whose engine hands out ``marks[0]`` (as one book) at the first take, ``marks[1]`` at the
    second, ..."""
    takes = iter(marks)
    return MarkFlusher(lambda: [next(takes, [])], store, rows=rows, duty=duty, sleep=clock.sleep, clock=clock)


@pytest.mark.parametrize(("busy_s", "duty", "pause_s"), [
    (0.004, 0.25, 0.012),  # writing a quarter of the time
    (0.004, 0.5, 0.004),
    (0.004, 1.0, 0.0),  # no pacing
    (0.0, 0.25, 0.0),
    (-0.001, 0.25, 0.0),  # a clock that stepped back never asks for a negative pause
])
def test_pause_after(busy_s: float, duty: float, pause_s: float) -> None:
    assert pause_after(busy_s, duty) == pytest.approx(pause_s)


async def test_a_burst_goes_out_in_small_statements_ordered_by_id_with_pauses_between() -> None:
    clock = FakeClock()
    store = FakeStore(clock)
    ids = [f"trg_{i:05d}" for i in range(450)]
    marks = [(D("0.6"), ids[300:]), (D("0.5"), ids[:300])]  # the engine's groups come in any order
    f = flusher([marks], store, clock, rows=200, duty=0.25)
    assert await f.flush() == 450
    assert [len(s) for s in store.statements] == [200, 200, 50]
    for statement in store.statements:  # one lock order for every writer
        assert [tid for tid, _m in statement] == sorted(tid for tid, _m in statement)
    assert clock.pauses == [pytest.approx(0.012), pytest.approx(0.012)]  # none after the last statement
    assert store.written() == {**{t: D("0.5") for t in ids[:300]}, **{t: D("0.6") for t in ids[300:]}}
    assert await f.flush() == 0 and store.calls == 3  # nothing rose since


async def test_an_unpaced_flush_writes_everything_without_pausing() -> None:
    clock = FakeClock()
    store = FakeStore(clock)
    f = flusher([rising(450)], store, clock, rows=200, duty=0.25)
    assert await f.flush(paced=False) == 450
    assert len(store.statements) == 3 and clock.pauses == []


async def test_a_failed_statement_keeps_what_it_and_the_rest_did_not_write_for_the_next_flush() -> None:
    clock = FakeClock()
    store = FakeStore(clock, fail_at=(2,))
    f = flusher([rising(450), [(D("0.7"), ["trg_00250"]), (D("0.1"), ["trg_00300"])]], store, clock, rows=200)
    with pytest.raises(ConnectionError):
        await f.flush()
    assert len(store.written()) == 200  # the first statement stands
    assert await f.flush() == 250  # the failed part and the one after it, once each
    written = store.written()
    assert len(written) == 450
    assert written["trg_00250"] == D("0.7")  # risen again meanwhile: the higher mark is written
    assert written["trg_00300"] == D("0.5")  # a lower mark taken meanwhile never lowers one kept


async def test_a_flush_stopped_during_a_pause_leaves_the_rest_to_the_final_flush() -> None:
    clock = FakeClock()
    store = FakeStore(clock)
    paused = asyncio.Event()

    async def stalled_sleep(seconds: float) -> None:
        paused.set()
        await asyncio.sleep(3600)

    f = MarkFlusher(lambda: [rising(450)] if not store.calls else [], store, rows=200, sleep=stalled_sleep,
                    clock=clock)
    task = asyncio.create_task(f.flush())
    await paused.wait()
    task.cancel()  # shutdown stops the periodic task
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await f.flush(paced=False) == 250
    assert len(store.written()) == 450


def books(n_books: int, per_book: int) -> list[list[tuple[Decimal, list[str]]]]:
    return [[(D("0.5"), [f"trg_{b:04d}_{k}" for k in range(per_book)])] for b in range(n_books)]


async def test_a_big_take_lets_the_loop_run_between_books() -> None:
    clock = FakeClock()
    store = FakeStore(clock)
    f = MarkFlusher(lambda: books(100, 50), store, rows=200, sleep=clock.sleep, clock=clock)
    assert await f.flush(paced=False) == 5000 and clock.pauses == []  # shutdown: at once
    f = MarkFlusher(lambda: books(100, 50), store, rows=200, sleep=clock.sleep, clock=clock)
    assert await f.flush() == 5000
    assert clock.pauses.count(0) == 5  # one turn of the loop every 1,000 marks taken


async def test_a_flush_stopped_while_taking_keeps_the_books_not_taken_yet() -> None:
    clock = FakeClock()
    store = FakeStore(clock)
    taken: list[int] = []

    def take() -> Iterator[list[tuple[Decimal, list[str]]]]:
        for i, book in enumerate(books(100, 50)):
            taken.append(i)
            yield book

    async def cancelled_sleep(seconds: float) -> None:
        raise asyncio.CancelledError

    f = MarkFlusher(take, store, rows=200, sleep=cancelled_sleep, clock=clock)
    with pytest.raises(asyncio.CancelledError):
        await f.flush()
    assert len(taken) == 100 and store.calls == 0  # the engine's dirty books are all out of it
    f.sleep = clock.sleep
    assert await f.flush(paced=False) == 5000


@pytest.mark.parametrize(("rows", "duty"), [(0, 0.25), (200, 0.0), (200, 1.5)])
def test_bad_limits_are_refused(rows: int, duty: float) -> None:
    with pytest.raises(ValueError, match="rows must be"):
        MarkFlusher(list, FakeStore(FakeClock()), rows=rows, duty=duty)


async def test_a_flush_asked_for_while_another_writes_returns_once_that_one_wrote_too() -> None:
    """The periodic flush took the marks and waits for PostgreSQL; a flush asked for meanwhile (shutdown's last, a
    caller that reads the rows next) found nothing left to take and returned at once, before those marks were
    written."""
    clock = FakeClock()
    store = FakeStore(clock)
    release = asyncio.Event()
    saving = asyncio.Event()

    async def slow_save(marks: Marks) -> None:
        saving.set()
        await release.wait()
        store.statements.append([(tid, mark) for mark, ids in marks for tid in ids])

    store.save_marks = slow_save  # type: ignore[method-assign]
    f = flusher([rising(3), []], store, clock)
    periodic = asyncio.create_task(f.flush())
    await saving.wait()
    asked = asyncio.create_task(f.flush())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not asked.done()  # waits for the write under way
    release.set()
    await asyncio.gather(periodic, asked)
    assert len(store.written()) == 3


class Positions:
    """The tick feed's cursor as the flusher reads it, and the cursors it reported saved."""

    def __init__(self) -> None:
        self.cursor = "1-0"
        self.saved: list[str] = []
        self.fail = False

    def position(self) -> str:
        return self.cursor

    async def on_saved(self, cursor: str) -> None:
        if self.fail:
            raise ConnectionError("Redis unavailable")
        self.saved.append(cursor)


def tracked(marks: list[list[tuple[Decimal, list[str]]]], store: FakeStore, clock: FakeClock,
            positions: Positions) -> MarkFlusher:
    """:func:`flusher` telling ``positions`` how far every mark is saved; the feed moves on while each book is
    taken (a tick read after the take began)."""
    takes = iter(marks)

    def take() -> list[list[tuple[Decimal, list[str]]]]:
        positions.cursor = f"{int(positions.cursor.split('-')[0]) + 1}-0"
        return [next(takes, [])]

    return MarkFlusher(take, store, rows=200, sleep=clock.sleep, clock=clock, position=positions.position,
                       on_saved=positions.on_saved)


async def test_a_complete_flush_reports_the_cursor_read_when_it_took_the_marks() -> None:
    clock, positions = FakeClock(), Positions()
    store = FakeStore(clock)
    f = tracked([rising(450), []], store, clock, positions)
    assert await f.flush() == 450
    assert positions.saved == ["1-0"]  # not the cursor the feed reached while the flush ran
    assert await f.flush() == 0  # nothing rose: everything up to the cursor is saved still
    assert positions.saved == ["1-0", "2-0"]


async def test_a_failed_flush_reports_nothing_until_a_later_one_wrote_what_it_left() -> None:
    clock, positions = FakeClock(), Positions()
    store = FakeStore(clock, fail_at=(2,))
    f = tracked([rising(450), []], store, clock, positions)
    with pytest.raises(ConnectionError):
        await f.flush()
    assert positions.saved == []
    assert await f.flush() == 250
    assert positions.saved == ["2-0"]


async def test_marks_kept_from_outside_the_engine_are_written_and_a_failed_report_is_only_logged() -> None:
    clock, positions = FakeClock(), Positions()
    store = FakeStore(clock)
    f = tracked([[]], store, clock, positions)
    f.keep({"trg_a": D("0.6"), "trg_b": D("0.4")})
    f.keep({"trg_a": D("0.5")})  # the higher stays
    positions.fail = True
    assert await f.flush() == 2
    assert store.written() == {"trg_a": D("0.6"), "trg_b": D("0.4")}
    assert positions.saved == []


async def test_no_cursor_is_reported_while_the_position_is_not_known() -> None:
    """Guard gives no position while fires or their re-arms hold stops' marks outside the engine."""
    clock, positions = FakeClock(), Positions()
    store = FakeStore(clock)
    f = MarkFlusher(lambda: [rising(3)], store, sleep=clock.sleep, clock=clock, position=lambda: None,
                    on_saved=positions.on_saved)
    assert await f.flush() == 3
    assert positions.saved == []


async def test_no_cursor_is_reported_when_marks_may_have_left_the_engine_during_the_flush() -> None:
    """A fire that began (or a re-arm that started) while the flush took or wrote the marks may hold a stop's risen
    mark outside the engine: the cursor read before it is not reported."""
    clock, positions = FakeClock(), Positions()
    store = FakeStore(clock)
    fires = [0]

    def take() -> list[list[tuple[Decimal, list[str]]]]:
        fires[0] += 1  # a fire began meanwhile
        return [rising(3)]

    f = MarkFlusher(take, store, sleep=clock.sleep, clock=clock, position=positions.position,
                    on_saved=positions.on_saved, calm=lambda: fires[0])
    assert await f.flush() == 3
    assert positions.saved == []
