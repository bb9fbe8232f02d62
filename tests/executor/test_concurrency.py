"""The burst gate and the position queue (the in-flight bound, ``Slots``, has its own tests)."""

from __future__ import annotations

import asyncio
import time

from services.executor.burst_gate import BurstGate
from services.executor.position_queue import PositionQueue
from tests.helpers import eventually


async def test_burst_gate_releases_when_all_sent() -> None:
    gate = BurstGate(5.0)
    gate.add()
    gate.add()
    waiter = asyncio.create_task(gate.wait())
    gate.done()
    await asyncio.sleep(0.01)
    assert not waiter.done()
    gate.done()
    await asyncio.wait_for(waiter, 1)
    await asyncio.wait_for(gate.wait(), 0.1)  # nothing pending: no wait


async def test_a_cancelled_burst_waiter_leaves_the_others_waiting() -> None:
    gate = BurstGate(5.0)
    gate.add()
    gone, stays = asyncio.create_task(gate.wait()), asyncio.create_task(gate.wait())
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    await asyncio.sleep(0.01)
    assert not stays.done()
    gate.done()
    await asyncio.wait_for(stays, 1)


async def test_burst_gate_lets_a_trickle_through() -> None:
    gate = BurstGate(5.0, min_pending=3)
    for _ in range(3):
        gate.add()
    await asyncio.wait_for(gate.wait(), 0.1)  # three pending is not a burst
    gate.add()
    waiter = asyncio.create_task(gate.wait())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    gate.done()
    await asyncio.wait_for(waiter, 1)


async def test_burst_gate_wait_is_bounded() -> None:
    gate = BurstGate(0.05)
    gate.add()
    began = time.monotonic()
    await asyncio.gather(gate.wait(), gate.wait())
    assert 0.04 <= time.monotonic() - began < 1.0
    assert gate.pending == 1


