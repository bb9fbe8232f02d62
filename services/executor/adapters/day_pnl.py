"""Each wallet's realized PnL of the UTC day and the lowest point it went down to (``wallet_day_pnl``, migration
0780): the router's daily loss limit stops copied BUYs for the rest of the day once that low reached −limit, so a
gain realized later the same day does not start them again.

Written by every booking that realizes PnL (fills: ``fill_store``; settlement: ``settlement_store``), in its
transaction and as its last write, so that a booking takes the wallets' day rows after its positions, in wallet
order: two bookings of one wallet's positions at once wait for each other on the row, never deadlock, and both
count. The day is the booking transaction's UTC date, as the positions' ``pnl_day``.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import orjson
from psycopg import AsyncCursor

from common.decimals import ZERO

# ``r.low``: the lowest running sum of the booking's steps (never above 0), so the day's low becomes the lower of
# the one stored and the stored net plus that.
_UPSERT = """
INSERT INTO wallet_day_pnl AS d (follower_wallet_id, day, realized_usd, low_usd)
SELECT r.w, (now() AT TIME ZONE 'UTC')::date, r.net, r.low
FROM json_to_recordset(%s::json) AS r(w text, net numeric, low numeric)
ORDER BY r.w
ON CONFLICT (follower_wallet_id, day) DO UPDATE
    SET realized_usd = d.realized_usd + EXCLUDED.realized_usd,
        low_usd = least(d.low_usd, d.realized_usd + EXCLUDED.low_usd), updated_at = now()
"""


def day_rows(steps: Iterable[tuple[str, Decimal]]) -> list[dict[str, str]]:
    """The rows of :data:`_UPSERT` for realized PnL booked as ``steps`` (wallet, change), in the order it was
    realized: each wallet's sum and lowest running sum (from 0). A wallet whose steps realized nothing has none."""
    by_wallet: dict[str, list[Decimal]] = {}  # wallet -> [sum, lowest running sum]
    for wallet, change in steps:
        if change == 0 and wallet not in by_wallet:
            continue
        acc = by_wallet.setdefault(wallet, [ZERO, ZERO])
        acc[0] += change
        acc[1] = min(acc[1], acc[0])
    return [{"w": w, "net": str(net), "low": str(low)} for w, (net, low) in sorted(by_wallet.items())]


async def book_day_pnl(cur: AsyncCursor[Any], steps: Iterable[tuple[str, Decimal]]) -> None:
    """Add realized PnL booked now (``steps``, see :func:`day_rows`) to its wallets' day, in the cursor's
    transaction (the booking's: after its positions' writes)."""
    rows = day_rows(steps)
    if rows:
        await cur.execute(_UPSERT, (orjson.dumps(rows).decode(),))
