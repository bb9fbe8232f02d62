"""A leader trade the router sets aside (every attempt failed) is a copy missed for each of its followers: its
CRITICAL DEAD_LETTERED alert reaches ``tt:stream:alerts``, the stream control delivers to the operator's webhook."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import alerts_raised, eventually
from tests.router.conftest import Stack, leader_trade, subscription

pytestmark = pytest.mark.integration


async def test_a_dead_lettered_leader_trade_is_alerted_from_the_router(stack: Stack, redis_url: str) -> None:
    await stack.add(subscription("sub_a", "w_a"))
    running = await stack.start_router()

    async def broken(**_kw: Any) -> Any:
        raise RuntimeError("poison: every attempt fails")

    running.router.store.load_batch = broken  # type: ignore[method-assign]
    await stack.publish(leader_trade("lt_poison"))
    await eventually(lambda: running.consumer.stats.dead_lettered >= 1, timeout_s=20)
    assert await stack.redis.xlen("tt:dlq:router") == 1

    def alerted() -> list[Any]:
        return [a for a in alerts_raised(redis_url, "DEAD_LETTERED") if a.key == "dead_letter:tt:dlq:router"]

    await eventually(lambda: len(alerted()) == 1, timeout_s=10)
    [alert] = alerted()
    assert (alert.severity, alert.service) == ("CRITICAL", "router")
