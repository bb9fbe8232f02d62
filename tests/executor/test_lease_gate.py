"""Every call that acts at the venue (an order's POST, the cancel before LOST, the cancel of an order resting on a
resolved market, a redemption's POST) waits for the lease's confirmation (``Lease.confirmed``), right before it
goes: a process that may have lost its lease acts at the venue only once it knows it still holds it."""

from __future__ import annotations

import asyncio
from decimal import Decimal as D
from typing import Any

from services.executor.adapters.redemption_store import RedemptionRow
from services.executor.adapters.settlement_store import Resting, RestingOrder
from services.executor.domain import order_lifecycle as lc
from services.executor.domain import redemption as rd
from services.executor.domain import venue_orders as v
from services.executor.ports import Answer
from services.executor.redeeming import Redeemer
from services.executor.settling import Settler
from tests.executor.conftest import ASSET, CONDITION
from tests.executor.scripted_venue import HTTP_503, NOT_FOUND, ScriptedVenue, prepared, runner
from tests.helpers import eventually


class Gate:
    """A lease confirmation the test gives by hand: the calls behind it wait until it is open."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.waits = 0

    async def __call__(self) -> None:
        self.waits += 1
        await self.open.wait()


class CountingVenue(ScriptedVenue):
    """A scripted venue that also counts cancels (each answered ORDER_NOT_FOUND)."""

    def __init__(self, posts: list[v.VenueResult | str]) -> None:
        super().__init__(posts, [])
        self.cancels = 0

    async def cancel(self, vid: str) -> v.VenueResult:
        self.cancels += 1
        return NOT_FOUND


async def test_a_post_waits_for_the_lease_confirmation() -> None:
    venue = CountingVenue([HTTP_503] * 4)
    r, _ = runner(venue)
    r.lease_confirmed = gate = Gate()
    p = prepared(1)
    r.start(p.ticket, p.life)
    await eventually(lambda: gate.waits == 1)
    await asyncio.sleep(0.05)
    assert venue.posts == 0
    gate.open.set()
    await eventually(lambda: venue.posts >= 1)
    await r.close()


async def test_the_cancel_before_lost_waits_for_the_lease_confirmation() -> None:
    venue = CountingVenue([])
    r, _ = runner(venue, lost_after=2, placed_lost_after_s=0.001)
    r.placed.lease_confirmed = gate = Gate()
    p = prepared(1)
    placed = lc.apply(p.life, lc.OrderAccepted("v_1", "live"))
    assert await r.placed.poll(p.ticket, placed) == (placed, False)  # not found once
    await asyncio.sleep(0.01)
    poll = asyncio.create_task(r.placed.poll(p.ticket, placed))  # not found again: ends LOST, after a cancel
    await eventually(lambda: gate.waits == 1)
    await asyncio.sleep(0.05)
    assert venue.cancels == 0 and not poll.done()
    gate.open.set()
    life, changed = await asyncio.wait_for(poll, 5)
    assert venue.cancels == 1 and changed and life.state is lc.State.LOST
    await r.close()


class _RestingStore:
    async def resting_orders(self, venues: Any, asked: Any, *, limit: int) -> Resting:
        return Resting([RestingOrder("co_1", "INSIDERS", "v_1", "w_1", ASSET, CONDITION)], [])


async def test_the_cancel_of_an_order_resting_on_a_resolved_market_waits_for_the_lease_confirmation() -> None:
    venue, gate = CountingVenue([]), Gate()
    settler = Settler(_RestingStore(), venues={"INSIDERS": venue}, lease_confirmed=gate)  # type: ignore[arg-type,dict-item]
    cancelling = asyncio.create_task(settler.cancel_resting())
    await eventually(lambda: gate.waits == 1)
    await asyncio.sleep(0.05)
    assert venue.cancels == 0
    gate.open.set()
    assert await asyncio.wait_for(cancelling, 5) == 1
    assert venue.cancels == 1


class _RedeemApi:
    def __init__(self) -> None:
        self.posts = 0

    async def redeem(self, *args: Any) -> Answer:
        self.posts += 1
        return Answer(503, kind="http")

    async def redemption(self, redeem_id: str) -> Answer:
        return Answer(503, kind="http")


class _RedemptionStore:
    def __init__(self) -> None:
        self.saved: list[Any] = []

    async def due(self, now_ms: int, limit: int) -> list[Any]:
        return [RedemptionRow(rd.Redemption("rk_1"), "w_1", "0xa", CONDITION, False, (D("10"),), D("10"), 0)]

    async def save_many(self, changes: list[Any], method: str) -> dict[str, list[str]]:
        self.saved.extend(changes)
        return {}

    async def terms(self, keys: list[str]) -> dict[str, Any]:
        return {}

    async def mark_published(self, published: Any) -> None:
        return None


class _Events:
    async def append_many(self, payloads: list[bytes]) -> list[str]:
        return ["1-0"] * len(payloads)


async def test_a_redemption_post_waits_for_the_lease_confirmation() -> None:
    api, gate, store = _RedeemApi(), Gate(), _RedemptionStore()
    redeemer = Redeemer(store, api, None, _Events(), lease_confirmed=gate)  # type: ignore[arg-type]
    round_ = asyncio.create_task(redeemer.round())
    await eventually(lambda: gate.waits == 1)
    await asyncio.sleep(0.05)
    assert api.posts == 0 and len(store.saved) == 1  # its attempt is on record; the POST waits
    gate.open.set()
    assert await asyncio.wait_for(round_, 5) == 1
    assert api.posts == 1
