-- The router's batch read takes each follower's positions held (OPEN), for every follower of every leader trade.
-- Only (asset, wallet) and the primary key's wallet prefix served it, so each wallet's lookup read every life it ever
-- ended (closed, resolved, redeemed: `positions` keeps them), a count that grows with the wallet's history (63 rows
-- read for 2 wanted in the test; 21 ms for 100 followers with 100 positions each in the review's data, 3.5 with an
-- index). `state` is in other partial indexes' predicates already and `follower_wallet_id` never changes: a booking
-- that stays on its page (HOT) still does. Applying it again changes nothing.
CREATE INDEX IF NOT EXISTS positions_wallet_open ON positions (follower_wallet_id) WHERE state = 'OPEN';
