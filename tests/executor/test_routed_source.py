"""Routed trades through the router's gRPC stream (default) or read straight from its log: same outcome."""

from __future__ import annotations

import pytest

from common.config import ConfigError
from services.executor.config import Settings
from tests.executor.conftest import ASSET, Harness, make_order
from tests.helpers import INTERNAL_ENV, eventually
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("source", ["log", "router"])
async def test_both_sources_fill_every_order_once(harness: Harness, source: str) -> None:
    await harness.set_book(ASSET, [("0.49", "100000")], [("0.50", "1000000")])
    running = await harness.start_executor(TT_TUNE_EXECUTOR_ROUTED_SOURCE=source)
    orders = [make_order(i) for i in range(6)]
    await harness.route(*orders[:3])
    for o in orders[3:]:
        await harness.route(o)

    async def done() -> bool:
        return await harness.all_terminal(orders)

    await eventually(done, timeout_s=20)  # type: ignore[arg-type]
    assert harness.fake.post_counts() == {o.client_order_id: 1 for o in orders}
    assert running.consumer.stats.handled == 4


@pytest.mark.parametrize("source", ["log", "router"])
async def test_a_malformed_log_entry_is_skipped_and_the_next_trade_still_goes(harness: Harness, source: str) -> None:
    await harness.set_book(ASSET, [("0.49", "100000")], [("0.50", "1000000")])
    await harness.start_executor(TT_TUNE_EXECUTOR_ROUTED_SOURCE=source)
    await harness.routed.append(b"\xff\xff not a protobuf")
    order = make_order(1)
    await harness.route(order)

    async def filled() -> bool:
        ev = await harness.terminal(order.client_order_id)
        return ev is not None and ev.type == epb.ORDER_EVENT_TYPE_FILLED

    await eventually(filled, timeout_s=20)  # type: ignore[arg-type]
    assert harness.fake.post_counts() == {order.client_order_id: 1}


def test_an_unknown_source_is_a_config_error() -> None:
    assert Settings.from_env(INTERNAL_ENV).tuning.routed_source == "router"  # the layers stream to each other over gRPC
    assert Settings.from_env({**INTERNAL_ENV, "TT_TUNE_EXECUTOR_ROUTED_SOURCE": "LOG"}).tuning.routed_source == "log"
    with pytest.raises(ConfigError):
        Settings.from_env({**INTERNAL_ENV, "TT_TUNE_EXECUTOR_ROUTED_SOURCE": "kafka"})
