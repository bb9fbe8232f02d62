-- The router sizes a copied SELL net of the wallet's SELLs in flight it did not send, which claim nothing in Redis:
-- exits (TRIGGER), manual SELLs (MANUAL) and copies of an id not of its form (the executor's re-sized SELLs
-- "co_rs_...": order_sql.ROUTER_COPY_ID). It looked them up per position held, probing every open order of the
-- wallet's asset and fetching each one's `orders` row (~1 KB) to tell: its own copies, the bulk of SELLs in flight
-- when a leader sells in several quick fills, were all fetched and thrown away (a 10,000-follower SELL read 140,005
-- pages instead of 80,002, 255 ms instead of 157), and a follower with nothing in flight still cost two probes.
-- The executor now marks, when it inserts an order, whether it is such a SELL (order_sql.UNCLAIMED_SELL: its side,
-- origin and id never change), and the router reads the open marked rows of the batch's SELL assets through an index
-- of their own, then their orders: a follower with none costs nothing, a router copy is never fetched.
-- A constant default: no table rewrite. Terminal rows leave the index with the update that ends them (terminal_at
-- is already in two predicates: that update was never HOT), and an order never opens again.
-- Rollout: the executor first, the router after it. Every service applies the migrations it finds at its start, the
-- executor before it takes its lease: stop the old executor (its standby too), then start the new one, before any
-- other service of this release starts, so that no order is inserted unmarked after the UPDATE below. An older
-- executor still writing once this was applied inserts its SELLs unmarked, and the new router does not count them
-- (it would size a copied SELL on shares an exit is selling): if that happened, run the UPDATE below again once the
-- new executor holds the lease, before the router starts. The router goes back before the executor likewise.
-- Applying it again changes nothing: the column and index exist, and the open rows are marked already.
ALTER TABLE order_pending ADD COLUMN IF NOT EXISTS unclaimed_sell boolean NOT NULL DEFAULT false;
-- The orders open now (order_pending keeps the open orders, and ended ones until their release is recorded), each
-- joined to its order by key.
UPDATE order_pending p SET unclaimed_sell = true
FROM orders o
WHERE p.terminal_at IS NULL AND NOT p.unclaimed_sell AND o.client_order_id = p.client_order_id
  AND o.side = 'SELL' AND (o.origin <> 'COPY' OR o.client_order_id !~ '^co_[0-9a-f]{32}$');
-- The router's lookup: the batch's SELL assets, each a range of the wallets with such a SELL open in it.
CREATE INDEX IF NOT EXISTS order_pending_unclaimed_sells ON order_pending (asset_id, follower_wallet_id)
    WHERE terminal_at IS NULL AND unclaimed_sell;
