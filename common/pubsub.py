"""Following Redis pub/sub channels through Redis failures: the one subscribe / reload / reconnect loop.

Pub/sub is fire-and-forget: what is published while nobody listens (a reconnect, a restart) is gone. So
the follower calls ``reload()`` after every (re)subscribe, once Redis confirmed the subscription (a SUBSCRIBE is
sent without waiting for its answer; a change made during the reload is announced too), and the caller reloads its
whole state there; a periodic ``on_tick`` check covers a message lost otherwise. A subscription not confirmed
within ``confirm_s`` is a failure like any other. A message ``parse`` refuses is counted, logged and handed to
``on_bad``: it never ends the loop. Any other failure (Redis down, a reload that failed) closes the
subscription and starts over after a jittered backoff: subscribe, reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Generic, TypeVar

from common.cancel import reraise_if_cancelling
from common.retry import Backoff

T = TypeVar("T")
Data = str | bytes
BAD_INPUT = (ValueError, KeyError, TypeError)  # what a parser raises on a message it does not understand
RESUBSCRIBE = Backoff(0.2, 5.0)


@dataclass(eq=False)
class ChannelFollower(Generic[T]):
    """Subscribes to ``channel`` and hands each parsed message to ``on_message`` until cancelled.

    - ``reload()`` on every (re)subscribe, once Redis confirmed it (within ``confirm_s``, else a failure), before
      any message;
    - ``on_tick()`` every ``tick_s`` (with ``tick_when_quiet``: only when no message was waiting);
    - ``after_poll(handled)`` after every read of the channel (at most ``poll_s`` apart), with the number of
      messages taken in it (up to ``drain_max`` at once, the first waited for, the rest already there);
    - a message ``parse`` refuses (ValueError, KeyError, TypeError) is counted in ``bad_messages``, logged as
      ``bad_log`` and handed to ``on_bad``;
    - any other exception: logged as ``failure_log``, then resubscribe after ``backoff``.
    """

    redis: Any
    channel: str
    _: KW_ONLY
    parse: Callable[[Data], T]
    on_message: Callable[[T], Awaitable[None]]
    reload: Callable[[], Awaitable[None]]
    log: logging.Logger
    failure_log: str
    bad_log: str
    on_bad: Callable[[Data], Awaitable[None]] | None = None
    on_tick: Callable[[], Awaitable[None]] | None = None
    tick_s: float = 5.0
    tick_when_quiet: bool = False
    after_poll: Callable[[int], Awaitable[None]] | None = None
    poll_s: float = 1.0
    confirm_s: float = 5.0
    drain_max: int = 1
    backoff: Backoff = RESUBSCRIBE
    rng: random.Random = field(default_factory=random.Random)
    messages: int = field(default=0, init=False)
    bad_messages: int = field(default=0, init=False)
    subscribes: int = field(default=0, init=False)
    failures: int = field(default=0, init=False)

    async def run(self) -> None:
        """Follow the channel until cancelled, starting over (subscribe, reload) after any failure."""
        attempt = 0
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                if not await confirmed(pubsub, poll_s=self.poll_s, deadline=time.monotonic() + self.confirm_s):
                    raise TimeoutError(f"subscription to {self.channel} not confirmed within {self.confirm_s}s")
                await self.reload()
                self.subscribes += 1
                attempt = 0
                await self._follow(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis trouble, a failed reload: resubscribe and reload
                reraise_if_cancelling()
                self.failures += 1
                delay = self.backoff.delay(attempt, self.rng.random())
                attempt += 1
                self.log.warning(self.failure_log, extra={"error": repr(exc)[:300], "delay_s": delay})
                await asyncio.sleep(delay)
            finally:
                with contextlib.suppress(Exception):  # closing a broken connection
                    await pubsub.aclose()

    async def _follow(self, pubsub: Any) -> None:
        next_tick = time.monotonic() + self.tick_s
        while True:
            timeout = max(0.0, min(self.poll_s, next_tick - time.monotonic()))
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
            reraise_if_cancelling()  # a cancel that met the read's timeout came back as that timeout
            handled = 0
            while msg is not None:
                if msg.get("type") == "message":
                    await self._handle(msg["data"])
                    handled += 1
                msg = (await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.0)
                       if handled < self.drain_max else None)
            if time.monotonic() >= next_tick and not (handled and self.tick_when_quiet):
                next_tick = time.monotonic() + self.tick_s
                if self.on_tick is not None:
                    await self.on_tick()
            if self.after_poll is not None:
                await self.after_poll(handled)

    async def _handle(self, data: Data) -> None:
        self.messages += 1
        try:
            parsed = self.parse(data)
        except BAD_INPUT:
            self.bad_messages += 1
            self.log.warning(self.bad_log, extra={"channel": self.channel, "data": str(data)[:200]})
            if self.on_bad is not None:
                await self.on_bad(data)
            return
        await self.on_message(parsed)


async def confirmed(pubsub: Any, *, poll_s: float, deadline: float | None = None,
                    clock: Callable[[], float] = time.monotonic) -> bool:
    """Wait until Redis confirmed ``pubsub``'s subscription (a SUBSCRIBE is sent without waiting for its answer: a read
    on another connection could be served before it, and a message published between them would be missed); False
    when ``deadline`` (of ``clock``; None: none) came first."""
    while deadline is None or (left := deadline - clock()) > 0:
        timeout = poll_s if deadline is None else min(left, poll_s)
        msg = await pubsub.get_message(ignore_subscribe_messages=False, timeout=timeout)
        reraise_if_cancelling()  # a cancel that met the read's timeout came back as that timeout
        if msg is not None and msg.get("type") in ("subscribe", b"subscribe"):
            return True
    return False
