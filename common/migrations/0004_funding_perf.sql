-- Funded balances (PERCENT_OF_BALANCE sizing) and applied performance actions.
CREATE TABLE funding (
    follower_wallet_id  text PRIMARY KEY,
    balance_usd         numeric NOT NULL CHECK (balance_usd >= 0),
    as_of               timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL
);

-- One row per perf decision (guard's decision_id): a replayed decision changes nothing.
CREATE TABLE perf_actions (
    decision_id         text PRIMARY KEY,
    subscription_id     text NOT NULL REFERENCES subscriptions (id),
    action              text NOT NULL CHECK (action IN ('PAUSE', 'SCALE')),
    multiplier          numeric CHECK (multiplier IS NULL OR multiplier > 0),
    reason              text NOT NULL DEFAULT '',
    token_id            text NOT NULL,
    applied_at          timestamptz NOT NULL
);
CREATE INDEX perf_actions_subscription ON perf_actions (subscription_id, applied_at);
