-- A SELL routed while the follower's copy BUY in that market was still in flight carries the leader's
-- sold fraction instead of a size: the executor sizes it on the position once the BUY is answered.
-- Both constraints are added NOT VALID: checking them inline would read the whole table under the
-- ALTER's exclusive lock (every router persist waits) only to check rows that all pass.
ALTER TABLE routed_orders ADD COLUMN IF NOT EXISTS sell_fraction numeric;
ALTER TABLE routed_orders ADD CONSTRAINT routed_orders_sell_fraction_check
    CHECK (sell_fraction > 0 AND sell_fraction <= 1) NOT VALID;
ALTER TABLE routed_orders DROP CONSTRAINT IF EXISTS routed_orders_check;
ALTER TABLE routed_orders ADD CONSTRAINT routed_orders_sized_check
    CHECK ((side = 'BUY' AND amount_usd IS NOT NULL)
           OR (side = 'SELL' AND (size IS NOT NULL OR sell_fraction IS NOT NULL))) NOT VALID;
