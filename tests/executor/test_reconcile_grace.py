"""The settling grace of reconciliation counts back from when the venue was asked: its count may lack a fill booked
a few seconds before, and the time its answer (and the read of the books) took must not eat into the grace."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal as D
from typing import Any

import psycopg
import pytest

from common.storage import create_pool
from services.executor.adapters.reconcile_store import LiveWallet, ReconcileStore
from services.executor.ports import Answer
from services.executor.reconciling import Reconciler

pytestmark = pytest.mark.integration

ASSET = "7" * 77
WALLET = LiveWallet("w_1", "0x" + "1" * 40)


def _rows(db_url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else []


def _booked(db_url: str, age_s: float) -> None:
    """A copy position of 100 shares whose last fill was booked ``age_s`` ago."""
    _rows(db_url, "INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price,"
                  " cost_usd, id, state, origin, subscription_id, venue, updated_at, opened_at) VALUES"
                  f" ('w_1', '{ASSET}', '0xab', '{WALLET.wallet}', 100, 0.4, 40, 'pos_1', 'OPEN', 'COPY', 'sub_1',"
                  f" 'INSIDERS', now() - interval '{age_s} s', now() - interval '{age_s} s')")


class SlowVenue:
    """Takes its snapshot when asked (the fill is not on-chain yet) and answers ``latency_s`` later."""

    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s

    async def positions(self, wallet_id: str) -> Answer:
        await asyncio.sleep(self.latency_s)
        return Answer(200, {"positions": []})


async def _known(ids: list[str]) -> set[str]:
    return set()


@pytest.mark.parametrize("latency_s", [0.6, 0.0])
async def test_a_fill_booked_just_before_a_slow_venue_answer_is_not_corrected_away(
        db_url: str, latency_s: float) -> None:
    _booked(db_url, 0.2)
    pool = await create_pool(db_url, autocommit=True)
    try:
        rec = Reconciler(ReconcileStore(pool), SlowVenue(latency_s), None, interval_s=300.0, known=_known,
                         grace_s=0.5)
        await rec.reconcile(WALLET)
    finally:
        await pool.close()
    assert _rows(db_url, "SELECT state, size FROM positions") == [("OPEN", D(100))]


async def test_the_grace_counts_back_from_when_the_venue_was_asked(db_url: str) -> None:
    _booked(db_url, 12)
    pool = await create_pool(db_url, autocommit=True)
    try:
        store = ReconcileStore(pool)
        assert (await store.view("w_1", 10.0)).busy == set()  # booked 12 s ago: settled
        asked_5s_ago = time.monotonic() - 5
        assert (await store.view("w_1", 10.0, asked_5s_ago)).busy == {ASSET}  # 7 s before the venue was asked
    finally:
        await pool.close()


async def test_a_settled_position_the_venue_does_not_hold_is_corrected(db_url: str) -> None:
    _booked(db_url, 5)
    pool = await create_pool(db_url, autocommit=True)
    try:
        rec = Reconciler(ReconcileStore(pool), SlowVenue(0.0), None, interval_s=300.0, known=_known, grace_s=0.5)
        await rec.reconcile(WALLET)
    finally:
        await pool.close()
    assert _rows(db_url, "SELECT state, size FROM positions") == [("CLOSED", D(0))]
