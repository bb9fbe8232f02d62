"""The settlement sweep takes up to 100 resolved markets a round, those resolved first first; markets whose positions
are all held back (a LOST SELL not compared yet) are not taken until their holds end (test_settlement_sweep_held), so
they keep no other market waiting (real PostgreSQL)."""

from __future__ import annotations

import pytest

from common.storage import create_pool
from services.executor.adapters.settlement_store import SettlementStore
from tests.executor.conftest import rows
from tests.executor.test_settlement_sweep_lookup import _open, cid, res, tok

pytestmark = pytest.mark.integration


def _resolved_ago(db_url: str, i: int, age_s: int) -> None:
    r = res(i)
    rows(db_url, "INSERT INTO market_resolutions (condition_id, asset_ids, winning_asset_id, source, received_at,"
                 " payload) VALUES (%s, %s, %s, 'CLOB_SOCKET', now() - make_interval(secs => %s), '') RETURNING 1",
         r.condition_id, list(r.asset_ids), r.winning_asset_id, age_s)


def _held_by_a_lost_sell(db_url: str, i: int) -> None:
    """An open position of market ``i``'s token whose SELL of 6 ended LOST 30 s ago (never compared)."""
    _open(db_url, f"w_{i}", tok(i, 1), condition_id=cid(i))
    rows(db_url, "UPDATE positions SET opened_at = now() - interval '120 s' WHERE asset_id = %s RETURNING 1", tok(i, 1))
    rows(db_url, "INSERT INTO orders (client_order_id, state, venue, origin, follower_wallet_id, asset_id, side,"
                 " order_type, size, order_proto, created_at, terminal_at) VALUES (%s, 'LOST', 'INSIDERS', 'TRIGGER',"
                 " %s, %s, 'SELL', 'FAK', 6, '', now() - interval '60 s', now() - interval '30 s') RETURNING 1",
         f"lost_{i}", f"w_{i}", tok(i, 1))


async def test_a_market_resolved_before_the_held_back_ones_is_swept_first(db_url: str) -> None:
    for i in range(1, 4):
        _resolved_ago(db_url, i, 100 - i)
        _held_by_a_lost_sell(db_url, i)
    _resolved_ago(db_url, 9, 3600)
    _open(db_url, "w_9", tok(9, 2), condition_id=cid(9))
    pool = await create_pool(db_url, autocommit=True)
    try:
        store = SettlementStore(pool)
        assert [r.condition_id for r in await store.resolutions_with_open_positions(limit=1)] == [cid(9)]
        assert len((await store.settle(res(1))).held) == 1  # held back indeed
        assert [r.condition_id for r in await store.resolutions_with_open_positions(limit=4)] == [cid(9)]
    finally:
        await pool.close()
