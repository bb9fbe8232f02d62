-- Router: routing decisions per leader trade (the outbox of the routed-trade log), copy orders,
-- skips, and the leader's net position per asset as the router saw it.

-- One row per routed leader trade. Written before the RoutedTrade is appended to the durable log;
-- payload is the serialized RoutedTrade re-emitted verbatim after a crash; appended_cursor is set
-- once it is in the log.
CREATE TABLE routed_trades (
    leader_trade_id     text PRIMARY KEY,
    leader_wallet       text NOT NULL,
    asset_id            text NOT NULL,
    side                text NOT NULL,
    orders              int NOT NULL,
    skips               int NOT NULL,
    payload             bytea NOT NULL,
    appended_cursor     text,
    appended_at         timestamptz,
    routed_at           timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE routed_trades ALTER COLUMN payload SET STORAGE EXTERNAL;  -- no compression CPU on the hot path
CREATE INDEX routed_trades_unappended ON routed_trades (routed_at) WHERE appended_cursor IS NULL;

-- One row per copy order: the client order id is unique (the final word on "one copy per
-- leader trade, follower wallet and asset").
CREATE TABLE routed_orders (
    client_order_id     text PRIMARY KEY,
    leader_trade_id     text NOT NULL,
    subscription_id     text NOT NULL,
    follower_wallet_id  text NOT NULL,
    asset_id            text NOT NULL,
    condition_id        text NOT NULL DEFAULT '',
    side                text NOT NULL CHECK (side IN ('BUY', 'SELL')),
    amount_usd          numeric CHECK (amount_usd > 0),
    size                numeric CHECK (size > 0),
    mode                text NOT NULL CHECK (mode IN ('LIVE', 'PAPER')),
    routed_at           timestamptz NOT NULL DEFAULT now(),
    CHECK ((side = 'BUY' AND amount_usd IS NOT NULL) OR (side = 'SELL' AND size IS NOT NULL))
);
-- No secondary index: this table is the uniqueness guard, written 1,000 rows at a time by a fan-out
-- (each index roughly doubles that write); orders are looked up by client order id.

-- One row per (leader trade, subscription) not copied, with its UPPER_SNAKE reason.
CREATE TABLE copy_skips (
    subscription_id     text NOT NULL,
    leader_trade_id     text NOT NULL,
    follower_wallet_id  text NOT NULL,
    reason              text NOT NULL CHECK (reason ~ '^[A-Z][A-Z0-9_]*$'),
    detail              text NOT NULL DEFAULT '',
    skipped_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (leader_trade_id, subscription_id)
);
CREATE INDEX copy_skips_subscription ON copy_skips (subscription_id, skipped_at DESC);

-- A leader's net shares per asset from the trades the router routed (BUY adds, SELL subtracts,
-- floored at 0); the base of proportional SELL sizing.
CREATE TABLE leader_positions (
    leader_wallet       text NOT NULL,
    asset_id            text NOT NULL,
    size                numeric NOT NULL DEFAULT 0 CHECK (size >= 0),
    last_trade_id       text NOT NULL,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (leader_wallet, asset_id)
);

-- The daily loss limit replays a wallet's fills per asset (additive index on control's table).
CREATE INDEX IF NOT EXISTS fills_wallet_asset_time ON fills (follower_wallet_id, asset_id, fill_time);
