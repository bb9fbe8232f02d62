"""A wallet's PAPER holding of a token and its paper SELLs under way, for the paper venue (one indexed statement)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson

from common.decimals import ZERO, parse_decimal
from services.executor.adapters.order_sql import TERMINAL_SQL
from services.executor.domain.paper_selling import PaperHolding

# One snapshot: the position by its key (shares of another venue are none of the paper venue's), and the wallet's
# paper SELLs of the token sent or about to be (not NEW), through order_pending_open, each with the shares of its
# fill booked so far (booked in the transaction that ends the order, which then leaves this list).
HOLDING = f"""
SELECT (SELECT size FROM positions WHERE follower_wallet_id = %(w)s AND asset_id = %(a)s AND venue = 'PAPER') AS held,
       (SELECT json_object_agg(o.client_order_id, o.filled_size::text)
        FROM order_pending p JOIN orders o ON o.client_order_id = p.client_order_id
        WHERE p.follower_wallet_id = %(w)s AND p.asset_id = %(a)s AND p.terminal_at IS NULL
          AND o.side = 'SELL' AND o.venue = 'PAPER' AND o.state NOT IN {TERMINAL_SQL} AND o.state <> 'NEW')::text
       AS selling
"""


class PaperHoldings:
    """Reads :class:`PaperHolding` from PostgreSQL."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    async def read(self, wallet_id: str, asset_id: str, sending: Callable[[], None]) -> PaperHolding:
        """The holding now; ``sending`` is called right before the statement leaves (a connection in hand)."""
        async with self.pool.connection() as conn:
            sending()
            cur = await conn.execute(HOLDING, {"w": wallet_id, "a": asset_id})
            row = await cur.fetchone()
        held = row["held"] if row is not None and row["held"] is not None else ZERO
        selling: dict[str, Decimal] = {}
        if row is not None and row["selling"]:
            selling = {c: parse_decimal(n) for c, n in orjson.loads(row["selling"]).items()}
        return PaperHolding(Decimal(held), selling)
