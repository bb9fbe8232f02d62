"""The reconnecting pub/sub follower on real Redis: a full reload on every (re)subscribe, bad messages counted
and skipped, failures retried with backoff, the periodic tick."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson
import pytest
import redis.asyncio as aioredis

from common.pubsub import ChannelFollower, Data
from common.retry import Backoff
from tests.helpers import eventually

CHANNEL = "tt:test:changes"
log = logging.getLogger(__name__)


def _parse(data: Data) -> int:
    return int(orjson.loads(data)["n"])


@dataclass
class Seen:
    """What the follower handed over."""

    reloads: int = 0
    fail_reloads: int = 0
    messages: list[int] = field(default_factory=list)
    bad: list[Data] = field(default_factory=list)
    ticks: int = 0

    async def reload(self) -> None:
        if self.fail_reloads:
            self.fail_reloads -= 1
            raise ConnectionError("reload failed")
        self.reloads += 1

    async def on_message(self, n: int) -> None:
        self.messages.append(n)

    async def on_bad(self, data: Data) -> None:
        self.bad.append(data)

    async def on_tick(self) -> None:
        self.ticks += 1


def _follower(r: aioredis.Redis, seen: Seen, **kw: object) -> ChannelFollower[int]:
    return ChannelFollower(r, CHANNEL, parse=_parse, on_message=seen.on_message, reload=seen.reload,
                           on_bad=seen.on_bad, on_tick=seen.on_tick, log=log, failure_log="test follower failed",
                           bad_log="test follower: bad message", backoff=Backoff(0.01, 0.05),
                           **kw)  # type: ignore[arg-type]


@pytest.fixture
async def running(r: aioredis.Redis) -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        task.cancel()
    done, _ = await asyncio.wait(tasks, timeout=5) if tasks else (set(), set())
    assert len(done) == len(tasks), "a follower ignored its cancellation"


async def _subscribed(r: aioredis.Redis) -> bool:
    return dict(await r.pubsub_numsub(CHANNEL)).get(CHANNEL, 0) > 0  # type: ignore[no-any-return]


@pytest.mark.integration
async def test_reloads_in_full_on_every_subscribe_and_goes_on_after_redis_drops_it(
        r: aioredis.Redis, running: list[asyncio.Task[None]]) -> None:
    seen = Seen()
    follower = _follower(r, seen, tick_s=3600)
    running.append(asyncio.create_task(follower.run()))
    await eventually(lambda: seen.reloads == 1)
    await eventually(lambda: _subscribed(r))
    await r.publish(CHANNEL, orjson.dumps({"n": 1}))
    await eventually(lambda: seen.messages == [1])

    await r.client_kill_filter(_type="pubsub")  # the subscription's connection is gone
    await eventually(lambda: seen.reloads == 2)  # subscribed again: whatever was published meanwhile is reloaded
    await eventually(lambda: _subscribed(r))
    await r.publish(CHANNEL, orjson.dumps({"n": 2}))
    await eventually(lambda: seen.messages == [1, 2])
    assert follower.failures == 1 and follower.subscribes == 2


@pytest.mark.integration
async def test_a_bad_message_is_counted_and_handed_over_and_the_loop_goes_on(
        r: aioredis.Redis, running: list[asyncio.Task[None]]) -> None:
    seen = Seen()
    follower = _follower(r, seen, tick_s=3600)
    running.append(asyncio.create_task(follower.run()))
    await eventually(lambda: _subscribed(r))
    for raw in (b"{garbage", b'{"m": 1}', b'{"n": "x"}', b'[1]'):
        await r.publish(CHANNEL, raw)
    await r.publish(CHANNEL, orjson.dumps({"n": 3}))
    await eventually(lambda: seen.messages == [3])
    assert seen.bad == ["{garbage", '{"m": 1}', '{"n": "x"}', "[1]"]  # r decodes replies
    assert (follower.bad_messages, follower.messages, follower.failures, seen.reloads) == (4, 5, 0, 1)


@pytest.mark.integration
async def test_a_failed_reload_is_retried_after_a_backoff(
        r: aioredis.Redis, running: list[asyncio.Task[None]]) -> None:
    seen = Seen(fail_reloads=2)
    follower = _follower(r, seen, tick_s=3600)
    running.append(asyncio.create_task(follower.run()))
    await eventually(lambda: seen.reloads == 1)
    assert follower.failures == 2 and follower.subscribes == 1


@pytest.mark.integration
async def test_ticks_come_on_a_timer_while_messages_flow(r: aioredis.Redis, running: list[asyncio.Task[None]]) -> None:
    seen = Seen()
    running.append(asyncio.create_task(_follower(r, seen, tick_s=0.1, poll_s=0.02).run()))
    await eventually(lambda: _subscribed(r))
    for n in range(30):
        await r.publish(CHANNEL, orjson.dumps({"n": n}))
        await asyncio.sleep(0.01)
    await eventually(lambda: seen.ticks >= 2 and len(seen.messages) == 30)


@pytest.mark.integration
async def test_drained_messages_are_handled_before_one_after_poll(
        r: aioredis.Redis, running: list[asyncio.Task[None]]) -> None:
    seen = Seen()
    polls: list[int] = []

    async def after_poll(handled: int) -> None:
        if handled:
            polls.append(handled)

    follower = _follower(r, seen, tick_s=3600, after_poll=after_poll, drain_max=100, poll_s=0.05)
    hold = asyncio.Event()
    real_reload = seen.reload

    async def slow_reload() -> None:  # the messages pile up while the follower reloads
        await real_reload()
        await hold.wait()

    follower.reload = slow_reload
    running.append(asyncio.create_task(follower.run()))
    await eventually(lambda: seen.reloads == 1)
    for n in range(10):
        await r.publish(CHANNEL, orjson.dumps({"n": n}))
    hold.set()
    await eventually(lambda: len(seen.messages) == 10)
    assert polls == [10]
