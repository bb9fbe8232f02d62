-- One execution mode per follower wallet (control's services/control/wallet_modes.py), held where orders are
-- admitted too: the executor's intent insert (services/executor/adapters/order_store.py, ADMIT_INTENTS) inserts no
-- order to be sent (NEW, SUBMITTING) that this function refuses; the executor records it REJECTED instead:
-- - MODE_CHANGED: a subscription of its wallet that is not STOPPED has the other mode (a PATCH of mode, or a delete
--   and a create in the other mode, after the order was routed; or the router routed it on a copy of the
--   subscription older than the change);
-- - POSITION_IN_OTHER_VENUE: its wallet holds an open position in its token booked in the other venue (a position
--   has one venue, which settlement, reconciliation and exits go by).
-- No race with a mode change: control takes the wallet's mode lock (a bucket of wallets) exclusively before it reads the wallet's orders
-- and writes a mode, and holds it to its commit; this takes it shared, then reads in a query of its own, whose
-- snapshot (a VOLATILE function's queries each take one in READ COMMITTED, the executor's isolation: see
-- executor_fence) is taken once the lock is held. Either control committed first, and the read sees the new mode,
-- or control waits for the insert to commit, and then sees the order in flight.
-- A wallet's mode lock (control takes it exclusively: services/control/wallet_modes.LOCK): (7011, bucket).
CREATE OR REPLACE FUNCTION mode_lock_bucket(wallet text) RETURNS int LANGUAGE sql IMMUTABLE AS $$
    SELECT hashtext('mode/' || wallet) & 63
$$;

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
    SELECT r.coid, CASE WHEN s.id IS NOT NULL THEN 'MODE_CHANGED' ELSE 'POSITION_IN_OTHER_VENUE' END,
           CASE WHEN s.id IS NOT NULL
                THEN format('follower wallet %s copies in %s now (subscription %s): a %s order is not sent', r.wallet,
                            s.mode, s.id, CASE r.venue WHEN 'PAPER' THEN 'PAPER' ELSE 'LIVE' END)
                ELSE format('follower wallet %s holds %s shares of this token on the %s venue (position %s): a %s'
                            ' order would mix them', r.wallet, p.size, p.venue, p.id, r.venue) END
      FROM json_to_recordset(intents) AS r(coid text, wallet text, asset text, venue text, state text)
      LEFT JOIN LATERAL (SELECT o.id, o.mode FROM subscriptions o
                          WHERE o.follower_wallet_id = r.wallet AND o.state <> 'STOPPED'
                            AND o.mode <> CASE r.venue WHEN 'PAPER' THEN 'PAPER' ELSE 'LIVE' END
                          ORDER BY o.id LIMIT 1) s ON true
      LEFT JOIN positions p ON p.follower_wallet_id = r.wallet AND p.asset_id = r.asset AND p.size > 0
                           AND p.venue <> r.venue
     WHERE r.state IN ('NEW', 'SUBMITTING') AND (s.id IS NOT NULL OR p.asset_id IS NOT NULL);
END
$$;
