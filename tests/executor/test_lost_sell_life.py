"""A SELL ended LOST counts in the position's life it ended in, even when it was admitted before that life opened: a
SELL sized by its fraction waits, inserted, for the copy BUY that opens the position, and may sell its shares."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import psycopg
import pytest

from common.storage import create_pool
from services.executor.adapters.order_store import OrderStore

pytestmark = pytest.mark.integration

ASSET = "7" * 77


def _rows(db_url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else []


def _lost_sell(db_url: str, coid: str, created_s: int, ended_s: int) -> None:
    """A LIVE SELL of 60 admitted ``created_s`` ago that ended LOST ``ended_s`` ago."""
    _rows(db_url, "INSERT INTO orders (client_order_id, state, venue, origin, subscription_id, follower_wallet_id,"
                  " asset_id, side, order_type, size, order_proto, created_at, terminal_at) VALUES"
                  f" ('{coid}', 'LOST', 'INSIDERS', 'COPY', 'sub_1', 'w_1', '{ASSET}', 'SELL', 'FAK', 60, '',"
                  f" now() - interval '{created_s} s', now() - interval '{ended_s} s')")


@pytest.mark.parametrize(("created_s", "ended_s", "sellable"), [
    (40, 5, D(40)),  # admitted before the BUY that opened the position filled, sized and sent after it
    (20, 5, D(40)),  # admitted in the life
    (200, 150, D(100)),  # of the life before: it ended before this one opened
])
async def test_a_lost_sell_counts_in_the_life_it_ended_in(
        db_url: str, created_s: int, ended_s: int, sellable: D) -> None:
    _rows(db_url, "INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price,"
                  f" cost_usd, id, state, origin, subscription_id, venue, updated_at, opened_at) VALUES ('w_1',"
                  f" '{ASSET}', '0xab', '0x{'1' * 40}', 100, 0.4, 40, 'pos_1', 'OPEN', 'COPY', 'sub_1', 'INSIDERS',"
                  " now() - interval '30 s', now() - interval '30 s')")
    _lost_sell(db_url, "lost_1", created_s, ended_s)
    pool = await create_pool(db_url, autocommit=True)
    try:
        store = OrderStore(pool)
        assert await store.sellable("w_1", ASSET) == sellable
        assert await store.sellable("w_1", ASSET, "sub_1") == sellable
    finally:
        await pool.close()
