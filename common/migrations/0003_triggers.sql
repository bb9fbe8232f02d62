-- Take-profit / stop-loss triggers: created through control, run by guard.
-- Control publishes {"triggerId","op","version"} on Redis channel tt:triggers:changed after each change.
CREATE TABLE triggers (
    id                  text PRIMARY KEY,
    wallet              text NOT NULL CHECK (wallet ~ '^0x[0-9a-f]{40}$'),
    follower_wallet_id  text NOT NULL,
    subscription_id     text REFERENCES subscriptions (id),   -- NULL for manual positions
    asset_id            text NOT NULL,
    kind                text NOT NULL CHECK (kind IN ('TAKE_PROFIT', 'STOP_LOSS', 'TRAILING_STOP')),
    trigger_price       numeric NOT NULL DEFAULT 0,
    trail_pct           numeric NOT NULL DEFAULT 0,
    activation_price    numeric NOT NULL DEFAULT 0,
    size                numeric NOT NULL DEFAULT 0 CHECK (size >= 0),
    sell_fraction       numeric NOT NULL DEFAULT 0 CHECK (sell_fraction >= 0 AND sell_fraction <= 1),
    oco_group           text NOT NULL DEFAULT '',
    price_source        text NOT NULL CHECK (price_source IN ('BEST_BID', 'MID', 'LAST_TRADE')),
    state               text NOT NULL CHECK (state IN ('ARMED', 'FIRED', 'DONE', 'FAILED', 'CANCELLED')),
    state_reason        text NOT NULL DEFAULT '',
    high_water_mark     numeric NOT NULL DEFAULT 0,
    source              text NOT NULL CHECK (source IN ('MANUAL', 'COPY')),
    order_id            text NOT NULL DEFAULT '',
    fire_count          int NOT NULL DEFAULT 0,
    version             int NOT NULL DEFAULT 1,
    create_time         timestamptz NOT NULL,
    update_time         timestamptz NOT NULL,
    fired_time          timestamptz,
    CHECK ((size > 0) <> (sell_fraction > 0))
);
-- GET /triggers?wallet=… keyset pagination (oldest first).
CREATE INDEX triggers_wallet_page ON triggers (wallet, create_time, id);
-- Cancel a stopped subscription's open triggers; guard's reload of armed triggers.
CREATE INDEX triggers_subscription_armed ON triggers (subscription_id) WHERE state = 'ARMED';
CREATE INDEX triggers_asset_armed ON triggers (asset_id) WHERE state = 'ARMED';
