-- A copied asset is held by every follower of the leader that bought it. Looked up through an index on asset_id
-- alone, one wallet's row is found by stepping over every other holder's: once the statistics had seen a handful
-- of positions, the planner preferred that index for the fill bookings' (wallet, asset) joins, and a fan-out to
-- 1,000 followers read about a million rows to book its fills. With the wallet as the second column, a lookup by
-- asset and wallet is exact through either index, whichever the planner picks; "is the asset still held" and "the
-- ARMED triggers of an asset" read the leading column as before. Neither column changes when a row is updated,
-- so updates stay HOT.
DROP INDEX IF EXISTS positions_asset;
CREATE INDEX IF NOT EXISTS positions_asset_wallet ON positions (asset_id, follower_wallet_id);
DROP INDEX IF EXISTS triggers_asset_armed;
CREATE INDEX IF NOT EXISTS triggers_asset_wallet_armed ON triggers (asset_id, follower_wallet_id) WHERE state = 'ARMED';
