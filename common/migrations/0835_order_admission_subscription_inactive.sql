-- order_admission_refusals (migration 0770) refuses a third kind of order to be sent (NEW, SUBMITTING), the
-- executor recording it REJECTED (never sent; its reservation released):
-- - SUBSCRIPTION_INACTIVE: a router copy BUY (origin COPY, with a subscription id) whose subscription is PAUSED or
--   STOPPED now: paused or deleted after the copy was routed, or routed by a router whose copy of the index was
--   behind; the executor may admit it seconds later, from a backlog. The router skips the trades of a subscription
--   that is not ACTIVE: this is the backstop for the copies in flight when the pause or stop committed.
--   Not refused: a copy SELL (the leader's exit, routed while the subscription was ACTIVE: a SELL adds no exposure,
--   and refused, it would leave the follower holding what the leader sold, with no copy to close it while the
--   subscription is not ACTIVE), a trigger's SELL (stop-loss, take-profit: they guard positions whatever their
--   subscription's state) and a manual order; nor a copy whose subscription has no row (rows are never deleted).
-- MODE_CHANGED and POSITION_IN_OTHER_VENUE (0770) come first, unchanged. The subscription is read in the query run
-- once the mode locks are held, as the modes are: a pause committed before that query starts is seen. One
-- primary-key probe of subscriptions per copy BUY; for other orders the probe's key is NULL, which the index answers
-- without reading a page.
CREATE OR REPLACE FUNCTION order_admission_refusals(intents json)
RETURNS TABLE (coid text, reason text, detail text) LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    -- the wallets' mode locks: one of 64 (mode_lock_bucket), so a fan-out to 10,000 wallets holds at most 64 locks
    -- of PostgreSQL's lock table, not one per wallet; in one order, as several are taken
    PERFORM pg_advisory_xact_lock_shared(7011, b.bucket)
       FROM (SELECT DISTINCT mode_lock_bucket(r.wallet) AS bucket
               FROM json_to_recordset(intents) AS r(wallet text, state text)
              WHERE r.state IN ('NEW', 'SUBMITTING') ORDER BY 1) b;
    RETURN QUERY
    SELECT r.coid,
           CASE WHEN s.id IS NOT NULL THEN 'MODE_CHANGED' WHEN p.asset_id IS NOT NULL THEN 'POSITION_IN_OTHER_VENUE'
                ELSE 'SUBSCRIPTION_INACTIVE' END,
           CASE WHEN s.id IS NOT NULL
                THEN format('follower wallet %s copies in %s now (subscription %s): a %s order is not sent', r.wallet,
                            s.mode, s.id, CASE r.venue WHEN 'PAPER' THEN 'PAPER' ELSE 'LIVE' END)
                WHEN p.asset_id IS NOT NULL
                THEN format('follower wallet %s holds %s shares of this token on the %s venue (position %s): a %s'
                            ' order would mix them', r.wallet, p.size, p.venue, p.id, r.venue)
                ELSE format('subscription %s is %s now: its copy BUY is not sent', q.id, q.state) END
      FROM json_to_recordset(intents) AS r(coid text, wallet text, asset text, venue text, state text, origin text,
                                           sub text, side text)
      LEFT JOIN LATERAL (SELECT o.id, o.mode FROM subscriptions o
                          WHERE o.follower_wallet_id = r.wallet AND o.state <> 'STOPPED'
                            AND o.mode <> CASE r.venue WHEN 'PAPER' THEN 'PAPER' ELSE 'LIVE' END
                          ORDER BY o.id LIMIT 1) s ON true
      LEFT JOIN positions p ON p.follower_wallet_id = r.wallet AND p.asset_id = r.asset AND p.size > 0
                           AND p.venue <> r.venue
      LEFT JOIN subscriptions q ON q.id = CASE WHEN r.origin = 'COPY' AND r.side = 'BUY' THEN NULLIF(r.sub, '') END
                               AND q.state <> 'ACTIVE'
     WHERE r.state IN ('NEW', 'SUBMITTING') AND (s.id IS NOT NULL OR p.asset_id IS NOT NULL OR q.id IS NOT NULL);
END
$$;
