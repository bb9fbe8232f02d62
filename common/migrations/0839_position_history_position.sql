-- A position's previous life: guard asks whether an ARMED trigger was made for a life that ended (the SELL fill's
-- peek of a position with triggers, the cancels of an ended life's triggers), which needs the life closed before
-- the one open now. Only the wallet's history was indexed, so the lookup read every life the wallet opened since in
-- any token, a count that grows as the wallet trades (3,000 rows for one answer in the test). The history is
-- written once a life ends and rarely changed after. Applying it again changes nothing.
CREATE INDEX IF NOT EXISTS position_history_position ON position_history (follower_wallet_id, asset_id, opened_at DESC);
