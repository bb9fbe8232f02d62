"""Reconciliation's statements that open EXTERNAL positions and move subscriptions' exposure (the store:
``reconcile_store``)."""

# a token the executor never booked (or whose booked life ended CLOSED): a new EXTERNAL life, the ended one kept
ARCHIVE = """
INSERT INTO position_history (id, follower_wallet_id, asset_id, condition_id, wallet, state, origin, subscription_id,
    venue, outcome, size, avg_price, cost_usd, realized_pnl_usd, resolved_shares, resolved_cost_usd, payout_per_share,
    winning_asset_id, resolved_at, venue_shares, reconciled_at, opened_at, closed_at, updated_at)
SELECT p.id, p.follower_wallet_id, p.asset_id, p.condition_id, p.wallet, p.state, p.origin, p.subscription_id,
    p.venue, p.outcome, p.size, p.avg_price, p.cost_usd, p.realized_pnl_usd - p.realized_base_usd, p.resolved_shares,
    p.resolved_cost_usd, p.payout_per_share, p.winning_asset_id, p.resolved_at, p.venue_shares, p.reconciled_at,
    p.opened_at,
    coalesce(p.closed_at, now()), p.updated_at
FROM positions p JOIN json_to_recordset(%(rows)s::json) AS r(a text) ON p.asset_id = r.a
WHERE p.follower_wallet_id = %(w)s AND p.state = 'CLOSED' AND p.id IS NOT NULL
ON CONFLICT (id) DO NOTHING
"""

OPEN_EXTERNAL = """
INSERT INTO positions AS p (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price, cost_usd, id, state,
    origin, venue, outcome, venue_shares, reconciled_at, opened_at, updated_at)
SELECT %(w)s, r.a, r.c, %(proxy)s, r.size, r.avg, r.cost, r.pid, 'OPEN', 'EXTERNAL', 'INSIDERS', r.outcome, r.size,
       now(), now(), now()
FROM json_to_recordset(%(rows)s::json) AS r(a text, c text, size numeric, avg numeric, cost numeric, pid text,
     outcome text)
ON CONFLICT (follower_wallet_id, asset_id) DO UPDATE SET size = EXCLUDED.size, avg_price = EXCLUDED.avg_price,
    cost_usd = EXCLUDED.cost_usd, id = EXCLUDED.id, state = 'OPEN', origin = 'EXTERNAL', venue = 'INSIDERS',
    subscription_id = NULL, subscription_shares = NULL, outcome = EXCLUDED.outcome,
    venue_shares = EXCLUDED.venue_shares, reconciled_at = now(), opened_at = now(), closed_at = NULL,
    realized_base_usd = p.realized_pnl_usd, resolved_shares = NULL, resolved_cost_usd = NULL, payout_per_share = NULL,
    winning_asset_id = NULL, resolved_at = NULL,
    condition_id = CASE WHEN EXCLUDED.condition_id = '' THEN p.condition_id ELSE EXCLUDED.condition_id END
WHERE p.state = 'CLOSED' OR p.size = 0 AND p.id IS NULL
RETURNING asset_id, id
"""

# The stats rows are locked in subscription order first (``l``), as every writer of several takes them
# (order_sql.UPSERT_COUNTS): in the corrections' order, a booking of the same subscriptions deadlocked with it.
STATS = """
WITH r AS MATERIALIZED (SELECT * FROM json_to_recordset(%s::json) AS r(sub text, delta numeric)),
l AS MATERIALIZED (SELECT s.subscription_id FROM subscription_stats s WHERE s.subscription_id IN (SELECT sub FROM r)
                   ORDER BY s.subscription_id FOR NO KEY UPDATE)
UPDATE subscription_stats s SET exposure_usd = GREATEST(0, s.exposure_usd + r.delta), updated_at = now(),
    fills_version = s.fills_version + 1
FROM r JOIN l ON l.subscription_id = r.sub
WHERE s.subscription_id = r.sub
"""
