"""A reload arms or drops a trigger before it writes its event: when that write fails, the publishers are kicked all
the same (the watch set and the bands must follow the engine), and so are they when a later chunk of a resync's read
fails."""

from __future__ import annotations

from typing import Any

import pytest

from services.guard.domain.trigger_rows import TriggerRow
from tests.guard.inprocess import in_process_guard
from tests.guard.test_repeated_notices import stop


class _Kicks:
    def __init__(self) -> None:
        self.kicks = 0

    def kick(self) -> None:
        self.kicks += 1


async def test_a_reload_whose_event_write_fails_still_kicks_the_publishers() -> None:
    guard, store = in_process_guard([])
    watch = guard.watch = _Kicks()  # type: ignore[assignment]

    async def get(_tid: str) -> TriggerRow:
        return stop(1)

    async def record_observed(*_a: Any) -> None:
        raise ConnectionError("PostgreSQL down")

    store.get = get  # type: ignore[attr-defined]
    store.record_observed = record_observed  # type: ignore[attr-defined]
    with pytest.raises(ConnectionError):
        await guard.changes.reload("s")
    assert guard.engine.get("s") is not None  # armed
    assert watch.kicks == 1, "the watch set is not told of the trigger armed"


async def test_a_resync_whose_later_chunk_fails_still_kicks_the_publishers() -> None:
    guard, store = in_process_guard([])
    watch = guard.watch = _Kicks()  # type: ignore[assignment]
    reads = 0

    async def get_many(ids: list[str]) -> dict[str, TriggerRow]:
        nonlocal reads
        reads += 1
        if reads > 1:
            raise ConnectionError("PostgreSQL down")
        return {tid: stop(1) for tid in ids}

    store.get_many = get_many  # type: ignore[attr-defined]
    with pytest.raises(ConnectionError):
        await guard.changes.reload_many(["s", "t"], chunk=1)
    assert guard.engine.get("s") is not None
    assert watch.kicks == 1
