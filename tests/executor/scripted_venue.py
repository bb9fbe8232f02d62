"""Fakes that drive an OrderRunner without HTTP: a venue whose answers come from scripts, a journal that keeps what
it is given (or the real one, with :func:`runner`'s ``journal``), and a Redis that takes the breaker's mirror."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

from common.marketstate import BookSnapshot
from common.retry import Backoff
from services.executor.adapters.breaker_gate import BreakerGate
from services.executor.domain import breaker as br
from services.executor.domain import order_lifecycle as lc
from services.executor.domain import venue_orders as v
from services.executor.domain.order_intake import IntakeRules, Prepared, prepare
from services.executor.order_runner import OrderRunner, RunnerConfig
from tests.executor.conftest import ASSET, CONDITION, make_order

NOT_FOUND = v.VenueError("http", 404, "ORDER_NOT_FOUND")
TIMEOUT = v.VenueError("timeout", 0, "", "no answer in time")
DISCONNECT = v.VenueError("disconnect", 0, "", "connection dropped")
HTTP_503 = v.VenueError("http", 503, "", "service unavailable")
HANG = "HANG"  # a scripted POST that never answers (the executor stops under it)


class _Store:
    async def restamp(self, coid: str) -> None:
        return None


class MemoryJournal:
    """Keeps every change it is asked to write."""

    def __init__(self) -> None:
        self.store = _Store()
        self.written: list[Any] = []

    async def write(self, changes: list[Any], inserts: list[Any] | None = None, *, urgent: bool = False) -> set[str]:
        self.written.extend(changes)
        return {c.life.client_order_id for c in inserts or []}


class ScriptedVenue:
    """POST and GET (by client order id) answers in script order; a GET past its script finds nothing."""

    name = "insiders"

    def __init__(self, posts: list[v.VenueResult | str], gets: list[v.VenueResult]) -> None:
        self.post_script = list(posts)
        self.get_script = list(gets)
        self.posts = 0
        self.gets = 0

    async def place(self, request: v.PlaceRequest, *, traceparent: str = "") -> v.VenueResult:
        self.posts += 1
        answer = self.post_script.pop(0)
        if isinstance(answer, str):
            await asyncio.Event().wait()
        assert not isinstance(answer, str)
        return answer

    async def query_by_client_id(self, coid: str) -> v.VenueResult:
        self.gets += 1
        return self.get_script.pop(0) if self.get_script else NOT_FOUND

    async def query(self, vid: str) -> v.VenueResult:
        return await self.query_by_client_id("")

    async def cancel(self, vid: str) -> v.VenueResult:
        return NOT_FOUND


class NullRedis:
    """Takes the breaker's mirror writes and the market cache's invalidations; holds nothing."""

    async def hset(self, *a: Any, **k: Any) -> None:
        return None

    async def hgetall(self, *a: Any) -> dict[str, str]:
        return {}

    async def delete(self, *a: Any) -> None:
        return None


def runner(venue: ScriptedVenue, journal: Any = None, *, breaker_threshold: int = 5,
           **cfg: Any) -> tuple[OrderRunner, Any]:
    """An OrderRunner on ``venue`` with fast timings (``cfg`` overrides them) and its journal."""
    journal = journal if journal is not None else MemoryJournal()
    gate = BreakerGate("insiders", NullRedis(), br.BreakerConfig(threshold=breaker_threshold, open_ms=60_000),
                       lambda: time.time_ns() // 1_000_000)
    base: dict[str, Any] = dict(max_submit_attempts=4, retry_backoff=Backoff(0.001, 0.002), breaker_wait_s=0.2,
                                poll_initial_s=0.01, poll_max_s=0.02, settle_interval_s=0.01, lost_after=3,
                                placed_lost_after_s=0.05, resubmit_max_age_s=30.0, answer_defer_s=0.0)
    base.update(cfg)
    r = OrderRunner(journal=journal, venues={"INSIDERS": venue}, gates={"INSIDERS": gate},  # type: ignore[dict-item]
                    redis=NullRedis(), config=RunnerConfig(**base))
    return r, journal


def prepared(i: int = 1, **kw: Any) -> Prepared:
    """A LIVE copy BUY prepared against a deep book (SUBMITTING, ready to POST)."""
    now = time.time_ns()
    book = BookSnapshot(ASSET, CONDITION, ((Decimal("0.49"), Decimal("100000")),),
                        ((Decimal("0.50"), Decimal("100000")),), Decimal("0.01"), now // 1_000_000, now // 1_000_000)
    p = prepare(make_order(i, **kw), book, IntakeRules(live_configured=True), now)
    assert not p.refused, p.life
    return p


async def final_life(journal: MemoryJournal, coid: str, timeout_s: float = 5.0) -> lc.OrderLife:
    """The order's terminal state as written (fails the test when none comes in ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        mine = [c.life for c in journal.written if c.life.client_order_id == coid]
        if mine and mine[-1].terminal:
            return mine[-1]
        await asyncio.sleep(0.01)
    raise AssertionError(f"{coid} not terminal: {[c.life.state.value for c in journal.written]}")
