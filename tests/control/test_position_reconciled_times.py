"""A position reconciliation corrected, as the positions routes show it: the executor's correction (``_CORRECT``)
writes the venue's count, and, for a count of 0, ends the life CLOSED, without moving ``updated_at`` (its own
"changed since the count" check reads that column for bookings only). The Position's ``updateTime`` ("last
change") must still move with it: a client that watches ``updateTime`` missed a resize (714.28 -> 500 shares),
and a life closed at the venue showed a ``closeTime`` later than its ``updateTime``."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from common.storage import create_pool
from services.executor.adapters.reconcile_store import LiveWallet, ReconcileStore
from services.executor.domain.reconcile import CLOSED_AT_VENUE, CORRECTED, Correction
from tests.control.conftest import AUTH, FOLLOWER, Stubs
from tests.position_rows import ASSET, insert, life
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import control_pb2_grpc as pb_grpc
from tradingtools.control.v1 import position_pb2 as ppb

pytestmark = pytest.mark.integration


async def _reconcile(db_url: str, correction: Correction) -> None:
    pool = await create_pool(db_url, min_size=1, max_size=1, autocommit=True)
    try:
        applied = await ReconcileStore(pool).apply(LiveWallet("w_456", FOLLOWER), [correction], [], {})
    finally:
        await pool.close()
    assert [c.asset_id for c in applied] == [ASSET]


async def _listed(stubs: Stubs) -> ppb.Position:
    page = await pb_grpc.PositionServiceStub(stubs.channel).ListPositions(pb.ListPositionsRequest(wallet=FOLLOWER),
                                                                          metadata=AUTH)
    [position] = page.positions
    return position


@pytest.mark.parametrize(("kind", "after", "state"), [
    (CORRECTED, Decimal(500), ppb.POSITION_STATE_OPEN),
    (CLOSED_AT_VENUE, Decimal(0), ppb.POSITION_STATE_CLOSED),
])
async def test_a_reconciliation_correction_moves_the_update_time(
        stubs: Stubs, db_url: str, kind: str, after: Decimal, state: Any) -> None:
    booked = insert(db_url, "positions", life(1))
    before = await _listed(stubs)
    await _reconcile(db_url, Correction(ASSET, kind, booked["size"], after, booked["avg_price"], booked["cost_usd"],
                                        after * booked["avg_price"]))
    got = await _listed(stubs)
    assert (got.id, got.state, got.shares, got.venue_shares) == (booked["id"], state, str(after), str(after))
    assert got.update_time.ToDatetime() > before.update_time.ToDatetime()
    assert got.update_time.ToDatetime() >= got.reconcile_time.ToDatetime()
    if state == ppb.POSITION_STATE_CLOSED:
        assert got.update_time.ToDatetime() >= got.close_time.ToDatetime()
