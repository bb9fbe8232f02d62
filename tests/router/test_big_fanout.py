"""A leader with tens of thousands of followers: the router splits its decision into parts that each fit in a
gRPC message, and the executor, reading them over the router's real stream, places every copy once while the
pipeline keeps flowing for everyone else."""

from __future__ import annotations

import time

import pytest

from common import hotindex
from common.grpcclient import MAX_MESSAGE_BYTES
from services.router.outbound import MAX_PART_BYTES
from tests.executor.conftest import TERMINAL_TYPES, rows, running_harness
from tests.helpers import eventually
from tests.router.conftest import LEADER, YES, Stack, leader_trade, persisted_orders, subscription
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration

FOLLOWERS = 20_000
OTHER_LEADER = "0x" + "0e" * 20


async def _index(stack: Stack, leader: str, subs: list) -> None:  # type: ignore[type-arg]
    """Put many ACTIVE subscriptions in the hot index at once (as control's upserts would, one by one)."""
    await stack.redis.hset(hotindex.leader_key(leader), mapping={s.id: hotindex.encode(s) for s in subs})
    await stack.redis.sadd(hotindex.LEADERS_KEY, leader)
    await stack.redis.incr(hotindex.VERSION_KEY)


@pytest.mark.timeout(600)
async def test_a_twenty_thousand_follower_fanout_is_split_posted_once_and_later_copies_still_flow(
        stack: Stack, redis_url: str, db_url: str) -> None:
    await _index(stack, LEADER, [subscription(f"sub_{i:05d}", f"w_{i:05d}") for i in range(FOLLOWERS)])
    await stack.add(subscription("sub_other", "w_other", leader=OTHER_LEADER))
    await stack.start_router()
    async with running_harness(redis_url, db_url) as harness:
        await harness.set_book(YES, [("0.39", "1000")], [("0.40", "100000000")])
        await harness.start_executor(TT_ROUTER_GRPC_TARGET=f"127.0.0.1:{stack.running.grpc.port}",  # type: ignore[union-attr]
                                     TT_TUNE_EXECUTOR_POST_TIMEOUT_S="10", TT_TUNE_EXECUTOR_QUERY_TIMEOUT_S="10")
        started = time.monotonic()
        await stack.publish(leader_trade("lt_big"), leader_trade("lt_after", wallet=OTHER_LEADER))

        # both decided (their rows are written right after the emit); then the log is read once
        await eventually(lambda: rows(db_url, "SELECT count(*) FROM routed_trades") == [(2,)], timeout_s=120)
        logged = await stack.routed()
        # the big decision went out in parts, each well inside one gRPC message, appended together in order
        big = [r for r in logged if r.trade.id == "lt_big"]
        assert len(big) > 1 and [(p.part, p.parts) for p in big] == [(i, len(big)) for i in range(len(big))]
        sizes = [len(p) for p in await stack.routed_payloads() if epb.RoutedTrade.FromString(p).trade.id == "lt_big"]
        assert len(sizes) == len(big) and all(n <= MAX_PART_BYTES < MAX_MESSAGE_BYTES for n in sizes)
        assert sum(len(p.orders) for p in big) == FOLLOWERS
        # the next leader's copy, behind it in the stream, is placed
        [after] = [r for r in logged if r.trade.id == "lt_after"]
        [other] = after.orders

        async def other_done() -> bool:
            ev = await harness.terminal(other.client_order_id)
            return ev is not None and ev.type == epb.ORDER_EVENT_TYPE_FILLED

        await eventually(other_done, timeout_s=300)  # type: ignore[arg-type]
        flowing_s = time.monotonic() - started

        # every follower's copy was POSTed exactly once
        await eventually(lambda: len(harness.fake.post_counts()) == FOLLOWERS + 1, timeout_s=300)
        counts = harness.fake.post_counts()
        assert set(counts.values()) == {1}
        assert {o.client_order_id for p in big for o in p.orders} | {other.client_order_id} == set(counts)
        assert len(persisted_orders(db_url)) == FOLLOWERS + 1
        print(f"\n20,000-follower fan-out: next leader's copy FILLED {flowing_s:.1f} s after the trades")

        async def all_final() -> bool:
            evs = await harness.all_events()
            return sum(1 for e in evs if e.type in TERMINAL_TYPES) >= FOLLOWERS + 1

        await eventually(all_final, timeout_s=300)  # type: ignore[arg-type]
