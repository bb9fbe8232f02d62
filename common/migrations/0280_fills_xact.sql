-- The transaction that inserted each fill. Guard's performance rules fold a subscription's fills
-- incrementally: the fills to read next are exactly those its previous read's snapshot could not see
-- (pg_visible_in_snapshot), whatever order their transactions started or committed in. Fills booked
-- before this migration have none and are read by full reads only.
ALTER TABLE fills ADD COLUMN IF NOT EXISTS xact xid8;
ALTER TABLE fills ALTER COLUMN xact SET DEFAULT pg_current_xact_id();
CREATE INDEX IF NOT EXISTS fills_subscription_xact ON fills (subscription_id, xact);
