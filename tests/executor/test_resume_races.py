"""Orders taken up again: resumes of one order racing in one process (a given-up sweep, a redelivered intent, an
operator's hand-back) act on the order as PostgreSQL holds it once nothing else here runs it, never on a row read
before another resume ran it meanwhile (its fills booked again, its end undone); a crash around an order's first fill
neither books it twice nor POSTs the order again."""

from __future__ import annotations

import asyncio
from decimal import Decimal as D
from typing import Any

import pytest

from common import reservations
from services.executor import order_runner
from services.executor.domain import venue_orders as v
from tests.executor.conftest import rows, running_journal
from tests.executor.scripted_venue import ScriptedVenue, prepared, runner
from tests.helpers import eventually

pytestmark = pytest.mark.integration

VID = "io_1"


class Venue(ScriptedVenue):
    """A venue whose answer to every status query is ``answer`` (None: an unreadable one, the query fails)."""

    def __init__(self, coid: str) -> None:
        super().__init__([], [])
        self.coid = coid
        self.post: v.VenueResult | None = None
        self.answer: v.VenueResult | None = None

    def order(self, status: str, filled: str) -> v.VenueOrder:
        return v.VenueOrder(VID, self.coid, status, D(filled), D("0.5"))

    async def place(self, request: v.PlaceRequest, *, traceparent: str = "") -> v.VenueResult:
        self.posts += 1
        assert self.post is not None, "not to be POSTed"
        return self.post

    async def query_by_client_id(self, coid: str) -> Any:
        return self.answer

    async def query(self, vid: str) -> Any:
        return self.answer

    async def cancel(self, vid: str) -> v.VenueResult:
        return v.VenueError("http", 404, "ORDER_NOT_FOUND")


def _booked(db_url: str, coid: str) -> D:
    return D(rows(db_url, "SELECT coalesce(sum(size), 0) FROM fills WHERE order_id = %s", coid)[0][0])


def _state(db_url: str, coid: str) -> tuple[str, D]:
    state, filled = rows(db_url, "SELECT state, filled_size FROM orders WHERE client_order_id = %s", coid)[0]
    return str(state), D(filled)


def _events(db_url: str, coid: str) -> list[str]:
    return [str(r[0]) for r in rows(db_url, "SELECT type FROM order_events WHERE client_order_id = %s ORDER BY seq",
                                    coid)]


