"""A position has one venue: a fill of the other venue than its open life (admission refuses such orders; one
admitted before that, or in a race it cannot see) keeps its ``fills`` row but is never booked into the position."""

from __future__ import annotations

import time
from decimal import Decimal as D
from typing import Any

import psycopg
import pytest

from common.alerts import OUTBOX, AlertKind
from services.executor.adapters import fill_store
from services.executor.domain.fill_math import Booked, Booking
from services.executor.domain.ticket import INSIDERS, PAPER, Ticket
from tests.executor.conftest import ASSET, make_order, rows
from tradingtools.common.v1 import common_pb2 as cpb

pytestmark = pytest.mark.integration


def _fill(i: int, venue: str, size: str, side: int = cpb.SIDE_BUY) -> tuple[Ticket, Booking]:
    t = Ticket(make_order(i, follower_wallet_id="w_1", subscription_id="sub_1", side=side), venue, None,
               time.time_ns())
    return t, Booking(f"fill_{i}", D(size), D("0.5"), D(size) / 2, D(0), True, time.time_ns() // 1_000_000 + i)


async def _book(pool: Any, fills: list[tuple[Ticket, Booking]]) -> list[Booked]:
    async with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
        return await fill_store.book(cur, fills)


def _real_shares(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, wallet, size, avg_price, cost_usd, id,"
                     " state, origin, venue) VALUES ('w_1', %s, '0xp', 10, 0.5, 5, 'pos_ext1', 'OPEN', 'EXTERNAL',"
                     " 'INSIDERS')", (ASSET,))


@pytest.mark.parametrize("side", [cpb.SIDE_BUY, cpb.SIDE_SELL], ids=["buy", "sell"])
async def test_a_paper_fill_is_never_booked_into_real_shares(pool: Any, db_url: str, side: int) -> None:
    _real_shares(db_url)
    OUTBOX.take(len(OUTBOX.items))
    assert await _book(pool, [_fill(1, PAPER, "4", side)]) == []
    [alert] = [a for a in OUTBOX.take(len(OUTBOX.items)) if a.kind == AlertKind.FILL_NOT_BOOKED]
    assert (alert.key, alert.severity, alert.fields["fill_id"], alert.fields["position_venue"]) == (
        "fill_not_booked:PAPER", "CRITICAL", "fill_1", "INSIDERS")
    assert rows(db_url, "SELECT venue, size, cost_usd, origin FROM positions") == [
        ("INSIDERS", D(10), D(5), "EXTERNAL")]
    assert rows(db_url, "SELECT venue, size FROM fills") == [("PAPER", D(4))]  # the fill itself is kept
    assert rows(db_url, "SELECT count(*) FROM subscription_stats") == [(0,)]
    booked = await _book(pool, [_fill(2, INSIDERS, "4")])  # the position's own venue books as ever
    assert [b.effect.position.size for b in booked] == [D(14)]


async def test_the_fill_that_opens_a_life_gives_it_its_venue_within_a_batch(pool: Any, db_url: str) -> None:
    booked = await _book(pool, [_fill(1, PAPER, "10"), _fill(2, INSIDERS, "5"), _fill(3, PAPER, "2")])
    assert [b.ticket.client_order_id for b in booked] == ["co_test00001", "co_test00003"]
    assert rows(db_url, "SELECT venue, size FROM positions") == [("PAPER", D(12))]
