"""The executor's answers to SELLs: settled in batches, a failed batch does not stop the next."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from services.guard.order_flow import Answers
from tests.helpers import eventually
from tradingtools.execution.v1 import execution_pb2 as epb


def _ev(n: int) -> epb.OrderEvent:
    return epb.OrderEvent(event_id=f"ev_{n}", client_order_id=f"co_{n}", trigger_id=f"trg_{n}")


class _Tasks:
    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[Any]] = []

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.tasks.append(asyncio.get_running_loop().create_task(coro))


async def test_answers_that_come_together_are_handled_in_one_batch() -> None:
    batches: list[list[str]] = []

    async def handle(events: list[epb.OrderEvent]) -> None:
        batches.append([e.event_id for e in events])

    tasks = _Tasks()
    answers = Answers(handle, tasks.spawn, gather_s=0.05)
    for n in range(3):
        answers.add(_ev(n))
    await eventually(lambda: batches == [["ev_0", "ev_1", "ev_2"]])
    answers.add(_ev(3))
    await eventually(lambda: batches[-1] == ["ev_3"])
    assert len(tasks.tasks) == 2  # one runner per burst, none left waiting
    await asyncio.gather(*tasks.tasks)


async def test_a_failed_batch_is_counted_and_the_next_one_is_handled() -> None:
    seen: list[str] = []

    async def handle(events: list[epb.OrderEvent]) -> None:
        if events[0].event_id == "ev_0":
            raise ConnectionError("postgres down")
        seen.extend(e.event_id for e in events)

    tasks = _Tasks()
    answers = Answers(handle, tasks.spawn)
    answers.add(_ev(0))
    await eventually(lambda: answers.failed_batches == 1)
    answers.add(_ev(1))
    await eventually(lambda: seen == ["ev_1"])
    await asyncio.gather(*tasks.tasks)
