"""After a Redis server change the executor appends its held order events again (EventHold.settle, through the log)
while the journal appends new commits' events (append_events, on its own connection). Both hand the entries to the
log's live feed, from which StreamOrderEventBatches serves guard: they take the log's append lock, so the feed gets
them in log order and every event reaches the reader. Only the Redis wire is faked: XADD ids are assigned when Redis
runs the command, and the replies of the two connections are read whenever the loop sees them."""

from __future__ import annotations

import asyncio
from typing import Any

from common.fastredis import append_events
from common.livefeed import LiveFeed
from common.streams import ORDER_EVENTS, DurableLog
from services.executor.event_hold import EventHold


class _Redis:
    """One Redis stream: ids handed out in the order commands reach the server."""

    def __init__(self) -> None:
        self.ms = 100
        self.log: list[tuple[str, bytes]] = []
        self.gate = asyncio.Event()  # the stream client's reply is read only once this is set

    def xadd(self, payload: bytes) -> bytes:
        self.ms += 1
        cursor = f"{self.ms}-0"
        self.log.append((cursor, payload))
        return cursor.encode()

    # redis-py's client (the DurableLog's own, used by EventHold's re-append)
    def pipeline(self, transaction: bool = False) -> Any:
        server = self

        class _Pipe:
            def __init__(self) -> None:
                self.payloads: list[bytes] = []

            def xadd(self, _name: str, fields: dict[bytes, bytes], **_kw: Any) -> None:
                self.payloads.append(fields[b"p"])

            async def execute(self) -> list[bytes]:
                ids = [server.xadd(p) for p in self.payloads]  # the server ran the XADDs now
                await server.gate.wait()  # ... and this connection's reply is read later
                return ids

        return _Pipe()

    async def xrange(self, *_a: Any, **_kw: Any) -> list[Any]:
        return []


class _Fast:
    """common.fastredis.FastRedis's connection (the journal's appends)."""

    timeout_s = 5.0

    def __init__(self, server: _Redis) -> None:
        self.server = server

    async def connection(self) -> Any:
        return self

    def write(self, cmds: list[Any]) -> None:
        for args, on_reply in cmds:
            on_reply(self.server.xadd(args[-1]))

    async def call(self, *args: Any, timeout_s: float) -> bytes:
        return self.server.xadd(args[-1])


class _Outbox:
    async def outbox_events(self, ids: list[str]) -> list[tuple[int, str, bytes]]:
        return [(1, i, i.encode()) for i in ids]


async def test_events_appended_while_held_ones_are_appended_again_all_reach_the_reader() -> None:
    server = _Redis()
    live = LiveFeed()
    log = DurableLog(server, ORDER_EVENTS, live=live)  # type: ignore[arg-type]
    live.prime("100-0")
    fast = _Fast(server)

    async def server_id() -> str:
        return "S2"  # Redis restarted: the held events may be lost

    hold = EventHold(_Outbox(), log.append_many, server_id, durable_after_s=2.0)
    hold.server = "S1"
    hold.hold(["R_BUY_FILL"], 0.0)

    reader = log.tail_batches("100-0")  # guard's StreamOrderEventBatches
    settle = asyncio.create_task(hold.settle(10.0))  # the journal's marks task: its XADD ran, its reply is late
    await asyncio.sleep(0)
    journal = asyncio.create_task(append_events(fast, log, [b"E1_PLACED"]))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert not journal.done()  # it waits for the append in flight
    server.gate.set()
    await settle
    await journal
    await append_events(fast, log, [b"E2_BUY_FILL"])  # type: ignore[arg-type]
    delivered: list[str] = []
    while len(delivered) < len(server.log):
        delivered += [c for c, _p in await asyncio.wait_for(reader.__anext__(), 1.0)]
    await reader.aclose()
    assert delivered == [c for c, _p in server.log]  # every event, in log order
    assert live.out_of_order == 0


def test_an_out_of_order_entry_leaves_nothing_covered() -> None:
    """Were an entry published late all the same, readers go back to Redis: covering what follows it would let a
    reader already past it skip the entries published before it and not read yet."""
    live = LiveFeed()
    live.prime("100-0")
    live.publish("102-0", b"b")
    live.publish("101-0", b"a")
    assert live.out_of_order == 1
    assert not live.covers("101-0") and not live.covers("102-0")


async def test_an_event_held_while_the_held_ones_are_appended_again_is_settled_in_its_turn() -> None:
    gate = asyncio.Event()

    class SlowOutbox:
        async def outbox_events(self, ids: list[str]) -> list[tuple[int, str, bytes]]:
            await gate.wait()  # the outbox read takes a moment
            return [(1, i, i.encode()) for i in ids]

    async def append(_payloads: list[bytes]) -> list[str]:
        return []

    async def server_id() -> str:
        return "S2"

    hold = EventHold(SlowOutbox(), append, server_id, durable_after_s=2.0)
    hold.server = "S1"
    hold.hold(["old"], 0.0)
    settling = asyncio.create_task(hold.settle(3.0))  # the server changed: "old" is appended again
    await asyncio.sleep(0)
    hold.hold(["new"], 3.1)  # the journal appends a commit's event meanwhile (to the new server)
    gate.set()
    assert await settling == []
    assert await hold.settle(4.5) == []  # neither is 2 s old on the new server yet
    assert sorted(await hold.settle(5.2)) == ["new", "old"]
    assert hold.ids == set() and hold.due_in(100.0) is None
