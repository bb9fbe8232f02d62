"""A resume that took an order up and an operator's end of it (EndOrder) in one process: the resume reads the order's
row once it took it, the operator ends it meanwhile; the order, ended by hand, is not run from that row afterwards."""

from __future__ import annotations

import asyncio
import contextlib
from decimal import Decimal as D
from typing import Any

import pytest

from common import reservations
from services.executor.domain import venue_orders as v
from services.executor.domain.operator_statement import NotEndable, Outcome, Statement
from services.executor.operator_end import OperatorEnd
from tests.executor.conftest import rows, running_journal
from tests.executor.scripted_venue import prepared, runner
from tests.executor.test_resume_races import Venue, _events, _state
from tests.helpers import eventually

pytestmark = pytest.mark.integration


async def test_an_order_ended_by_hand_while_a_resume_read_its_row_is_not_run_from_that_row(
        db_url: str, redis_url: str) -> None:
    p = prepared()
    coid = p.ticket.client_order_id
    async with running_journal(db_url, redis_url, reservations.release_many, 0.2) as (journal, _r, _sr):
        assert await journal.store.insert_intents([(p.ticket, p.life)]) == {coid}
        first = Venue(coid)
        first.post = first.answer = first.order(v.LIVE, "5")
        r0, _ = runner(first, journal)
        r0.start(p.ticket, p.life)
        await eventually(lambda: _state(db_url, coid) == ("PARTIALLY_FILLED", D(5)), timeout_s=5)
        await r0.close()  # given up on: the order runs nowhere

        venue = Venue(coid)
        venue.answer = venue.order(v.CONFIRMED, "20")
        r, _ = runner(venue, journal)
        r.resuming.ran = True  # orders ran here: a resume reads its rows again once it took them
        read, go_on = asyncio.Event(), asyncio.Event()
        rows_of = r.resuming.rows_of

        async def held_up(ids: list[str]) -> list[dict[str, Any]]:
            got = await rows_of(ids)
            read.set()
            await go_on.wait()
            return got

        r.resuming.rows_of = held_up
        resume = asyncio.create_task(r.resume(await journal.store.open_among([coid])))  # the given-up sweep
        await read.wait()
        statement = Statement(Outcome.FILLED, D(20), D("0.5"), "read at the venue")
        end = asyncio.create_task(OperatorEnd(r, journal.store).end(coid, statement))
        await asyncio.wait({end}, timeout=1.0)  # ended meanwhile, or waiting for the resume to give the order back
        go_on.set()
        await resume
        with contextlib.suppress(NotEndable):  # the order ran and ended before the operator's end took it
            await end
        await asyncio.sleep(0.3)
        await r.close()
    booked = rows(db_url, "SELECT coalesce(sum(size), 0) FROM fills WHERE order_id = %s", coid)[0][0]
    assert (_events(db_url, coid), _state(db_url, coid), booked) == (
        ["ORDER_EVENT_TYPE_PLACED", "ORDER_EVENT_TYPE_PARTIALLY_FILLED", "ORDER_EVENT_TYPE_FILLED"], ("FILLED", D(20)),
        D(20))