async def test_a_resume_from_a_row_read_before_another_resume_ran_the_order_books_no_fill_twice(
        db_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A placed order 5 shares filled, not running here (given up on). One resume reads its row (filled 5) and is
    held up; another resumes it meanwhile: its query books the fill up to 12, then its queries fail until it is
    given up on again. The first resume then goes on with its row: the venue's 15 are 15 booked, not 22."""
    monkeypatch.setattr(order_runner, "ERROR_BACKOFF_S", 0.001)  # the tracker gives up after five quick errors
    p = prepared()
    coid = p.ticket.client_order_id
    async with running_journal(db_url, redis_url, reservations.release_many, 0.2) as (journal, _r, _sr):
        assert await journal.store.insert_intents([(p.ticket, p.life)]) == {coid}
        first = Venue(coid)
        first.post = first.answer = first.order(v.LIVE, "5")
        r0, _ = runner(first, journal)
        r0.start(p.ticket, p.life)
        await eventually(lambda: _state(db_url, coid) == ("PARTIALLY_FILLED", D(5)), timeout_s=5)
        await r0.close()

        venue = Venue(coid)
        r, _ = runner(venue, journal)
        given_up: list[str] = []
        r.on_give_up = given_up.append
        held_up = await journal.store.open_among([coid])  # one resume's read; it is held up after it
        venue.answer = venue.order(v.LIVE, "12")
        assert await r.resume(await journal.store.open_among([coid])) == 1  # the other resume
        await eventually(lambda: _state(db_url, coid) == ("PARTIALLY_FILLED", D(12)), timeout_s=5)
        venue.answer = None  # its queries fail: given up on, it runs nowhere here
        await eventually(lambda: given_up == [coid] and not r.running(coid), timeout_s=5)

        venue.answer = venue.order(v.CONFIRMED, "15")
        await r.resume(held_up)
        await eventually(lambda: _state(db_url, coid)[0] == "FILLED", timeout_s=5)
        await r.close()
    assert _state(db_url, coid) == ("FILLED", D(15))
    assert _booked(db_url, coid) == D(15)
    assert venue.posts == 0 and first.posts == 1


async def test_a_resume_from_a_row_read_before_the_order_ended_leaves_it_ended(db_url: str, redis_url: str) -> None:
    """An order left SUBMITTING by a crash. One resume reads its row and is held up; another resumes it meanwhile and
    it ends FILLED. The first resume then finds it ended: nothing written over its end, nothing run again."""
    p = prepared()
    coid = p.ticket.client_order_id
    async with running_journal(db_url, redis_url, reservations.release_many, 0.2) as (journal, _r, _sr):
        assert await journal.store.insert_intents([(p.ticket, p.life)]) == {coid}
        venue = Venue(coid)
        r, _ = runner(venue, journal)
        held_up = await journal.store.open_among([coid])
        venue.answer = venue.order(v.CONFIRMED, "20")
        assert await r.resume(await journal.store.open_among([coid])) == 1
        await eventually(lambda: _state(db_url, coid)[0] == "FILLED" and not r.running(coid), timeout_s=5)
        ended = _events(db_url, coid)

        assert await r.resume(held_up) == 0
        assert not r.running(coid)
        await r.close()
    assert _state(db_url, coid) == ("FILLED", D(20))
    assert _events(db_url, coid) == ended == [
        "ORDER_EVENT_TYPE_UNKNOWN", "ORDER_EVENT_TYPE_PLACED", "ORDER_EVENT_TYPE_FILLED"]
    assert _booked(db_url, coid) == D(20)
    assert venue.posts == 0


class _CrashingJournal:
    """The real journal, except that the process dies (the write never reaches PostgreSQL) under the write of the
    order's first fill when ``before_commit``."""

    def __init__(self, journal: Any, *, before_commit: bool) -> None:
        self.journal = journal
        self.store = journal.store
        self.before_commit = before_commit

    async def write(self, changes: list[Any], inserts: Any = None, *, urgent: bool = False) -> set[str]:
        if self.before_commit and any(c.booking is not None for c in changes):
            await asyncio.Event().wait()
        result: set[str] = await self.journal.write(changes, inserts, urgent=urgent)
        return result


@pytest.mark.parametrize("before_commit", [True, False])
async def test_a_crash_around_the_first_fill_of_an_order_books_its_fills_once_and_posts_it_once(
        db_url: str, redis_url: str, before_commit: bool) -> None:
    """The POST is answered with 5 of 20 shares filled; the executor dies before or after that answer is committed.
    The next start settles the order by query (never a second POST) and books what the venue filled, once."""
    p = prepared()
    coid = p.ticket.client_order_id
    async with running_journal(db_url, redis_url, reservations.release_many, 0.2) as (journal, _r, _sr):
        assert await journal.store.insert_intents([(p.ticket, p.life)]) == {coid}
        first = Venue(coid)
        first.post = first.answer = first.order(v.LIVE, "5")
        r0, _ = runner(first, _CrashingJournal(journal, before_commit=before_commit))
        r0.start(p.ticket, p.life)
        await eventually(lambda: first.posts == 1, timeout_s=5)
        if not before_commit:
            await eventually(lambda: _state(db_url, coid) == ("PARTIALLY_FILLED", D(5)), timeout_s=5)
        await asyncio.sleep(0.1)
        await r0.close()  # the crash
        assert _booked(db_url, coid) == (D(0) if before_commit else D(5))

        venue = Venue(coid)
        venue.answer = venue.order(v.CONFIRMED, "20")
        r, _ = runner(venue, journal)
        assert await r.resume(await journal.store.open_orders()) == 1
        await eventually(lambda: _state(db_url, coid)[0] == "FILLED", timeout_s=5)
        await r.close()
    assert _state(db_url, coid) == ("FILLED", D(20))
    assert _booked(db_url, coid) == D(20)
    assert rows(db_url, "SELECT size FROM positions WHERE follower_wallet_id = 'w_1'") == [(D(20),)]
    assert venue.posts == 0
