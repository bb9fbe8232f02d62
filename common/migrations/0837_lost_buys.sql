-- A copy BUY that ended LOST may still have bought: reconciliation books a count raised after it to the copy's
-- subscription (common/lost_buys.py). As for lost_sells (migration 0830), an index of `orders` over its state would make
-- every update of an order a non-HOT one: the LIVE copy BUYs that end LOST are noted in a table of their own, by a
-- trigger that fires only for them, each position's notes older than a day dropped as it gets a new one. A note is
-- credited once (credited_at; credited: the shares booked to its subscription, maybe none). The copy BUYs that ended
-- LOST in the last 15 minutes are noted now. Applying it again changes nothing.
CREATE TABLE IF NOT EXISTS lost_buys (
    client_order_id     text PRIMARY KEY,          -- orders.client_order_id
    follower_wallet_id  text NOT NULL,             -- orders.follower_wallet_id
    asset_id            text NOT NULL,             -- orders.asset_id
    subscription_id     text NOT NULL,             -- orders.subscription_id
    terminal_at         timestamptz NOT NULL,      -- when it ended LOST
    credited_at         timestamptz,               -- when a reconciliation booked a raise of the count to it
    credited            numeric                    -- the shares it booked to the subscription
);
CREATE INDEX IF NOT EXISTS lost_buys_position ON lost_buys (follower_wallet_id, asset_id, terminal_at);

CREATE OR REPLACE FUNCTION lost_buy_noted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM lost_buys WHERE follower_wallet_id = NEW.follower_wallet_id AND asset_id = NEW.asset_id
        AND terminal_at < now() - interval '1 day';
    INSERT INTO lost_buys (client_order_id, follower_wallet_id, asset_id, subscription_id, terminal_at)
    VALUES (NEW.client_order_id, NEW.follower_wallet_id, NEW.asset_id, NEW.subscription_id,
            coalesce(NEW.terminal_at, now()))
    ON CONFLICT (client_order_id) DO NOTHING;
    RETURN NULL;
END
$$;

-- The backfill reads the whole of orders (no index of it covers state): before the trigger, whose lock on orders (held
-- to the commit) would stop every order write for as long as the read takes.
INSERT INTO lost_buys (client_order_id, follower_wallet_id, asset_id, subscription_id, terminal_at)
SELECT client_order_id, follower_wallet_id, asset_id, subscription_id, terminal_at FROM orders
WHERE state = 'LOST' AND side = 'BUY' AND venue = 'INSIDERS' AND origin = 'COPY' AND subscription_id <> ''
  AND terminal_at > now() - interval '15 minutes'
ON CONFLICT (client_order_id) DO NOTHING;

DROP TRIGGER IF EXISTS orders_lost_buy ON orders;
CREATE TRIGGER orders_lost_buy AFTER INSERT OR UPDATE OF state ON orders FOR EACH ROW
    WHEN (NEW.state = 'LOST' AND NEW.side = 'BUY' AND NEW.venue = 'INSIDERS' AND NEW.origin = 'COPY'
          AND NEW.subscription_id <> '')
    EXECUTE FUNCTION lost_buy_noted();
