"""The watched set: differences announced on ``tt:watch:changed`` are applied as they are, sets are read
whole only when asked (or when a message is not understood), on real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from common.marketstate import (
    WATCH_CHANNEL,
    WATCH_POSITIONS,
    WATCH_TRIGGERS,
    WatchChange,
    change_watch_set,
    parse_watch_change,
    watch_diff,
)
from services.ingest.metrics import IngestMetrics
from services.ingest.watch import WatchSet
from tests.helpers import eventually


@pytest.mark.parametrize(("message", "expected"), [
    (watch_diff(WATCH_TRIGGERS, {"b", "a"}, {"c"}), WatchChange(WATCH_TRIGGERS, ("a", "b"), ("c",))),
    (watch_diff(WATCH_POSITIONS, [], ["x"]), WatchChange(WATCH_POSITIONS, (), ("x",))),
    (watch_diff(WATCH_TRIGGERS, reset=True), WatchChange(WATCH_TRIGGERS, reread=True)),
    (WATCH_POSITIONS, WatchChange(WATCH_POSITIONS, reread=True)),
    (WATCH_TRIGGERS.encode(), WatchChange(WATCH_TRIGGERS, reread=True)),
    ("positions", WatchChange(WATCH_POSITIONS, reread=True)),  # what executors sent before differences
    ('{"set": "tt:watch:other", "added": ["a"]}', None),
    ('{"set": "tt:watch:triggers", "added": "a"}', None),
    ('{"set": "tt:watch:triggers", "added": [1]}', None),
    ("[1, 2]", None),
    ("{not json", None),
    ("", None),
])
def test_watch_change_messages(message: str | bytes, expected: WatchChange | None) -> None:
    assert parse_watch_change(message) == expected


@pytest.fixture
async def watching(r: aioredis.Redis) -> AsyncIterator[tuple[WatchSet, list[set[str]]]]:
    await r.sadd(WATCH_TRIGGERS, *(f"t{i}" for i in range(500)))
    await r.sadd(WATCH_POSITIONS, "p1", "shared")
    announced: list[set[str]] = []  # the whole watched set after each announcement
    watched: set[str] = set()

    async def on_change(added: set[str], removed: set[str]) -> None:
        assert not added & removed
        assert not added & watched and removed <= watched  # a difference from what was announced before
        watched.update(added)
        watched.difference_update(removed)
        announced.append(set(watched))

    ws = WatchSet(r, on_change, refresh_s=3600, metrics=IngestMetrics())
    task = asyncio.create_task(ws.run())
    await eventually(lambda: announced and len(announced[-1]) == 502)
    yield ws, announced
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)



@pytest.mark.integration
async def test_differences_are_applied_without_reading_the_sets_again(
        r: aioredis.Redis, watching: tuple[WatchSet, list[set[str]]]) -> None:
    ws, announced = watching
    reads = ws.stats.full_reads
    await change_watch_set(r, WATCH_TRIGGERS, ["new", "shared"], ["t0", "t1"])
    await eventually(lambda: "new" in announced[-1] and "t0" not in announced[-1])
    # an asset leaving one set stays watched while the other set holds it
    await change_watch_set(r, WATCH_TRIGGERS, [], ["shared"])
    await change_watch_set(r, WATCH_POSITIONS, ["p2"], ["p1"])
    await eventually(lambda: "p2" in announced[-1])
    assert "shared" in announced[-1] and "p1" not in announced[-1]
    assert announced[-1] == await ws.compute()  # what Redis holds
    assert ws.stats.full_reads == reads + 2  # only the compute() just above
    assert ws.stats.diffs == 3


@pytest.mark.integration
async def test_a_set_name_is_read_again_and_a_message_not_understood_rereads_everything(
        r: aioredis.Redis, watching: tuple[WatchSet, list[set[str]]]) -> None:
    ws, announced = watching
    await r.sadd(WATCH_POSITIONS, "quiet")  # written without a difference
    await r.publish(WATCH_CHANNEL, WATCH_POSITIONS)
    await eventually(lambda: "quiet" in announced[-1])
    await r.srem(WATCH_TRIGGERS, "t5")
    await r.publish(WATCH_CHANNEL, "{garbage")
    await eventually(lambda: "t5" not in announced[-1])
    assert ws.stats.unknown_messages == 1
    assert ws.metrics is not None and ws.metrics.count("parse_errors", "watch", "NOT_A_WATCH_CHANGE") == 1
    await change_watch_set(r, WATCH_TRIGGERS, ["after"], [])  # the loop goes on
    await eventually(lambda: "after" in announced[-1])


@pytest.mark.integration
async def test_a_recent_leader_trade_asset_is_announced_without_reading_the_sets(
        watching: tuple[WatchSet, list[set[str]]]) -> None:
    ws, announced = watching
    reads = ws.stats.full_reads
    ws.note_trade_asset("traded")
    await eventually(lambda: "traded" in announced[-1])
    assert ws.stats.full_reads == reads


@pytest.mark.integration
async def test_only_what_changed_is_announced_and_an_asset_stays_while_any_source_holds_it(
        r: aioredis.Redis) -> None:
    await r.sadd(WATCH_TRIGGERS, *(f"t{i}" for i in range(1000)), "both")
    await r.sadd(WATCH_POSITIONS, "both", "p1")
    diffs: list[tuple[set[str], set[str]]] = []

    async def on_change(added: set[str], removed: set[str]) -> None:
        diffs.append((added, removed))

    now = [1000.0]
    ws = WatchSet(r, on_change, refresh_s=3600, recent_ttl_s=60, clock=lambda: now[0])
    await ws.refresh()
    assert len(diffs) == 1 and len(diffs[0][0]) == 1002 and not diffs[0][1]
    await change_watch_set(r, WATCH_TRIGGERS, [], ["both", "t1"])  # as the service would hear of it
    await ws.apply_change(WatchChange(WATCH_TRIGGERS, removed=("both", "t1")))
    await ws.announce()
    assert diffs[-1] == (set(), {"t1"})  # "both" is still a position
    ws.note_trade_asset("p1")  # held already: joins nothing
    ws.note_trade_asset("new")
    await change_watch_set(r, WATCH_POSITIONS, [], ["p1", "both"])
    await ws.apply_change(WatchChange(WATCH_POSITIONS, removed=("p1", "both")))
    await ws.announce()
    assert diffs[-1] == ({"new"}, {"both"})  # p1 stays: a recent trade asset
    await r.sadd(WATCH_TRIGGERS, "quiet")
    await r.srem(WATCH_TRIGGERS, "t2")
    await ws.refresh()  # a whole read announces its difference only
    assert diffs[-1] == ({"quiet"}, {"t2"})
    now[0] += 61  # the recent assets expire
    await ws.refresh()
    assert diffs[-1] == (set(), {"p1", "new"})
    assert ws.current == await ws.compute() == {f"t{i}" for i in range(3, 1000)} | {"t0", "quiet"}
