"""Following leaders from the hot index: a leader whose only subscription was PAUSED left the followed set
(its trades were not ingested); on RESUME it is followed again and backfilled from the resume, not from
``now - lookback``, which took in the trades it made while paused (and the router copied them)."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from common import hotindex
from services.ingest.targets import FollowedLeaders, HotIndexWatcher
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.control.v1 import subscription_pb2 as spb

pytestmark = pytest.mark.integration

LEADER = "0x" + "f5" * 20
NOW = 1_800_000_000.0


def _sub(sid: str, *, created: float, updated: float) -> spb.Subscription:
    sub = spb.Subscription(id=sid, follower_wallet_id="w_1", follower_proxy="0x" + "6a" * 20, leader_proxy=LEADER,
                           state=spb.SUBSCRIPTION_STATE_ACTIVE, mode=cpb.EXECUTION_MODE_PAPER,  # type: ignore[arg-type]
                           sizing=spb.Sizing(mode=spb.SIZING_MODE_FIXED_USD, fixed_usd="25"))
    sub.create_time.seconds = int(created)
    sub.update_time.seconds = int(updated)
    return sub


async def test_a_resume_is_not_backfilled_with_the_trades_made_while_paused(r: aioredis.Redis) -> None:
    clock = {"t": NOW - 200}
    announced: list[tuple[str, float]] = []
    followed = FollowedLeaders()
    watcher = HotIndexWatcher(r, followed, on_new_leader=lambda leader, since: announced.append((leader, since)),
                              clock=lambda: clock["t"])

    created = NOW - 3600
    await hotindex.upsert(r, _sub("sub_1", created=created, updated=created))
    await watcher.reload()
    assert LEADER in followed

    # PAUSE at NOW-100: the leader has no ACTIVE subscription left; ingest stops following it.
    paused_at = NOW - 100
    clock["t"] = paused_at
    v = await hotindex.remove(r, LEADER, "sub_1")
    await watcher.apply(f'{{"leader":"{LEADER}","subscriptionId":"sub_1","op":"remove","version":{v}}}')
    assert LEADER not in followed
    # ... the leader trades at NOW-60 (not ingested: not followed) ...

    # RESUME at NOW (control sets update_time = NOW).
    clock["t"] = NOW
    v = await hotindex.upsert(r, _sub("sub_1", created=created, updated=NOW))
    await watcher.apply(f'{{"leader":"{LEADER}","subscriptionId":"sub_1","op":"upsert","version":{v}}}')
    [(leader, since)] = announced
    assert leader == LEADER
    assert since >= paused_at, (
        f"backfill starts {NOW - since:.0f} s before the resume: the {NOW - paused_at:.0f} s the subscription "
        "was PAUSED are backfilled, so the leader's trades of that time are copied after the resume")

    # a brand-new subscription is backfilled from its creation
    other = "0x" + "a1" * 20
    sub = _sub("sub_2", created=NOW - 30, updated=NOW - 30)
    sub.leader_proxy = other
    v = await hotindex.upsert(r, sub)
    await watcher.apply(f'{{"leader":"{other}","subscriptionId":"sub_2","op":"upsert","version":{v}}}')
    assert announced[-1] == (other, NOW - 30)
