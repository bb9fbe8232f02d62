"""The pub/sub follower reloads only once Redis confirmed its subscription (real Redis): a SUBSCRIBE is sent without
waiting for its answer, so a reload served before it takes effect misses a change published between them, which is
not received either. A confirmation that does not come in time is a failure: resubscribe after the backoff."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from common.pubsub import ChannelFollower, Data
from common.retry import Backoff
from tests.helpers import eventually

pytestmark = pytest.mark.integration

CHANNEL = "tt:test:confirmed-follow"
log = logging.getLogger(__name__)


class LateSubscribes:
    """Wraps a Redis client: its pub/subs' SUBSCRIBE reaches Redis ``delay_s`` after ``subscribe`` returned (a slow
    link, a busy server), and the first ``lost`` pub/subs' never does; everything else is the client's."""

    def __init__(self, client: aioredis.Redis, delay_s: float, *, lost: int = 0) -> None:
        self._client = client
        self._delay_s = delay_s
        self.lost = lost
        self.sends: set[asyncio.Task[None]] = set()

    def pubsub(self, **kwargs: Any) -> Any:
        pubsub: Any = self._client.pubsub(**kwargs)
        execute = pubsub.execute_command
        lose = self.lost > 0
        self.lost -= lose

        async def send_later(args: tuple[Any, ...]) -> None:
            await asyncio.sleep(self._delay_s)
            await execute(*args)

        async def late(*args: Any) -> None:
            if args[0] != "SUBSCRIBE":
                return await execute(*args)
            await pubsub.connect()  # connected; the command is on its way
            if not lose:
                task = asyncio.create_task(send_later(args))
                self.sends.add(task)
                task.add_done_callback(self.sends.discard)
            return None

        pubsub.execute_command = late
        return pubsub

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def _parse(data: Data) -> int:
    return int(orjson.loads(data)["n"])


class Store:
    """What the follower reloads from; the first reload is followed at once by a change (a writer committing right
    after the read), published as its writer would."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self.rows = [1]
        self.held: list[int] = []  # the follower's copy
        self.reloads = 0
        self.receivers: list[int] = []  # how many subscribers each PUBLISH reached

    async def reload(self) -> None:
        self.held = list(self.rows)
        self.reloads += 1
        if self.reloads == 1:
            self.rows.append(2)
            self.receivers.append(await self.redis.publish(CHANNEL, orjson.dumps({"n": 2})))

    async def on_message(self, n: int) -> None:
        if n not in self.held:
            self.held.append(n)


def _follower(redis: Any, store: Store, **kw: Any) -> ChannelFollower[int]:
    return ChannelFollower(redis, CHANNEL, parse=_parse, on_message=store.on_message, reload=store.reload, log=log,
                           failure_log="test follower failed", bad_log="test follower: bad message",
                           tick_s=3600, poll_s=0.05, backoff=Backoff(0.01, 0.05), **kw)


@pytest.fixture
async def running(r: aioredis.Redis) -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        task.cancel()
    done, _ = await asyncio.wait(tasks, timeout=5) if tasks else (set(), set())
    assert len(done) == len(tasks), "a follower ignored its cancellation"


async def test_a_change_published_right_after_the_reload_read_is_received_while_the_subscribe_was_in_flight(
        r: aioredis.Redis, running: list[asyncio.Task[None]]) -> None:
    late = LateSubscribes(r, 0.3)
    store = Store(r)
    follower = _follower(late, store)
    running.append(asyncio.create_task(follower.run()))
    try:
        await eventually(lambda: store.reloads == 1)
        await eventually(lambda: store.held == [1, 2], timeout_s=3.0, message="the change after the read was lost")
        assert store.receivers == [1]  # it reached the follower's subscription, in place before the reload
        assert (follower.subscribes, follower.failures, follower.messages) == (1, 0, 1)
    finally:
        for task in late.sends:
            task.cancel()


async def test_a_subscription_never_confirmed_is_a_failure_and_subscribed_again(
        r: aioredis.Redis, running: list[asyncio.Task[None]]) -> None:
    late = LateSubscribes(r, 0.0, lost=1)
    store = Store(r)
    follower = _follower(late, store, confirm_s=0.3)
    running.append(asyncio.create_task(follower.run()))
    await eventually(lambda: follower.subscribes == 1)
    assert (follower.failures, store.reloads) == (1, 1)  # no reload on the subscription never confirmed
    assert store.receivers == [1]
    await eventually(lambda: store.held == [1, 2], timeout_s=3.0)
    assert await r.publish(CHANNEL, orjson.dumps({"n": 3})) == 1  # one subscription: the unconfirmed one was closed
    await eventually(lambda: store.held == [1, 2, 3], timeout_s=3.0)
