"""A book in Redis that is not one ingest writes (a JSON value that is no object, a price that is no price, an
update time out of any timestamp's range) leaves its position unmarked (``mark`` "", ``unrealizedPnlUsd`` "0"),
as the positions module promises for a malformed book: the page is still served, with the other positions'
marks. Before, each of these failed the whole page (INTERNAL), or printed "NaN" / "Infinity" as money."""

from __future__ import annotations

from typing import Any

import pytest

from common.marketstate import book_key
from tests.control.conftest import AUTH, FOLLOWER, Stubs
from tests.position_rows import insert, life
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import control_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

GOOD = '{"bids":[["0.04","100"]],"asks":[["0.042","100"]],"updatedMs":1795000000123}'
MALFORMED = [
    "[]",
    "null",
    '"a string"',
    '{"bids":[["NaN","100"]]}',
    '{"bids":[["Infinity","100"]]}',
    '{"bids":[["-0.5","100"]]}',
    '{"bids":[["7","100"]]}',
    '{"bids":[["0.04","100"]],"updatedMs":1e30}',
]


async def test_malformed_books_leave_their_positions_unmarked(stubs: Stubs, db_url: str, redis_client: Any) -> None:
    assets = [str(10**70 + i) for i in range(len(MALFORMED) + 1)]
    rows = [insert(db_url, "positions", life(i, asset_id=a)) for i, a in enumerate(assets)]
    await redis_client.set(book_key(assets[0]), GOOD)
    for asset, raw in zip(assets[1:], MALFORMED, strict=True):
        await redis_client.set(book_key(asset), raw)
    page = await pb_grpc.PositionServiceStub(stubs.channel).ListPositions(pb.ListPositionsRequest(wallet=FOLLOWER),
                                                                          metadata=AUTH)
    got = {p.asset_id: p for p in page.positions}
    assert len(got) == len(rows)
    good = got.pop(assets[0])
    assert (good.mark, good.unrealized_pnl_usd, good.mark_time.ToMilliseconds()) == ("0.041", "4.35548",
                                                                                      1795000000123)
    assert {a: (p.mark, p.unrealized_pnl_usd, p.HasField("mark_time")) for a, p in got.items()} == {
        a: ("", "0", False) for a in assets[1:]}
