-- Fills, positions and per-subscription statistics. Written by the executor / router; read by control.
CREATE TABLE fills (
    id                  text PRIMARY KEY,
    subscription_id     text,                       -- NULL for exits of manual positions
    follower_wallet_id  text NOT NULL,
    order_id            text NOT NULL,              -- client order id
    leader_trade_id     text NOT NULL DEFAULT '',
    leader_tx_hash      text NOT NULL DEFAULT '',
    asset_id            text NOT NULL,
    condition_id        text NOT NULL DEFAULT '',
    outcome             text NOT NULL DEFAULT '',
    side                text NOT NULL CHECK (side IN ('BUY', 'SELL')),
    size                numeric NOT NULL CHECK (size > 0),
    price               numeric NOT NULL CHECK (price >= 0 AND price <= 1),
    notional_usd        numeric NOT NULL CHECK (notional_usd >= 0),
    venue               text NOT NULL CHECK (venue IN ('INSIDERS', 'PAPER')),
    fill_time           timestamptz NOT NULL,
    leader_trade_time   timestamptz,
    copy_latency_ms     numeric,
    created_at          timestamptz NOT NULL DEFAULT now()
);
-- GET /subscriptions/{id}/fills keyset pagination (newest first).
CREATE INDEX fills_subscription_page ON fills (subscription_id, fill_time DESC, id DESC);
CREATE INDEX fills_order ON fills (order_id);

CREATE TABLE subscription_stats (
    subscription_id     text PRIMARY KEY,
    copied              bigint NOT NULL DEFAULT 0,
    skipped             bigint NOT NULL DEFAULT 0,
    exposure_usd        numeric NOT NULL DEFAULT 0,
    realized_pnl_usd    numeric NOT NULL DEFAULT 0,
    unrealized_pnl_usd  numeric NOT NULL DEFAULT 0,
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- A follower wallet's holding of one outcome token (the executor writes it).
CREATE TABLE positions (
    follower_wallet_id  text NOT NULL,
    asset_id            text NOT NULL,
    condition_id        text NOT NULL DEFAULT '',
    wallet              text NOT NULL,              -- proxy address, lower-case
    size                numeric NOT NULL DEFAULT 0 CHECK (size >= 0),
    avg_price           numeric NOT NULL DEFAULT 0,
    cost_usd            numeric NOT NULL DEFAULT 0,
    realized_pnl_usd    numeric NOT NULL DEFAULT 0,
    opened_at           timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (follower_wallet_id, asset_id)
);
CREATE INDEX positions_wallet ON positions (wallet);
