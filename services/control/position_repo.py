"""SQL for the positions routes: a wallet's or a subscription's lives, current (``positions``) and ended
(``position_history``), newest first, with their market's slug and their redemption."""

from __future__ import annotations

from services.control import codec
from services.control.db import Conn
from services.control.pagination import Cursor

# The same columns from both tables; ``realized`` is the life's own realized PnL (``positions`` keeps
# counting across lives from ``realized_base_usd``; a history row holds its life's alone). ``updated_at`` is the
# last change of any field shown: reconciliation writes the venue's count (a resize, a close at the venue) without
# moving the row's updated_at (the executor reads that column as "booked since the count").
_LIFE = (
    "id, wallet, follower_wallet_id, subscription_id, asset_id, condition_id, outcome, venue, origin, state,"
    " size, avg_price, cost_usd, {realized} AS realized, resolved_shares, resolved_cost_usd, payout_per_share,"
    " winning_asset_id,"
    " resolved_at, venue_shares, reconciled_at, opened_at,"
    " greatest(updated_at, reconciled_at, closed_at, resolved_at) AS updated_at, closed_at"
)
_CURRENT = _LIFE.format(realized="realized_pnl_usd - realized_base_usd")
_ENDED = _LIFE.format(realized="realized_pnl_usd")

# Each table's page is taken on its own (index order: owner, opened_at DESC, id DESC), then merged; the
# slug and the redemption are looked up for the rows of the page only.
_PAGE = (
    "SELECT l.*,"
    " coalesce(nullif(mr.market_slug, ''), nullif(mc.market_slug, ''), '') AS market_slug,"
    " r.state AS redemption_state, r.tx_hash AS redemption_tx_hash, r.attempts AS redemption_attempts,"
    " r.reason AS redemption_reason, r.updated_at AS redemption_time"
    " FROM (SELECT * FROM ("
    "  (SELECT " + _CURRENT + " FROM positions WHERE {where} AND id IS NOT NULL"
    "   ORDER BY opened_at DESC, id DESC LIMIT %(limit)s)"
    "  UNION ALL"
    "  (SELECT " + _ENDED + " FROM position_history WHERE {ended}"
    "   ORDER BY opened_at DESC, id DESC LIMIT %(limit)s)) AS lives"
    "  ORDER BY opened_at DESC, id DESC LIMIT %(limit)s) AS l"
    " LEFT JOIN market_resolutions mr ON mr.condition_id = l.condition_id AND l.condition_id <> ''"
    " LEFT JOIN market_checks mc ON mc.condition_id = l.condition_id AND l.condition_id <> ''"
    # one redemption per (follower wallet, market): shown on the lives that hold winning shares at the venue
    " LEFT JOIN redemptions r ON r.follower_wallet_id = l.follower_wallet_id AND r.condition_id = l.condition_id"
    "  AND l.state IN ('RESOLVED_WON', 'REDEEMED') AND l.venue = 'INSIDERS'"
    " ORDER BY l.opened_at DESC, l.id DESC"
)


async def subscription_exists(conn: Conn, subscription_id: str) -> bool:
    """True when the subscription exists (in any state)."""
    row = await (await conn.execute("SELECT 1 AS one FROM subscriptions WHERE id = %s",
                                    (subscription_id,))).fetchone()
    return row is not None


async def list_page(conn: Conn, *, wallet: str = "", subscription_id: str = "", state: str,
                    after: Cursor | None, limit: int) -> list[codec.Row]:
    """Up to ``limit`` lives of one wallet (or one subscription) after ``after``, newest first (open time,
    then id); ``state`` is a stored state name or "" for all."""
    where = ["wallet = %(owner)s" if wallet else "subscription_id = %(owner)s"]
    if state:
        where.append("state = %(state)s")
    if after is not None:
        where.append("(opened_at, id) < (%(t)s, %(i)s)")
    condition = " AND ".join(where)
    # an ended life is never OPEN: asked for the open ones, the wallet's history is not read at all
    sql = _PAGE.format(where=condition, ended="false" if state == "OPEN" else condition)
    params = {"owner": wallet or subscription_id, "state": state, "limit": limit,
              "t": after.time if after else None, "i": after.id if after else None}
    return await (await conn.execute(sql, params)).fetchall()
