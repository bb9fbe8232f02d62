-- "Does any wallet still hold this asset?" (the executor asks when a position closes, to stop watching the
-- asset's book): one index probe instead of a scan of every position ever opened.
CREATE INDEX IF NOT EXISTS positions_held_asset ON positions (asset_id) WHERE size > 0;
