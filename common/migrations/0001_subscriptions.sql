-- Subscriptions: a follower wallet copying one leader (control service, source of truth).
-- Config sub-messages (sizing, filters, risk, exits, perf) are stored as the proto3 JSON of
-- tradingtools.control.v1.{Sizing,Filters,Risk,Exits,Perf}; decimals inside are strings.
CREATE TABLE subscriptions (
    id                  text PRIMARY KEY,
    follower_user_id    text NOT NULL,
    follower_wallet_id  text NOT NULL,
    follower_proxy      text NOT NULL CHECK (follower_proxy ~ '^0x[0-9a-f]{40}$'),
    leader_proxy        text NOT NULL CHECK (leader_proxy ~ '^0x[0-9a-f]{40}$'),
    label               text NOT NULL DEFAULT '',
    state               text NOT NULL CHECK (state IN ('ACTIVE', 'PAUSED', 'STOPPED')),
    mode                text NOT NULL CHECK (mode IN ('LIVE', 'PAPER')),
    sizing              jsonb NOT NULL,
    filters             jsonb NOT NULL,
    risk                jsonb NOT NULL,
    exits               jsonb NOT NULL,
    perf                jsonb NOT NULL,
    -- Sizing multiplier set by perf actions (profit-scale); 1 when none.
    applied_multiplier  numeric NOT NULL DEFAULT 1 CHECK (applied_multiplier > 0),
    paused_reason       text NOT NULL DEFAULT '',
    -- Bumped on every change.
    version             bigint NOT NULL DEFAULT 1,
    create_time         timestamptz NOT NULL,
    update_time         timestamptz NOT NULL,
    stop_time           timestamptz
);

-- One ACTIVE subscription per (follower wallet, leader): the final word on concurrent creates/resumes.
CREATE UNIQUE INDEX subscriptions_one_active
    ON subscriptions (follower_wallet_id, leader_proxy) WHERE state = 'ACTIVE';
-- GET /subscriptions?followerProxy=… keyset pagination (oldest first).
CREATE INDEX subscriptions_follower_page ON subscriptions (follower_proxy, create_time, id);
-- Hot-index rebuild: active subscriptions by leader.
CREATE INDEX subscriptions_leader_active ON subscriptions (leader_proxy) WHERE state = 'ACTIVE';
