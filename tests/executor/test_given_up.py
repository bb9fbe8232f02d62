"""Orders the executor gave up on (five errors of their runner or status queries in a row) are taken up again after a
pause, not left until the next start holding their reservation and their position's settlement."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from common import reservations
from services.executor import order_runner
from services.executor.domain import venue_orders as v
from services.executor.given_up import GivenUp
from tests.executor.conftest import running_journal
from tests.executor.scripted_venue import ScriptedVenue, prepared, runner
from tests.helpers import eventually


class _Orders:
    """Stored orders (client order id -> row) and the resumes asked for."""

    def __init__(self, open_ids: set[str], *, fail_resumes: int = 0) -> None:
        self.open_ids = open_ids
        self.resumed: list[list[str]] = []
        self.fail_resumes = fail_resumes

    async def rows_of(self, ids: list[str]) -> list[dict[str, Any]]:
        return [{"client_order_id": c} for c in ids if c in self.open_ids]

    async def resume(self, rows: list[dict[str, Any]]) -> int:
        if self.fail_resumes:
            self.fail_resumes -= 1
            raise ConnectionError("database gone")
        self.resumed.append([r["client_order_id"] for r in rows])
        return len(rows)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("given_at", "open_ids", "now", "resumed"), [
    ({"co_1": 0.0}, {"co_1"}, 59.9, []),  # not due yet
    ({"co_1": 0.0}, {"co_1"}, 60.0, [["co_1"]]),  # due: resumed
    ({"co_1": 0.0}, set(), 60.0, []),  # it ended meanwhile: nothing to resume
    ({"co_1": 0.0, "co_2": 30.0}, {"co_1", "co_2"}, 60.0, [["co_1"]]),  # each waits its own pause
])
async def test_an_order_given_up_on_is_resumed_once_its_pause_is_over(
        given_at: dict[str, float], open_ids: set[str], now: float, resumed: list[list[str]]) -> None:
    orders, clock = _Orders(open_ids), _Clock()
    g = GivenUp(orders.rows_of, orders.resume, retry_s=60.0, clock=clock)
    start = clock.now
    for coid, at in given_at.items():
        clock.now = start + at
        g.add(coid)
    clock.now = start + now
    await g.retry_due()
    assert orders.resumed == resumed
    assert g.retried == sum(len(r) for r in resumed)


async def test_a_failed_resume_keeps_the_orders_due_and_a_resumed_one_is_not_resumed_twice() -> None:
    orders, clock = _Orders({"co_1"}, fail_resumes=1), _Clock()
    g = GivenUp(orders.rows_of, orders.resume, retry_s=60.0, clock=clock)
    g.add("co_1")
    clock.now += 60.0
    with pytest.raises(ConnectionError):
        await g.retry_due()
    assert len(g) == 1  # still due
    assert await g.retry_due() == 1
    assert await g.retry_due() == 0 and orders.resumed == [["co_1"]]


def _state(db_url: str, coid: str) -> str | None:
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT state FROM orders WHERE client_order_id = %s", (coid,)).fetchone()
    return None if row is None else str(row[0])


@pytest.mark.integration
async def test_an_order_whose_runner_gave_up_is_taken_up_again_and_ends(
        db_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The venue adapter answers nonsense five times (a bug: the runner's step raises each time): the runner gives
    up, the order stays UNKNOWN, and once taken up again its status query finds it cancelled at the venue."""
    monkeypatch.setattr(order_runner, "ERROR_BACKOFF_S", 0.001)  # the runner's pauses between its errors
    p = prepared()
    coid = p.ticket.client_order_id
    async with running_journal(db_url, redis_url, reservations.release_many, 0.2) as (journal, _r, _sr):
        assert await journal.store.insert_intents([(p.ticket, p.life)]) == {coid}
        broken: Any = None  # not a VenueResult: classifying it raises
        venue = ScriptedVenue([broken], [broken] * 4 + [v.VenueOrder("io_1", coid, "cancelled")])
        r, _ = runner(venue, journal)
        g = GivenUp(journal.store.open_among, r.resume, retry_s=0.0)
        r.on_give_up = g.add
        r.start(p.ticket, p.life)
        await eventually(lambda: len(g) == 1 and not r.running(coid), timeout_s=10)
        assert _state(db_url, coid) == "UNKNOWN"  # given up on: before, it stayed so until the next start
        assert await g.retry_due() == 1
        await eventually(lambda: _state(db_url, coid) == "CANCELLED", timeout_s=10)
        await r.close()
    assert venue.posts == 1 and g.given_up == 1
