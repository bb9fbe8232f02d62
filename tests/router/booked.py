"""Fills booked as the executor books them, for router tests that read positions from PostgreSQL."""

from __future__ import annotations

import time
from decimal import Decimal

import psycopg
from psycopg.rows import dict_row

from services.executor.adapters.fill_store import book
from services.executor.domain.fill_math import Booking
from services.executor.domain.ticket import Ticket
from tests.router.conftest import COND, YES
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

D = Decimal


async def bought(db_url: str, coid: str, sub: str, size: str, price: str) -> None:
    """What the executor books when the venue fills a copy BUY of ``sub`` for w_1."""
    order = epb.Order(client_order_id=coid, subscription_id=sub, follower_wallet_id="w_1",
                      follower_proxy="0x" + "6a" * 20, asset_id=YES, condition_id=COND, outcome="Yes",
                      side=cpb.SIDE_BUY, origin=epb.ORDER_ORIGIN_COPY, amount_usd=str(D(size) * D(price)),
                      mode=cpb.EXECUTION_MODE_LIVE)
    ticket = Ticket(order=order, venue="INSIDERS", request=None, created_ns=time.time_ns())
    fill = Booking(fill_id=f"fill_{coid}", size=D(size), price=D(price), notional=D(size) * D(price),
                   fee_shares=D(0), first_fill=True, fill_time_ms=int(time.time() * 1000))
    async with await psycopg.AsyncConnection.connect(db_url) as conn, conn.transaction():
        await book(conn.cursor(row_factory=dict_row), [(ticket, fill)])
