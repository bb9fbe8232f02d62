-- Guard's columns on control's triggers table and guard's own tables.

-- What guard decided when a trigger fired (fire_count / order_id / fired_time are control's columns).
ALTER TABLE triggers ADD COLUMN IF NOT EXISTS fire_price     numeric NOT NULL DEFAULT 0;
ALTER TABLE triggers ADD COLUMN IF NOT EXISTS fire_size      numeric NOT NULL DEFAULT 0;
-- Position held (net of SELLs still in flight) when the size was decided.
ALTER TABLE triggers ADD COLUMN IF NOT EXISTS fire_held      numeric NOT NULL DEFAULT 0;
-- Set once the executor acknowledged the SELL (SubmitOrder answered); NULL = re-submit on restart.
ALTER TABLE triggers ADD COLUMN IF NOT EXISTS submitted_at   timestamptz;
ALTER TABLE triggers ADD COLUMN IF NOT EXISTS filled_size    numeric NOT NULL DEFAULT 0;
ALTER TABLE triggers ADD COLUMN IF NOT EXISTS avg_fill_price numeric NOT NULL DEFAULT 0;
ALTER TABLE triggers ADD COLUMN IF NOT EXISTS done_time      timestamptz;
-- The serialized execution.v1.Order sent for the fire: a restart re-submits exactly these bytes.
ALTER TABLE triggers ADD COLUMN IF NOT EXISTS fire_order     bytea;
-- FIRED triggers: re-submitted at start-up, summed as in-flight SELLs when sizing.
CREATE INDEX IF NOT EXISTS triggers_fired ON triggers (follower_wallet_id, asset_id) WHERE state = 'FIRED';
CREATE INDEX IF NOT EXISTS triggers_order ON triggers (order_id) WHERE order_id <> '';

-- Exits registered for a copied position (one OCO group per opening of a wallet's position in an asset).
CREATE TABLE IF NOT EXISTS guard_position_exits (
    oco_group           text PRIMARY KEY,
    follower_wallet_id  text NOT NULL,
    asset_id            text NOT NULL,
    wallet              text NOT NULL,
    subscription_id     text NOT NULL,
    opening_order_id    text NOT NULL,
    entry_price         numeric NOT NULL,
    position_size       numeric NOT NULL,
    exits               jsonb NOT NULL,             -- proto3 JSON of the subscription's Exits when opened
    skipped             jsonb NOT NULL DEFAULT '[]', -- exits not registered, with reasons
    state               text NOT NULL CHECK (state IN ('OPEN', 'CLOSED')),
    closed_reason       text NOT NULL DEFAULT '',
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS guard_position_exits_open
    ON guard_position_exits (follower_wallet_id, asset_id) WHERE state = 'OPEN';

-- Outbox of trigger events: written in the transaction of the change, then appended to the durable
-- log tt:stream:trigger_events; rows left unpublished by a crash are published at start-up.
CREATE TABLE IF NOT EXISTS guard_trigger_events (
    seq                 bigserial PRIMARY KEY,
    event_id            text NOT NULL UNIQUE,
    trigger_id          text NOT NULL,
    payload             bytea NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    published_at        timestamptz
);
CREATE INDEX IF NOT EXISTS guard_trigger_events_unpublished ON guard_trigger_events (seq)
    WHERE published_at IS NULL;

-- Performance-rule decisions with the numbers behind them. The decision id is deterministic, so a
-- restart re-sends an unapplied decision instead of making a new one.
CREATE TABLE IF NOT EXISTS guard_perf_decisions (
    decision_id         text PRIMARY KEY,
    subscription_id     text NOT NULL,
    action              text NOT NULL CHECK (action IN ('PAUSE', 'SCALE')),
    multiplier          numeric,
    realized_pnl_usd    numeric NOT NULL,
    unrealized_pnl_usd  numeric NOT NULL,
    pnl_usd             numeric NOT NULL,
    threshold_usd       numeric NOT NULL,
    reason              text NOT NULL,
    decided_at          timestamptz NOT NULL,
    applied_at          timestamptz,
    applied             boolean,
    error               text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS guard_perf_decisions_subscription ON guard_perf_decisions (subscription_id, decided_at);
