"""A venue refusal that has the router read an asset's rules again keeps the token's outcome index (ingest orders a
socket resolution's tokens by it, for a neg-risk redemption), and the router still reads the rules again before it
routes the asset. The executor, the router's reads, ingest's socket resolutions and a
CLOB REST stand-in on real Redis."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from common.marketstate import read_market
from services.ingest import clob
from services.ingest import resolution as rs
from services.ingest.metrics import IngestMetrics
from services.ingest.resolutions import EMITTED, SocketResolutions
from tests.executor.conftest import ASSET, CONDITION, Harness
from tests.executor.test_market_cache_resolved import OTHER, RouterSide, clob_market, refused, router_side

pytestmark = pytest.mark.integration
D = Decimal
__all__ = ["router_side"]  # the fixture, shared


class Recorder:
    """Stands in for ingest's ResolutionRecorder: keeps what it is asked to record."""

    def __init__(self) -> None:
        self.recorded: list[rs.Resolution] = []

    async def record(self, res: rs.Resolution) -> str:
        self.recorded.append(res)
        return EMITTED


@pytest.mark.parametrize("code", ["MARKET_CLOSED", "INVALID_ORDER_MIN_TICK_SIZE", "INVALID_ORDER_MIN_SIZE"])
async def test_a_socket_resolution_after_a_refusal_still_lists_its_tokens_in_outcome_order(
        harness: Harness, router_side: RouterSide, code: str) -> None:
    router_side.clob.add_market(clob_market(neg_risk=True))
    assert (await router_side.rules(ASSET)) is not None  # cached from CLOB REST, with each token's outcome index
    await refused(harness, code)

    recorder, asked = Recorder(), list[str]()
    sockets = SocketResolutions(recorder, asked.append, {ASSET, OTHER}, harness.redis, IngestMetrics())  # type: ignore[arg-type]
    frame = clob.ResolvedMsg(CONDITION, (OTHER, ASSET), ASSET, int(time.time() * 1000), "Yes")  # frame order

    assert await sockets.handle(frame, time.time_ns()) == rs.RESOLVED
    [res] = recorder.recorded
    assert (res.asset_ids, res.winning_asset_id, res.neg_risk) == ((ASSET, OTHER), ASSET, True)


async def test_the_router_reads_the_rules_again_before_it_routes_after_a_refusal(
        harness: Harness, router_side: RouterSide) -> None:
    router_side.clob.add_market(clob_market(neg_risk=True))
    first = await router_side.rules(ASSET)
    assert first is not None and (first.tick_size, first.min_order_size) == (D("0.01"), D("5"))
    router_side.clob.add_market(clob_market(neg_risk=True, minimum_tick_size=0.001, minimum_order_size=15))

    await refused(harness, "INVALID_ORDER_MIN_TICK_SIZE")
    info = await router_side.rules(ASSET)

    assert router_side.market_reads() == 2  # read again before routing, not routed on the refused tick
    assert info is not None and (info.tick_size, info.min_order_size, info.neg_risk) == (D("0.001"), D("15"), True)
    stored = await read_market(harness.redis, ASSET)
    assert stored is not None and (stored.tick_size, stored.min_order_size) == (D("0.001"), D("15"))
    assert (stored.outcome_index, stored.condition_id, stored.resolved_winner) == (0, CONDITION, "")
