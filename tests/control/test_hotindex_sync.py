"""The Redis hot index follows PostgreSQL: live updates within 100 ms, invalidations, and self-healing resync."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from common import hotindex
from common.embedded import start_redis, stop_pid
from services.control.app import RunningControl, start
from services.control.config import Settings
from services.control.hotsync import SYNCED_KEY
from tests.control.conftest import AUTH, LEADER, Stubs, leader, make_settings, stubs_for, subscription
from tests.control.support import execute
from tests.helpers import eventually
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import subscription_pb2 as spb

pytestmark = pytest.mark.integration


async def _subscribe(client: aioredis.Redis) -> Any:
    pubsub = client.pubsub()
    await pubsub.subscribe(hotindex.CHANNEL)
    await pubsub.get_message(timeout=1)
    return pubsub


async def _change_within(pubsub: Any, seconds: float) -> hotindex.IndexChange:
    """The next invalidation, which must arrive within ``seconds`` of now."""
    deadline = time.monotonic() + seconds
    while True:
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=max(0.0, deadline - time.monotonic()))
        if msg is not None:
            return hotindex.IndexChange.parse(msg["data"])
        assert time.monotonic() < deadline, f"no invalidation within {seconds * 1000:.0f} ms"


async def test_every_change_reaches_the_index_within_100ms(stubs: Stubs, redis_client: aioredis.Redis) -> None:
    pubsub = await _subscribe(redis_client)
    started = time.monotonic()
    sub = await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()), metadata=AUTH)
    change = await _change_within(pubsub, 0.1)
    assert time.monotonic() - started < 1.0
    assert (change.leader, change.subscription_id, change.op) == (LEADER, sub.id, "upsert")
    [indexed] = await hotindex.subscriptions_of(redis_client, LEADER)
    expected = spb.Subscription()
    expected.CopyFrom(sub)
    expected.ClearField("stats")
    assert indexed == expected and await hotindex.leaders(redis_client) == {LEADER}

    await stubs.subs.UpdateSubscription(pb.UpdateSubscriptionRequest(
        id=sub.id, subscription=spb.Subscription(sizing=spb.Sizing(ratio="0.2"))), metadata=AUTH)
    assert (await _change_within(pubsub, 0.1)).op == "upsert"
    [indexed] = await hotindex.subscriptions_of(redis_client, LEADER)
    assert indexed.sizing.ratio == "0.2"

    await stubs.subs.PauseSubscription(pb.PauseSubscriptionRequest(id=sub.id), metadata=AUTH)
    assert (await _change_within(pubsub, 0.1)).op == "remove"
    assert await hotindex.subscriptions_of(redis_client, LEADER) == []
    assert await hotindex.leaders(redis_client) == set()

    await stubs.subs.ResumeSubscription(pb.ResumeSubscriptionRequest(id=sub.id), metadata=AUTH)
    assert (await _change_within(pubsub, 0.1)).op == "upsert"
    assert len(await hotindex.subscriptions_of(redis_client, LEADER)) == 1

    version = await hotindex.version(redis_client)
    await stubs.subs.DeleteSubscription(pb.DeleteSubscriptionRequest(id=sub.id), metadata=AUTH)
    change = await _change_within(pubsub, 0.1)
    assert change.op == "remove" and change.version == version + 1
    assert await hotindex.subscriptions_of(redis_client, LEADER) == []
    await pubsub.aclose()


async def test_failed_requests_do_not_touch_the_index(stubs: Stubs, redis_client: aioredis.Redis) -> None:
    await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()), metadata=AUTH)
    version = await hotindex.version(redis_client)
    bad = subscription(leader_proxy=leader(1))
    bad.sizing.ratio = "-1"
    for request in (pb.CreateSubscriptionRequest(subscription=bad),
                    pb.CreateSubscriptionRequest(subscription=subscription())):  # invalid, then duplicate
        with contextlib.suppress(grpc.aio.AioRpcError):
            await stubs.subs.CreateSubscription(request, metadata=AUTH)
    assert await hotindex.version(redis_client) == version


async def test_resync_heals_lost_and_stale_entries(control: RunningControl, stubs: Stubs,
                                                   redis_client: aioredis.Redis) -> None:
    subs = [await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(
        subscription=subscription(leader_proxy=leader(i))), metadata=AUTH) for i in range(3)]
    paused = await stubs.subs.PauseSubscription(pb.PauseSubscriptionRequest(id=subs[2].id), metadata=AUTH)
    assert (await control.sync.resync()).upserted == 0  # already in line: nothing rewritten
    await redis_client.delete(hotindex.leader_key(leader(0)))  # lost entry
    await redis_client.hset(hotindex.leader_key(leader(1)), subs[1].id, "{}")  # corrupted entry
    await redis_client.hset(hotindex.leader_key(leader(1)), "sub_ghost", "{}")  # unknown id
    await hotindex.upsert(redis_client, _active(paused))  # paused but indexed
    await redis_client.hset(hotindex.leader_key(leader(9)), "sub_orphan", "{}")  # hash outside tt:leaders
    report = await control.sync.resync()
    assert (report.upserted, report.removed) == (2, 3)
    assert await hotindex.leaders(redis_client) == {leader(0), leader(1)}
    assert [s.id for s in await hotindex.subscriptions_of(redis_client, leader(0))] == [subs[0].id]
    assert [s.id for s in await hotindex.subscriptions_of(redis_client, leader(1))] == [subs[1].id]
    assert await redis_client.exists(hotindex.leader_key(leader(9)), hotindex.leader_key(leader(2))) == 0


async def test_resync_puts_back_a_leader_missing_from_the_followed_set(control: RunningControl, stubs: Stubs,
                                                                      redis_client: aioredis.Redis) -> None:
    """Its hash intact, the leader left tt:leaders (an evicted or deleted member): ingest follows exactly that
    set, so every follower of the leader missed every copy until the leader's next change."""
    sub = await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()), metadata=AUTH)
    await redis_client.srem(hotindex.LEADERS_KEY, LEADER)
    version = await hotindex.version(redis_client)
    assert (await control.sync.resync()).upserted == 1
    assert await hotindex.leaders(redis_client) == {LEADER}
    assert await hotindex.version(redis_client) == version + 1  # announced: ingest and the router follow
    assert [s.id for s in await hotindex.subscriptions_of(redis_client, LEADER)] == [sub.id]
    assert (await control.sync.resync()).upserted == 0


