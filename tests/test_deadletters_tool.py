"""python -m tools.deadletters prints every dead letter decoded: for a routed trade the executor set aside, the
followers whose copies were not made; for a leader trade the router set aside, what the router said it means."""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis

from common.alerts import OUTBOX, AlertKind
from common.consumer import DeadLetters
from tests.executor.conftest import make_order
from tests.router.conftest import leader_trade
from tools import deadletters
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration


async def test_dead_letters_are_printed_decoded(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    r = aioredis.from_url(redis_url)
    routed = epb.RoutedTrade(orders=[make_order(1), make_order(2)])
    await DeadLetters(r, "executor", lambda rt: rt.SerializeToString())("1700000000000-0", routed,
                                                                         RuntimeError("poison"))

    async def appended(_event: object) -> dict[str, str]:
        return {"leader_trade_id": "lt_9", "appended": "1700000000001-0", "effect": "Its copies went out."}

    await DeadLetters(r, "router", lambda e: e.SerializeToString(), describe=appended)(
        "1700000000002-0", leader_trade("lt_9"), ValueError("numeric field overflow"))
    await r.aclose()
    for alert in [a for a in OUTBOX.items if a.kind == AlertKind.DEAD_LETTERED]:  # no publisher runs here
        OUTBOX.items.remove(alert)

    assert deadletters.main(["--redis-url", redis_url]) == 0
    executor, router = sorted((json.loads(line) for line in capsys.readouterr().out.splitlines()),
                              key=lambda d: d["stream"])
    assert (executor["stream"], executor["cursor"], executor["item"]["copies"]) == ("tt:dlq:executor",
                                                                                   "1700000000000-0", 2)
    assert [(o["client_order_id"], o["subscription_id"], o["follower_wallet_id"])
            for o in executor["item"]["orders"]] == [("co_test00001", "sub_1", "w_1"), ("co_test00002", "sub_2", "w_2")]
    assert "RuntimeError" in executor["error"]
    assert (router["stream"], router["leader_trade_id"], router["appended"]) == ("tt:dlq:router", "lt_9",
                                                                               "1700000000001-0")
    assert (router["item"]["id"], router["item"]["wallet"]) == ("lt_9", leader_trade("lt_9").wallet)
