-- A LOST SELL counts as still selling its position until the venue's count was read after it (common/lost_sells.py):
-- every sizing of a SELL, in the executor, the router and guard, looks its position's recent LOST SELLs up. An index
-- of `orders` over its state would make every update of an order a non-HOT one (migration 0560): the LIVE SELLs that
-- end LOST are noted in a table of their own instead, by a trigger that fires only for them, each position's notes
-- older than a day dropped as it gets a new one. The SELLs that ended LOST in the last 15 minutes are noted now (those
-- ending LOST while the backfill reads orders are missed: run it when few orders end, as any upgrade).
-- Applying it again changes nothing.
CREATE TABLE IF NOT EXISTS lost_sells (
    client_order_id     text PRIMARY KEY,          -- orders.client_order_id
    follower_wallet_id  text NOT NULL,             -- orders.follower_wallet_id
    asset_id            text NOT NULL,             -- orders.asset_id
    terminal_at         timestamptz NOT NULL       -- when it ended LOST
);
CREATE INDEX IF NOT EXISTS lost_sells_position ON lost_sells (follower_wallet_id, asset_id, terminal_at);

CREATE OR REPLACE FUNCTION lost_sell_noted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM lost_sells WHERE follower_wallet_id = NEW.follower_wallet_id AND asset_id = NEW.asset_id
        AND terminal_at < now() - interval '1 day';
    INSERT INTO lost_sells (client_order_id, follower_wallet_id, asset_id, terminal_at)
    VALUES (NEW.client_order_id, NEW.follower_wallet_id, NEW.asset_id, coalesce(NEW.terminal_at, now()))
    ON CONFLICT (client_order_id) DO NOTHING;
    RETURN NULL;
END
$$;

-- The backfill reads the whole of orders (no index of it covers state): before the trigger, whose lock on orders (held
-- to the commit) would stop every order write for as long as the read takes.
INSERT INTO lost_sells (client_order_id, follower_wallet_id, asset_id, terminal_at)
SELECT client_order_id, follower_wallet_id, asset_id, terminal_at FROM orders
WHERE state = 'LOST' AND side = 'SELL' AND venue = 'INSIDERS' AND terminal_at > now() - interval '15 minutes'
ON CONFLICT (client_order_id) DO NOTHING;

DROP TRIGGER IF EXISTS orders_lost_sell ON orders;
CREATE TRIGGER orders_lost_sell AFTER INSERT OR UPDATE OF state ON orders FOR EACH ROW
    WHEN (NEW.state = 'LOST' AND NEW.side = 'SELL' AND NEW.venue = 'INSIDERS') EXECUTE FUNCTION lost_sell_noted();
