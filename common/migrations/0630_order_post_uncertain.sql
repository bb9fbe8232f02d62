-- Whether some POST of an order ended without a definite answer (a timeout, a dropped connection, an unreadable
-- answer, a restart or an error of the executor under it): the venue may hold the order, so a later not-found can
-- never make it "not taken" (FAILED VENUE_UNAVAILABLE), only LOST. Kept in the row because a restart recovers
-- orders from here: the last answer alone (maybe_unsent) said "not taken" after a timed-out POST whose re-POSTs
-- were answered 503. Set by the journal's usual update of the order, never cleared. A constant default: no table
-- rewrite; in no index, so the order's updates stay HOT; no statistics (no query filters on it, see 0570).
ALTER TABLE orders ADD COLUMN IF NOT EXISTS post_uncertain boolean NOT NULL DEFAULT false;
ALTER TABLE orders ALTER COLUMN post_uncertain SET STATISTICS 0;

-- Orders waiting for a status query to settle them now (UNKNOWN): their row does not tell whether an earlier POST
-- of theirs had no definite answer (an order timed out, then re-POSTed and answered 503, reads like one answered
-- 503 only). They count as uncertain: LOST, which asks the operator to look at the venue, is true of them either
-- way. Orders in SUBMITTING become uncertain at the executor's next start (a POST may be out under them).
UPDATE orders o SET post_uncertain = true
FROM order_pending p
WHERE p.client_order_id = o.client_order_id AND p.terminal_at IS NULL AND o.state = 'UNKNOWN';
