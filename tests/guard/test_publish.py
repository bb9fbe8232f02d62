"""The watched-asset publisher on real Redis: writes differences, skips the diff while the version stands."""

from __future__ import annotations

from typing import Any

from common.marketstate import WATCH_TRIGGERS
from services.guard.publish import WatchPublisher


async def test_watch_set_follows_the_assets_and_an_unchanged_version_skips_the_work(redis: Any) -> None:
    assets = {"a", "b"}
    calls = 0
    version = 1

    def current() -> set[str]:
        nonlocal calls
        calls += 1
        return set(assets)

    pub = WatchPublisher(redis, current, lambda: version)
    await pub.step()
    assert await redis.smembers(WATCH_TRIGGERS) == {"a", "b"} and calls == 1
    await pub.step()  # kicked again, nothing changed: not even the asset set is computed
    assert calls == 1
    assets.discard("a")
    assets.add("c")
    version = 2
    await pub.step()
    assert await redis.smembers(WATCH_TRIGGERS) == {"b", "c"} and calls == 2


async def test_without_a_version_every_step_compares(redis: Any) -> None:
    assets = {"a"}
    pub = WatchPublisher(redis, lambda: set(assets))
    await pub.step()
    assets.add("b")
    await pub.step()
    assert await redis.smembers(WATCH_TRIGGERS) == {"a", "b"}
