"""The executor's order rows as guard's fire reads them (``orders`` and ``order_pending``), written as the executor's
intake and journal write them, for stand-in executors that keep no tables of their own."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg

from tests.guard.standins import ASSET, WALLET_ID, StandIns
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

_ENDED = ("FILLED", "CANCELLED", "REJECTED", "LOST", "FAILED")


async def book_order(conn: psycopg.AsyncConnection[Any], client_order_id: str, *, side: str = "SELL",
                     size: str = "10", filled: str = "0", state: str = "PLACED", origin: str = "COPY",
                     trigger_id: str = "", asset_id: str = ASSET, wallet_id: str = WALLET_ID,
                     venue: str = "PAPER") -> None:
    """An order the executor took, with its ``order_pending`` row (ended when ``state`` is final)."""
    ended = state in _ENDED
    await conn.execute(
        "INSERT INTO orders (client_order_id, state, venue, origin, follower_wallet_id, asset_id, side, order_type,"
        " size, filled_size, trigger_id, order_proto, terminal_at) VALUES (%s, %s, %s, %s, %s, %s, %s, 'FAK',"
        " %s, %s, %s, '', CASE WHEN %s THEN now() END)",
        (client_order_id, state, venue, origin, wallet_id, asset_id, side, Decimal(size), Decimal(filled), trigger_id,
         ended))
    await conn.execute(
        "INSERT INTO order_pending (client_order_id, follower_wallet_id, asset_id, terminal_at)"
        " VALUES (%s, %s, %s, CASE WHEN %s THEN now() END)", (client_order_id, wallet_id, asset_id, ended))


def books_orders(standins: StandIns, db_url: str) -> None:
    """Make the stand-in executor write the order row of each new order it takes, as the executor's intake does
    before it answers (the stand-in's fills do not update it: use it with ``auto_fill`` off)."""
    executor = standins.executor
    take = executor._submit

    async def submit(order: epb.Order) -> epb.SubmitOrderResponse:
        if order.client_order_id not in executor.orders:
            async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
                await book_order(conn, order.client_order_id, side="SELL" if order.side == cpb.SIDE_SELL else "BUY",
                                 size=order.size, state="SUBMITTING", origin="TRIGGER", trigger_id=order.trigger_id,
                                 asset_id=order.asset_id, wallet_id=order.follower_wallet_id)
        return await take(order)

    executor._submit = submit  # type: ignore[method-assign]
