"""The in-flight bound: first come, first served; a slot is never lost or made up, whatever is cancelled."""

from __future__ import annotations

import asyncio
import random

import pytest

from services.executor.burst_gate import Slots


async def _holder(slots: Slots, name: int, order: list[int], hold: asyncio.Event) -> None:
    await slots.acquire()
    order.append(name)
    try:
        await hold.wait()
    finally:
        slots.release()


def test_slots_must_be_positive() -> None:
    with pytest.raises(ValueError, match="slots must be >= 1"):
        Slots(0)


@pytest.mark.parametrize("n, waiters", [(1, 5), (3, 10), (8, 8), (2, 1000)])
async def test_waiters_get_their_slots_in_arrival_order(n: int, waiters: int) -> None:
    slots = Slots(n)
    order: list[int] = []
    hold = asyncio.Event()
    tasks = [asyncio.create_task(_holder(slots, i, order, hold)) for i in range(waiters)]
    await asyncio.sleep(0)
    assert order == list(range(min(n, waiters)))
    hold.set()
    await asyncio.gather(*tasks)
    assert order == list(range(waiters))
    assert slots.free == n and slots.waiting == 0


async def test_a_newcomer_does_not_overtake_a_waiter() -> None:
    slots = Slots(1)
    await slots.acquire()
    order: list[str] = []

    async def take(name: str) -> None:
        await slots.acquire()
        order.append(name)
        slots.release()

    first = asyncio.create_task(take("waiter"))
    await asyncio.sleep(0)
    slots.release()  # handed to the waiter, which has not run yet
    second = asyncio.create_task(take("newcomer"))
    await asyncio.gather(first, second)
    assert order == ["waiter", "newcomer"]
    assert slots.free == 1


async def test_a_cancelled_waiter_is_skipped() -> None:
    slots = Slots(1)
    await slots.acquire()
    gone = asyncio.create_task(slots.acquire())
    stays = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    slots.release()
    await stays
    assert slots.free == 0 and slots.waiting == 0
    slots.release()
    assert slots.free == 1


async def test_a_slot_handed_to_a_task_cancelled_before_it_ran_passes_on() -> None:
    slots = Slots(1)
    await slots.acquire()
    handed = asyncio.create_task(slots.acquire())
    nxt = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    slots.release()  # the slot is handed to ``handed``...
    handed.cancel()  # ...which is cancelled before it runs
    await asyncio.gather(handed, return_exceptions=True)
    await nxt  # the slot went on to the next waiter
    assert slots.free == 0
    slots.release()
    assert slots.free == 1 and slots.waiting == 0


@pytest.mark.parametrize("seed", range(5))
async def test_random_cancellations_never_lose_or_add_a_slot(seed: int) -> None:
    rng = random.Random(seed)
    n = 4
    slots = Slots(n)
    inside = 0
    most = 0

    async def work() -> None:
        nonlocal inside, most
        await slots.acquire()
        inside += 1
        most = max(most, inside)
        try:
            for _ in range(rng.randrange(3)):
                await asyncio.sleep(0)
        finally:
            inside -= 1
            slots.release()

    tasks = [asyncio.create_task(work()) for _ in range(200)]
    for _ in range(60):
        await asyncio.sleep(0)
        rng.choice(tasks).cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert most <= n
    assert slots.free == n
    await asyncio.wait_for(slots.acquire(), 1.0)  # still usable
