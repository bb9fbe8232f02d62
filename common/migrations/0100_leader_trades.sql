-- Ingest (range 0100-0199): leader trades seen on any feed, and non-trade activity rows.

CREATE TABLE IF NOT EXISTS leader_trades (
    id               text PRIMARY KEY,                -- lt_… content hash + occurrence
    tx_hash          text NOT NULL,
    wallet           text NOT NULL,                   -- lower-case proxy wallet
    asset_id         text NOT NULL,                   -- token id, decimal string
    condition_id     text NOT NULL DEFAULT '',
    side             text NOT NULL CHECK (side IN ('BUY', 'SELL')),
    price            numeric NOT NULL,
    size             numeric NOT NULL,
    notional_usd     numeric NOT NULL,
    fee              numeric,
    outcome          text NOT NULL DEFAULT '',
    outcome_index    integer NOT NULL DEFAULT 0,
    market_slug      text NOT NULL DEFAULT '',
    event_slug       text NOT NULL DEFAULT '',
    title            text NOT NULL DEFAULT '',
    activity_type    text NOT NULL DEFAULT 'TRADE',
    source           text NOT NULL,                   -- feed it was first seen on
    occurrence       integer NOT NULL DEFAULT 0,
    venue_time       timestamptz NOT NULL,
    received_time_ns bigint NOT NULL,
    stream_cursor    text NOT NULL DEFAULT '',        -- entry id in tt:stream:leader_trades
    inserted_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS leader_trades_wallet_time ON leader_trades (wallet, venue_time DESC);
CREATE INDEX IF NOT EXISTS leader_trades_tx ON leader_trades (tx_hash);

CREATE TABLE IF NOT EXISTS leader_activity (
    id               text PRIMARY KEY,                -- la_… content hash + occurrence
    activity_type    text NOT NULL,                   -- SPLIT, MERGE, REDEEM, CONVERSION, REWARD, ...
    tx_hash          text NOT NULL DEFAULT '',
    wallet           text NOT NULL,
    asset_id         text NOT NULL DEFAULT '',
    condition_id     text NOT NULL DEFAULT '',
    side             text NOT NULL DEFAULT '',
    price            numeric NOT NULL DEFAULT 0,
    size             numeric NOT NULL DEFAULT 0,
    usdc_size        numeric,
    outcome          text NOT NULL DEFAULT '',
    outcome_index    integer NOT NULL DEFAULT 0,
    market_slug      text NOT NULL DEFAULT '',
    event_slug       text NOT NULL DEFAULT '',
    title            text NOT NULL DEFAULT '',
    occurrence       integer NOT NULL DEFAULT 0,
    venue_time       timestamptz NOT NULL,
    received_time_ns bigint NOT NULL,
    inserted_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS leader_activity_wallet_time ON leader_activity (wallet, venue_time DESC);
