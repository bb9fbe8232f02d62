"""An order's events reach ``tt:stream:order_events`` in the order they were committed, also when the append after
one commit failed (a Redis blip, or a crash before it): a later commit's events must not overtake the events the
sweep still has to append from the outbox. Real PostgreSQL and Redis."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import pytest

from common import reservations
from common.streams import ORDER_EVENTS
from services.executor.adapters.order_store import OrderStore
from services.executor.domain.order_intake import IntakeRules, prepare
from tests.executor.conftest import filled_change, make_order, placed_change, running_journal
from tests.helpers import eventually
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration


class FailingAppends:
    """The journal's post-commit append: the first ``failures`` calls fail as a dropped Redis connection would."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.target: Callable[[list[bytes]], Awaitable[list[str]]] | None = None

    async def __call__(self, payloads: list[bytes]) -> list[str]:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("redis blip")
        assert self.target is not None
        return await self.target(payloads)


async def _logged(sr: Any, client_order_id: str) -> list[str]:
    """The types of the order's events in the stream, in log order."""
    events = [epb.OrderEvent.FromString(fields[b"p"]) for _id, fields in await sr.xrange(ORDER_EVENTS)]
    return [epb.OrderEventType.Name(e.type) for e in events if e.client_order_id == client_order_id]


async def test_a_commit_after_a_failed_append_does_not_overtake_the_events_left_in_the_outbox(
        db_url: str, redis_url: str) -> None:
    appends = FailingAppends(failures=1)
    async with running_journal(db_url, redis_url, reservations.release_many, 0.2, append=appends) as (
            journal, _r, sr):
        appends.target = journal.events_log.append_many
        now = time.time_ns()
        p = prepare(make_order(1), None, IntakeRules(live_configured=True), now)
        assert await journal.store.insert_intents([(p.ticket, p.life)]) == {p.ticket.client_order_id}
        placed, life = placed_change(p.ticket, p.life, now)
        await journal.write([placed])  # committed; its append fails: PLACED waits in the outbox
        await journal.write([filled_change(p.ticket, life, "10", now + 1)])  # committed; Redis answers again
        coid = p.ticket.client_order_id
        await eventually(lambda: _count(sr, coid, 2), timeout_s=5)
        assert await _logged(sr, coid) == ["ORDER_EVENT_TYPE_PLACED", "ORDER_EVENT_TYPE_FILLED"]


class BlipAtStart(OrderStore):
    """PostgreSQL fails the start-up sweep's outbox read once (a blip as the executor starts)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.reads = 0

    async def unpublished(self, min_age_s: float, limit: int = 5000) -> list[tuple[int, str, bytes]]:
        self.reads += 1
        if self.reads == 1:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return await super().unpublished(min_age_s, limit)


async def test_events_a_crash_left_in_the_outbox_go_out_before_those_of_the_first_commit_after_the_start(
        db_url: str, redis_url: str) -> None:
    now = time.time_ns()
    p = prepare(make_order(2), None, IntakeRules(live_configured=True), now)
    placed, life = placed_change(p.ticket, p.life, now)
    async with running_journal(db_url, redis_url, reservations.release_many, 0.2, store=BlipAtStart) as (
            journal, _r, sr):
        store = journal.store
        assert isinstance(store, BlipAtStart)
        # the previous process committed PLACED and died before its append
        assert await store.insert_intents([(p.ticket, p.life)]) == {p.ticket.client_order_id}
        await store.apply([], [placed])
        await eventually(lambda: store.reads >= 1)  # its start-up sweep failed
        await journal.write([filled_change(p.ticket, life, "10", now + 1)])
        coid = p.ticket.client_order_id
        await eventually(lambda: _count(sr, coid, 2), timeout_s=5)
        assert await _logged(sr, coid) == ["ORDER_EVENT_TYPE_PLACED", "ORDER_EVENT_TYPE_FILLED"]


async def _count(sr: Any, client_order_id: str, n: int) -> bool:
    return len(await _logged(sr, client_order_id)) >= n
