"""A resolution lists its tokens in outcome-index order (CLOB REST's order of the market's tokens), whatever the
socket frame's order: a neg-risk redemption names its shares by outcome index. Through the simulated venue, on real
PostgreSQL, Redis and gRPC."""

from __future__ import annotations

import time

import psycopg
import pytest
import redis.asyncio as aioredis

from common.marketstate import OUTCOME_INDEX, market_key, read_market
from services.ingest import resolution as rs
from sim.polymarket import PolymarketSim
from tests.helpers import eventually
from tests.ingest.conftest import IngestFactory
from tests.ingest.resolution_support import logged, market_known, rows, served, watch
from tradingtools.market.v1 import market_pb2 as mpb

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("neg_risk", [False, True])
async def test_a_socket_resolution_lists_its_tokens_in_outcome_index_order_whatever_the_frame_order(
        sim: PolymarketSim, run_ingest: IngestFactory, redis_url: str, db_url: str, neg_risk: bool) -> None:
    r = aioredis.from_url(redis_url, decode_responses=True)
    m = sim.add_market(neg_risk=neg_risk)
    yes, no = m.tokens  # CLOB REST lists them so: Yes is outcome 0, No outcome 1
    await watch(r, yes, no)
    app = await run_ingest()
    await eventually(lambda: market_known(r, yes, m.condition_id))
    sim.clob.resolve(m, yes, socket=False)
    sim.books.resolve(m.condition_id, [no, yes], yes, "Yes")  # the frame lists the tokens the other way round

    [item] = await served(app.grpc.port, 1)
    assert (item.resolution.source, list(item.resolution.asset_ids), item.resolution.neg_risk) == (
        mpb.RESOLUTION_SOURCE_CLOB_SOCKET, [yes, no], neg_risk)  # outcome-index order, not the frame's
    await eventually(lambda: app.metrics.count("resolutions", "CLOB_REST", "DUPLICATE") == 1)
    assert app.metrics.count("resolutions", "CLOB_REST", "ORDER_DIFFERS") == 0  # REST agrees
    [(_cursor, event)] = await logged(redis_url)
    [row] = await rows(db_url, "market_resolutions")
    assert event == item.resolution and row["asset_ids"] == [yes, no]
    await r.aclose()


async def test_a_socket_resolution_whose_outcome_order_is_not_cached_waits_for_rest(
        sim: PolymarketSim, run_ingest: IngestFactory, redis_url: str, db_url: str) -> None:
    r = aioredis.from_url(redis_url, decode_responses=True)
    m = sim.add_market(neg_risk=True)
    yes, no = m.tokens
    await watch(r, yes, no)
    app = await run_ingest()
    await eventually(lambda: market_known(r, no, m.condition_id))
    for token in (yes, no):  # as cached before ingest kept the outcome index
        await r.hdel(market_key(token), OUTCOME_INDEX)
    sim.clob.resolve(m, yes, socket=False, rest_delay_s=1.0)
    sim.books.resolve(m.condition_id, [no, yes], yes, "Yes")

    await eventually(lambda: app.metrics.count("resolutions", "CLOB_SOCKET", "NO_OUTCOME_ORDER") == 1)
    info = await read_market(r, yes)  # closed for copying at once, resolved by nobody yet
    assert info is not None and info.closed and info.resolved_winner == ""
    [item] = await served(app.grpc.port, 1)  # REST's, in REST's order (the outcome index)
    assert (item.resolution.source, list(item.resolution.asset_ids), item.resolution.winning_asset_id) == (
        mpb.RESOLUTION_SOURCE_CLOB_REST, [yes, no], yes)
    [row] = await rows(db_url, "market_resolutions")
    assert (row["source"], row["asset_ids"]) == ("CLOB_REST", [yes, no]) and len(await logged(redis_url)) == 1
    await r.aclose()


async def test_a_resolution_recorded_in_another_order_than_rest_lists_is_put_right_by_the_rest_check(
        sim: PolymarketSim, run_ingest: IngestFactory, redis_url: str, db_url: str) -> None:
    m = sim.add_market(neg_risk=True)
    yes, no = m.tokens
    sim.clob.resolve(m, yes, socket=False)
    # recorded and appended in the frame's order before ingest kept the outcome index; REST not asked yet
    emitted = rs.Resolution(m.condition_id, (no, yes), yes, rs.SOCKET, False, time.time_ns(), neg_risk=True)
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO market_resolutions (condition_id, asset_ids, winning_asset_id, neg_risk, source, received_at,"
            " payload, appended_cursor) VALUES (%s, %s, %s, true, 'CLOB_SOCKET', now(), %s, '1-0')",
            (m.condition_id, [no, yes], yes, emitted.to_proto().SerializeToString()))
        await conn.execute("INSERT INTO market_checks (condition_id, closed, next_check_at) VALUES (%s, true, now())",
                           (m.condition_id,))
    app = await run_ingest()

    await eventually(lambda: app.metrics.count("resolutions", "CLOB_REST", "ORDER_DIFFERS") == 1)
    assert app.metrics.count("resolutions", "CLOB_REST", "DUPLICATE") == 1
    [row] = await rows(db_url, "market_resolutions")
    assert (row["asset_ids"], row["winning_asset_id"], row["source"]) == ([yes, no], yes, "CLOB_SOCKET")
    assert mpb.MarketResolution.FromString(row["payload"]) == emitted.to_proto()  # as appended: never rewritten
    assert await logged(redis_url) == []  # nothing appended again
