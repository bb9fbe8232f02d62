"""A consumer cancelled while its handler awaits a client library that swallows the cancellation (redis-py may
answer a command whose reply arrived after the cancel as if nothing happened) stops after that item: it handles
no later item, and whoever cancelled it does not wait for ever (``common.cancel``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from common.consumer import ResumableConsumer
from tests.executor.test_dead_letters import Cursors


@pytest.mark.parametrize("batches", [False, True])
async def test_a_consumer_whose_handler_swallowed_its_cancellation_handles_no_further_item(batches: bool) -> None:
    entered = asyncio.Event()
    handled: list[str] = []

    async def handle(item: str) -> None:
        handled.append(item)
        entered.set()
        with contextlib.suppress(asyncio.CancelledError):  # its reply came back all the same: the library returns it
            await asyncio.sleep(10)  # a Redis command under way

    async def stream(after: str) -> AsyncIterator[tuple[str, str]]:
        for cursor in ("1-0", "2-0"):
            if cursor > after:
                yield cursor, cursor
            await entered.wait()  # the next item comes while the first is handled (in a batch of its own)
        await asyncio.Event().wait()

    async def handle_batch(items: list[str]) -> None:
        for item in items:
            await handle(item)

    consumer = ResumableConsumer("c", stream, handle, Cursors(), start="0-0",
                                 handle_batch=handle_batch if batches else None)
    await _cancelled_while_handling(consumer, entered, handled)


async def test_a_failed_batch_retried_item_by_item_stops_at_the_item_that_swallowed_the_cancellation() -> None:
    entered = asyncio.Event()
    handled: list[str] = []

    async def handle(item: str) -> None:
        handled.append(item)
        entered.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(10)

    async def stream(after: str) -> AsyncIterator[tuple[str, str]]:
        for cursor in ("1-0", "2-0"):  # read ahead together: one batch
            if cursor > after:
                yield cursor, cursor
        await asyncio.Event().wait()

    async def handle_batch(items: list[str]) -> None:
        raise ValueError("the batch fails: its items are handled one by one")

    consumer = ResumableConsumer("c", stream, handle, Cursors(), start="0-0", handle_batch=handle_batch)
    await _cancelled_while_handling(consumer, entered, handled)


async def _cancelled_while_handling(consumer: ResumableConsumer[str], entered: asyncio.Event,
                                    handled: list[str]) -> None:
    """Run ``consumer``, cancel it once its first item is being handled: it handles no other and stops."""
    task = asyncio.create_task(consumer.run())
    await asyncio.wait_for(entered.wait(), 5)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2.0)
    try:
        assert handled == ["1-0"]
        assert done, "the cancelled consumer did not stop"
    finally:
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
