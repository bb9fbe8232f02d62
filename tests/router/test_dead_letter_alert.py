"""A leader trade the router sets aside (every attempt failed, and not for an outage) is alerted as CRITICAL
DEAD_LETTERED on ``tt:stream:alerts``, the stream control delivers to the operator's webhook. The dead letter and the
alert say whether its copies were appended before it was set aside: if not, none of its followers got a copy; if
so, the copies went out and only its rows (the leader's recorded position among them) are missing."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.helpers import alerts_raised, eventually
from tests.router.conftest import Stack, leader_trade, subscription

pytestmark = pytest.mark.integration


def _router_alerts(redis_url: str, leader_trade_id: str) -> list[Any]:
    return [a for a in alerts_raised(redis_url, "DEAD_LETTERED")
            if a.key == "dead_letter:tt:dlq:router" and a.fields.get("leader_trade_id") == leader_trade_id]


async def test_a_dead_lettered_leader_trade_is_alerted_from_the_router(stack: Stack, redis_url: str) -> None:
    await stack.add(subscription("sub_a", "w_a"))
    running = await stack.start_router()

    async def broken(**_kw: Any) -> Any:
        raise RuntimeError("poison: every attempt fails")

    running.router.store.load_batch = broken  # type: ignore[method-assign]
    await stack.publish(leader_trade("lt_poison"))
    await eventually(lambda: running.consumer.stats.dead_lettered >= 1, timeout_s=20)
    [(_id, entry)] = await eventually(lambda: stack.stream_redis.xrange("tt:dlq:router"))
    assert (entry[b"leader_trade_id"], entry[b"appended"]) == (b"lt_poison", b"")  # no copy went out
    assert await stack.routed() == []

    await eventually(lambda: len(_router_alerts(redis_url, "lt_poison")) == 1, timeout_s=10)
    [alert] = _router_alerts(redis_url, "lt_poison")
    assert (alert.severity, alert.service) == ("CRITICAL", "router")
    assert (alert.fields["leader_trade_id"], alert.fields["appended"]) == ("lt_poison", "")


async def test_a_trade_whose_rows_fail_after_its_copies_were_appended_says_so(stack: Stack, redis_url: str) -> None:
    """Rows refused for a reason that is not an outage (a value PostgreSQL cannot store) after the emit: the trade
    is set aside once its attempts are spent, and its dead letter names the log cursor its copies went out at."""
    await stack.add(subscription("sub_a", "w_a"))
    running = await stack.start_router()

    async def refused(*_a: Any, **_kw: Any) -> Any:
        raise psycopg.errors.NumericValueOutOfRange("numeric field overflow")

    running.router.store.persist_many = refused  # type: ignore[method-assign]
    running.router.store.persist = refused  # type: ignore[method-assign]
    await stack.publish(leader_trade("lt_rows"))
    await eventually(lambda: running.consumer.stats.dead_lettered >= 1, timeout_s=20)
    [(cursor, _payload)] = await stack.routed_log.read("0-0", count=10, block_ms=0)  # the copy went out
    [(_id, entry)] = await eventually(lambda: stack.stream_redis.xrange("tt:dlq:router"))
    assert (entry[b"leader_trade_id"], entry[b"appended"].decode()) == (b"lt_rows", cursor)

    await eventually(lambda: len(_router_alerts(redis_url, "lt_rows")) == 1, timeout_s=10)
    [alert] = _router_alerts(redis_url, "lt_rows")
    assert (alert.fields["leader_trade_id"], alert.fields["appended"]) == ("lt_rows", cursor)
