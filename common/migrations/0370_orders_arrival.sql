-- The order in which the executor received its orders (stream order within a batch): a restart puts them
-- back in line in that order, so a SELL the executor sizes later still waits for the BUYs that came before
-- it and the BUYs that came after it still wait for its size. Nullable, no default: no table rewrite.
ALTER TABLE orders ADD COLUMN IF NOT EXISTS arrival_ns bigint;