class Holder:
    """Records hold/release calls like a venue client that holds answers."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def hold_answers(self) -> None:
        self.calls.append("hold")

    def release_answers(self) -> None:
        self.calls.append("release")


async def test_answers_are_held_while_a_burst_is_unsent_and_released_once_written() -> None:
    gate = BurstGate(5.0, min_pending=2)
    holder = Holder()
    gate.hold_answers_with(holder)
    gate.add(2)
    assert holder.calls == [] and not gate.holding  # a trickle is not held
    gate.add(8)
    assert holder.calls == ["hold"] and gate.holding
    gate.sent(8)
    assert holder.calls == ["hold"]  # 2 still unsent: held until the burst's last POST is written
    gate.sent(1)
    gate.give_back(1)  # one that will never be sent
    assert holder.calls == ["hold", "release"] and not gate.holding
    assert (gate.unsent, gate.pending) == (0, 9)  # answers still pending: their work waits at wait()
    gate.add(2)
    assert holder.calls == ["hold", "release"]  # a trickle again
    gate.add(5)
    assert holder.calls == ["hold", "release", "hold"]  # the next burst holds again
    gate.sent(7)
    assert holder.calls[-1] == "release" and gate.unsent == 0


async def test_answer_hold_is_bounded_and_not_renewed_within_the_same_burst() -> None:
    gate = BurstGate(0.05, min_pending=0)
    holder = Holder()
    gate.hold_answers_with(holder)
    gate.add(3)  # e.g. orders stuck behind an open breaker never get written
    assert holder.calls == ["hold"]
    await eventually(lambda: holder.calls == ["hold", "release"], timeout_s=2)
    gate.add(1)
    assert holder.calls == ["hold", "release"] and not gate.holding  # the same burst: not held again
    gate.sent(4)
    gate.add(2)
    assert holder.calls[-1] == "hold"  # a new burst holds again
    gate.sent(2)
    assert holder.calls[-1] == "release"


async def test_a_burst_starved_of_in_flight_slots_reads_its_answers() -> None:
    gate = BurstGate(30.0, min_pending=2)
    holder = Holder()
    gate.hold_answers_with(holder)
    gate.starved()
    assert holder.calls == []  # nothing held: nothing to end
    gate.add(10)
    gate.sent(4)  # the in-flight bound reached: the other 6 wait for answers that are held
    gate.starved()
    assert holder.calls == ["hold", "release"] and not gate.holding
    gate.sent(1)
    assert holder.calls == ["hold", "release"]  # the same burst is not held again
    gate.sent(5)
    gate.add(10)
    assert holder.calls[-1] == "hold"  # the next burst is


async def test_a_sell_waits_for_the_orders_of_its_position_that_came_before_it() -> None:
    q = PositionQueue()
    pos, other = ("w_1", "a_1"), ("w_1", "a_2")
    q.opened(pos, "buy_1")
    q.opened(other, "buy_2")  # another asset: not in the way
    q.opened(pos, "sell_1")
    q.opened(pos, "sell_2")  # came after sell_1: waits for it too
    first = asyncio.create_task(q.wait_turn(pos, "sell_1"))
    second = asyncio.create_task(q.wait_turn(pos, "sell_2"))
    await asyncio.sleep(0.01)
    assert not first.done() and not second.done() and q.ahead(pos, "sell_2") == 2
    q.ended(pos, "buy_1")
    assert await asyncio.wait_for(first, 1) is True
    await asyncio.sleep(0.01)
    assert not second.done()
    q.ended(pos, "sell_1")
    assert await asyncio.wait_for(second, 1) is True
    q.ended(pos, "sell_2")
    q.ended(pos, "sell_2")  # twice: nothing
    assert len(q) == 1 and q.ahead(pos, "anything") == 0


async def test_a_sell_does_not_wait_for_ever_behind_an_order_that_never_ends() -> None:
    q = PositionQueue(max_wait_s=0.05)
    q.opened(("w", "a"), "resting_gtc")
    q.opened(("w", "a"), "sell")
    assert await q.wait_turn(("w", "a"), "sell") is False


async def test_a_buy_behind_a_sell_waiting_for_its_size_waits_for_that_size_only() -> None:
    q = PositionQueue()
    pos = ("w", "a")
    q.opened(pos, "buy_1")
    q.opened(pos, "sell_1", sized_later=True)
    q.opened(pos, "buy_2")
    q.opened(("w", "other"), "buy_3")
    assert q.unsized_ahead(pos, "buy_1") == 0  # came before the SELL
    assert q.unsized_ahead(("w", "other"), "buy_3") == 0
    assert q.unsized_ahead(pos, "buy_2") == 1 and q.ahead(pos, "buy_2") == 2
    behind = asyncio.create_task(q.wait_sells_sized(pos, "buy_2"))
    await asyncio.sleep(0.01)
    assert not behind.done()
    q.sized(pos, "sell_1")  # sized (not final): BUY 2 may go, it no longer adds to what the SELL sells
    assert await asyncio.wait_for(behind, 1) is True
    assert q.ahead(pos, "buy_2") == 2 and q.unsized_ahead(pos, "buy_2") == 0
    q.opened(pos, "sell_2", sized_later=True)
    q.ended(pos, "sell_2")  # refused before its size: nothing waits for it
    assert q.unsized_ahead(pos, "later") == 0


async def test_the_sizing_lock_is_one_per_position_and_dropped_when_unused() -> None:
    q = PositionQueue()
    order: list[str] = []

    async def size(name: str, key: tuple[str, str], hold_s: float) -> None:
        async with q.sizing(key):
            order.append(f"{name}+")
            await asyncio.sleep(hold_s)
            order.append(f"{name}-")

    await asyncio.gather(size("a", ("w", "x"), 0.02), size("b", ("w", "x"), 0.0), size("c", ("w", "y"), 0.0))
    assert order.index("a-") < order.index("b+")  # one at a time on a position
    assert order.index("c+") < order.index("a-")  # another position does not wait
    assert q._sizing == {}  # nothing left behind
