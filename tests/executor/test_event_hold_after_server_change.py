"""Order events appended again after a Redis server change stay held for the whole durability wait counted from that
append, not from before the outbox read that preceded it: a slow read (PostgreSQL under load) must not let them out
of the outbox while Redis may still lose them."""

from __future__ import annotations

import asyncio

from services.executor.event_hold import EventHold

SLOW_READ_S = 0.25
DURABLE_AFTER_S = 0.3


class SlowOutbox:
    async def outbox_events(self, event_ids: list[str]) -> list[tuple[int, str, bytes]]:
        await asyncio.sleep(SLOW_READ_S)
        return [(i, e, e.encode()) for i, e in enumerate(event_ids)]


async def test_events_appended_again_are_held_from_their_new_append() -> None:
    loop = asyncio.get_running_loop()  # the journal's clock
    server = {"id": "a"}
    appended: list[float] = []

    async def append(payloads: list[bytes]) -> None:
        appended.append(loop.time())

    async def server_id() -> str:
        return server["id"]

    hold = EventHold(SlowOutbox(), append, server_id, durable_after_s=DURABLE_AFTER_S)
    hold.server = "a"
    hold.hold(["ev_1"], loop.time())
    await asyncio.sleep(DURABLE_AFTER_S)
    server["id"] = "b"  # a failover: the event may be gone, it is appended again
    assert await hold.settle(loop.time()) == []
    settled = loop.time()
    [again] = appended
    before_due = again + DURABLE_AFTER_S / 3
    assert await hold.settle(before_due) == [], "appended again a moment ago, yet taken as durable"
    assert await hold.settle(settled + DURABLE_AFTER_S) == ["ev_1"]
