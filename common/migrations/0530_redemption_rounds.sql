-- A wallet's redemption of a market can take more than one round: winning shares that reach the chain after the
-- market's redemption ran (a copy filled just after the resolution) are left redeemable at the venue, and
-- reconciliation gives them another round. The row of (wallet, market) moves on to the round, which is sent under
-- its own Idempotency-Key; the rounds before are in the audit log and on the redemption event stream.
ALTER TABLE redemptions ADD COLUMN IF NOT EXISTS round integer NOT NULL DEFAULT 0;
