-- The router's batch read takes each follower's positions held (OPEN) and those booked today (the day's realized
-- PnL), for every follower of every leader trade. Only (asset, wallet) led with the asset, so each wallet's lookup
-- read every life it ever ended (closed, resolved, redeemed: `positions` keeps them), a count that grows with the
-- wallet's history (63 rows read for 3 wanted in the test, 100 for 3 in the review's data: 21 ms for 100 followers
-- instead of 3.5). `state` is in other partial indexes' predicates already; `pnl_day` changes at a position's first
-- booking of a UTC day (that one update a day is no longer HOT); `follower_wallet_id` never changes.
-- Applying it again changes nothing.
CREATE INDEX IF NOT EXISTS positions_wallet_open ON positions (follower_wallet_id) WHERE state = 'OPEN';
CREATE INDEX IF NOT EXISTS positions_wallet_day ON positions (follower_wallet_id, pnl_day);