def _active(sub: spb.Subscription) -> spb.Subscription:
    copy = spb.Subscription()
    copy.CopyFrom(sub)
    copy.state = spb.SUBSCRIPTION_STATE_ACTIVE
    return copy


async def test_index_is_rebuilt_at_start_and_periodically(settings_factory: Callable[..., Settings],
                                                          redis_client: aioredis.Redis) -> None:
    first = await start(settings_factory())
    stubs = stubs_for(first.port)
    sub = await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()), metadata=AUTH)
    await stubs.channel.close()
    await first.stop()

    await redis_client.flushdb()
    second = await start(settings_factory(index_resync_s=0.1))
    try:
        [indexed] = await hotindex.subscriptions_of(redis_client, LEADER)  # rebuilt before serving
        assert indexed.id == sub.id
        await redis_client.flushdb()
        await eventually(lambda: hotindex.leaders(redis_client), timeout_s=5)  # healed by the loop
        assert [s.id for s in await hotindex.subscriptions_of(redis_client, LEADER)] == [sub.id]
    finally:
        await second.stop()


async def test_steady_resync_rereads_nothing_and_catches_changes_made_behind_it(
        control: RunningControl, stubs: Stubs, redis_client: aioredis.Redis, db_url: str) -> None:
    subs = [await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(
        subscription=subscription(leader_proxy=leader(i))), metadata=AUTH) for i in range(1, 5)]
    report = await control.sync.resync()
    assert (report.leaders, report.reread, report.upserted, report.removed) == (4, 0, 0, 0)
    # Another writer changes a row (and its version) without telling this process.
    execute(db_url, "UPDATE subscriptions SET label = 'changed elsewhere', version = version + 1 WHERE id = %s",
            (subs[2].id,))
    report = await control.sync.resync()
    assert (report.reread, report.upserted) == (1, 1)
    [indexed] = await hotindex.subscriptions_of(redis_client, leader(3))
    assert indexed.label == "changed elsewhere"
    assert (await control.sync.resync()).reread == 0


