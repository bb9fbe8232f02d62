-- Every update of an order was a non-HOT update: three indexes of `orders` had a column it changes in their
-- predicate or key (orders_open: state; orders_unreleased: terminal_at, reservation_released;
-- orders_refused_sells: state, terminal_at). An order took four row versions of ~1 KB (its intent, two state
-- changes and the release's record), each a new entry in every index it matched, written elsewhere in the table
-- than the row before: 214 MB (with its indexes) for 83,000 orders, every page for autovacuum to scan and clean.
-- Which orders are still open, and which ended without their reservation's release recorded, now lives in a
-- small table of its own, and no index of `orders` depends on a column its lifecycle changes: its updates stay
-- on their page (HOT) and leave no index entry behind. A journal batch updates every order of a page in one
-- transaction, whose old versions can only be pruned once it committed: fillfactor 50 (rows are ~1 KB) leaves a
-- page room for a second version of each of its orders.
CREATE TABLE IF NOT EXISTS order_pending (
    client_order_id     text PRIMARY KEY,          -- orders.client_order_id
    follower_wallet_id  text NOT NULL,             -- orders.follower_wallet_id
    asset_id            text NOT NULL,             -- orders.asset_id
    terminal_at         timestamptz                -- NULL while the order is open; when it ended, until released
);
-- A wallet's open orders (what reconciliation leaves alone, the sellable shares of a position, a wallet's mode),
-- and every open order (restart recovery).
CREATE INDEX IF NOT EXISTS order_pending_open ON order_pending (follower_wallet_id, asset_id)
    WHERE terminal_at IS NULL;
-- Ended orders whose reservation release is not recorded yet, oldest first (the journal's sweep).
CREATE INDEX IF NOT EXISTS order_pending_unreleased ON order_pending (terminal_at) WHERE terminal_at IS NOT NULL;

INSERT INTO order_pending (client_order_id, follower_wallet_id, asset_id, terminal_at)
SELECT client_order_id, follower_wallet_id, asset_id,
       CASE WHEN state IN ('FILLED', 'CANCELLED', 'REJECTED', 'LOST', 'FAILED') THEN coalesce(terminal_at, now()) END
FROM orders
WHERE state NOT IN ('FILLED', 'CANCELLED', 'REJECTED', 'LOST', 'FAILED') OR NOT reservation_released
ON CONFLICT (client_order_id) DO NOTHING;

DROP INDEX IF EXISTS orders_open;
DROP INDEX IF EXISTS orders_unreleased;
ALTER TABLE orders DROP COLUMN IF EXISTS reservation_released;
-- Sells the venue refused for lack of shares (reconciliation re-sizes them): keyed and filtered on columns
-- that only a rejection sets, so an order's other updates do not touch it.
DROP INDEX IF EXISTS orders_refused_sells;
CREATE INDEX IF NOT EXISTS orders_refused_sells_by_id ON orders (client_order_id)
    WHERE side = 'SELL' AND reason = 'INVALID_ORDER_NOT_ENOUGH_BALANCE';
ALTER TABLE orders SET (fillfactor = 50);
