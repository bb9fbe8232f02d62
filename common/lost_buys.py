"""Copy BUYs that ended LOST and may still have bought: reconciliation books a count raised after one to its
subscription (the executor's ``domain/lost_buys.py``).

The contract ends an order LOST after three not-founds, yet a LIVE BUY the venue filled and then failed to find has
bought its shares, and its fill is never booked. The next count of the position is raised by them: on a position
bought by hand (MANUAL) that raise would be no subscription's, and the copy's leader's close would sell none of it
(NOTHING_HELD), leaving the follower holding the copy's shares after the leader exited; on a position of another
subscription it would be that subscription's. So a raise of an open position's count is booked first to the copy BUYs
of the token that ended LOST in the last :data:`~common.lost_sells.WINDOW_S`, in the order they ended, each at most
what it may have bought, each credited once (``lost_buys.credited_at``), and only while no count of the position
compared after its end and its grace could already have shown its fill, and only to the life of the position it
ended in (a new life forgets its count: as ``common.lost_sells.unseen`` reads a SELL's). An EXTERNAL position keeps
the wallet's sizing: none is credited to it. They are read from ``lost_buys``, where a trigger notes them (migration
0837).
"""

from __future__ import annotations

from common.lost_sells import GRACE_S, WINDOW_S

# The LOST copy BUYs a raise of the wallet's open positions (of any origin but EXTERNAL) may be credited to, each
# position's in the order they ended, with what bounds what each may have bought (the executor's
# domain/lost_buys.most_bought). The notes are probed by wallet apart from the join (as common.lost_sells.lost_of).
CLAIMABLE = f"""
SELECT b.asset_id, b.client_order_id, b.subscription_id, o.size, o.filled_size, o.amount_usd, o.filled_notional,
       o.limit_price, o.order_proto
FROM (SELECT * FROM lost_buys b WHERE b.follower_wallet_id = %(w)s AND b.credited_at IS NULL
      AND b.terminal_at > now() - make_interval(secs => {WINDOW_S}) OFFSET 0) b
JOIN orders o ON o.client_order_id = b.client_order_id
JOIN positions x ON x.follower_wallet_id = b.follower_wallet_id AND x.asset_id = b.asset_id
WHERE x.state = 'OPEN' AND x.origin <> 'EXTERNAL' AND b.terminal_at >= x.opened_at
  AND (x.reconciled_at IS NULL OR x.reconciled_at < b.terminal_at + make_interval(secs => {GRACE_S}))
ORDER BY b.asset_id, b.terminal_at, b.client_order_id
"""

# the LOST BUYs a correction applied credited (r.id; r.n: the shares), in the same transaction
CREDITED = """
UPDATE lost_buys b SET credited_at = now(), credited = r.n
FROM json_to_recordset(%(rows)s::json) AS r(id text, n numeric)
WHERE b.client_order_id = r.id AND b.credited_at IS NULL
"""