async def test_resync_compares_values_by_their_digest_in_redis(control: RunningControl, stubs: Stubs,
                                                               redis_client: aioredis.Redis) -> None:
    sub = await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(
        subscription=subscription(leader_proxy=leader(1), label="caf\u00e9 \u2602")), metadata=AUTH)
    assert (await control.sync.resync()).reread == 0  # the non-ASCII label digests alike in Redis and here
    key = hotindex.leader_key(leader(1))
    good = await redis_client.hget(key, sub.id)
    assert good is not None
    await redis_client.hset(key, sub.id, good + " ")  # same fields, another value
    report = await control.sync.resync()
    assert (report.reread, report.upserted) == (1, 1)
    assert await redis_client.hget(key, sub.id) == good


async def test_a_steady_index_is_checked_without_a_pass_until_redis_is_flushed_or_an_update_fails(
        control: RunningControl, stubs: Stubs, redis_client: aioredis.Redis) -> None:
    sub = await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()),
                                              metadata=AUTH)
    passes = control.sync.passes
    assert await control.sync.tick() is None and control.sync.passes == passes  # one round trip, no pass
    await redis_client.flushdb()  # the marker goes with everything else
    report = await control.sync.tick()
    assert report is not None and report.upserted == 1
    assert [s.id for s in await hotindex.subscriptions_of(redis_client, LEADER)] == [sub.id]
    assert await control.sync.tick() is None
    control.sync.mark_dirty()  # a failed update
    assert await control.sync.tick() is not None
    assert await control.sync.tick() is None


async def test_a_full_pass_runs_every_full_interval_whatever_the_check_says(
        settings_factory: Callable[..., Settings], redis_client: aioredis.Redis) -> None:
    running = await start(settings_factory(index_full_resync_s=1.0))
    stubs = stubs_for(running.port)
    try:
        sub = await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()),
                                                  metadata=AUTH)
        assert await running.sync.in_line()
        await redis_client.delete(hotindex.leader_key(LEADER))  # behind control's back, marker untouched
        report = await eventually(lambda: running.sync.tick(), timeout_s=10)
        assert report.upserted == 1
        assert [s.id for s in await hotindex.subscriptions_of(redis_client, LEADER)] == [sub.id]
    finally:
        await stubs.channel.close()
        await running.stop()


async def test_a_restarted_redis_is_resynced_even_when_its_data_came_back(tmp_path: Path, db_url: str) -> None:
    workdir = tmp_path / "redis"
    url, pid = start_redis(workdir, durable=True)
    port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
    running = await start(make_settings(db_url, url))
    stubs = stubs_for(running.port)
    raw = aioredis.from_url(url, decode_responses=True)
    try:
        sub = await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()),
                                                  metadata=AUTH)
        assert await running.sync.in_line()
        stop_pid(pid)
        start_redis(workdir, port=port, durable=True)  # reloads its append-only file, the marker included
        assert await raw.get(SYNCED_KEY) is not None
        await raw.delete(hotindex.leader_key(LEADER))  # a write the file had not got before the restart

        async def ticked() -> object:
            with contextlib.suppress(RedisConnectionError, OSError):  # the client's first call after the restart
                return await running.sync.tick()
            return None

        report = await eventually(ticked, timeout_s=10)
        assert report.upserted == 1  # type: ignore[attr-defined]
        assert [s.id for s in await hotindex.subscriptions_of(raw, LEADER)] == [sub.id]
    finally:
        await raw.aclose()
        await stubs.channel.close()
        await running.stop()
        pidfile = workdir / "redis.pid"
        if pidfile.exists():
            stop_pid(int(pidfile.read_text().strip()))
