-- Positions through their whole life: opened, closed, resolved with their market, redeemed, reconciled with
-- the venue. A `positions` row is a wallet's current life in one token (it keeps its (wallet, asset) key); a
-- life that ends and is followed by a new one (shares bought again after a full sell) is copied into
-- `position_history` first, so every life stays listed.
ALTER TABLE positions ADD COLUMN IF NOT EXISTS id text;
ALTER TABLE positions ADD COLUMN IF NOT EXISTS state text NOT NULL DEFAULT 'OPEN'
    CHECK (state IN ('OPEN', 'CLOSED', 'RESOLVED_WON', 'RESOLVED_LOST', 'REDEEMED'));
ALTER TABLE positions ADD COLUMN IF NOT EXISTS origin text NOT NULL DEFAULT 'COPY'
    CHECK (origin IN ('COPY', 'MANUAL', 'EXTERNAL'));
ALTER TABLE positions ADD COLUMN IF NOT EXISTS subscription_id text;         -- of the opening fill's order
ALTER TABLE positions ADD COLUMN IF NOT EXISTS venue text NOT NULL DEFAULT 'INSIDERS'
    CHECK (venue IN ('INSIDERS', 'PAPER'));
ALTER TABLE positions ADD COLUMN IF NOT EXISTS outcome text NOT NULL DEFAULT '';
-- realized_pnl_usd keeps counting across lives (the daily loss limit reads its changes); this life's
-- realized PnL is realized_pnl_usd - realized_base_usd.
ALTER TABLE positions ADD COLUMN IF NOT EXISTS realized_base_usd numeric NOT NULL DEFAULT 0;
ALTER TABLE positions ADD COLUMN IF NOT EXISTS closed_at timestamptz;
-- Set when the market resolved: the shares held then (size drops to 0: nothing left to sell or count as
-- exposure), what each pays, and the winner.
ALTER TABLE positions ADD COLUMN IF NOT EXISTS resolved_shares numeric;
ALTER TABLE positions ADD COLUMN IF NOT EXISTS payout_per_share numeric;
ALTER TABLE positions ADD COLUMN IF NOT EXISTS winning_asset_id text;
ALTER TABLE positions ADD COLUMN IF NOT EXISTS resolved_at timestamptz;
-- What the Insiders API last reported for this wallet and token.
ALTER TABLE positions ADD COLUMN IF NOT EXISTS venue_shares numeric;
ALTER TABLE positions ADD COLUMN IF NOT EXISTS reconciled_at timestamptz;

UPDATE positions SET id = 'pos_' || substr(md5(follower_wallet_id || '|' || asset_id || '|' || opened_at::text), 1, 32)
 WHERE id IS NULL;
UPDATE positions SET state = 'CLOSED', closed_at = updated_at WHERE size = 0 AND state = 'OPEN';
UPDATE positions p SET venue = 'PAPER' WHERE EXISTS (
    SELECT 1 FROM fills f WHERE f.follower_wallet_id = p.follower_wallet_id AND f.asset_id = p.asset_id
       AND f.venue = 'PAPER' AND f.created_at >= p.opened_at);
UPDATE positions p SET subscription_id = (
    SELECT f.subscription_id FROM fills f WHERE f.follower_wallet_id = p.follower_wallet_id
       AND f.asset_id = p.asset_id AND f.side = 'BUY' ORDER BY f.created_at LIMIT 1)
 WHERE subscription_id IS NULL;
CREATE UNIQUE INDEX IF NOT EXISTS positions_id ON positions (id);
CREATE INDEX IF NOT EXISTS positions_condition ON positions (condition_id) WHERE state = 'OPEN';
CREATE INDEX IF NOT EXISTS positions_wallet_page ON positions (wallet, opened_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS positions_subscription_page ON positions (subscription_id, opened_at DESC, id DESC);

-- Ended lives of positions that were opened again (same columns as positions, keyed by the life's id).
CREATE TABLE IF NOT EXISTS position_history (
    id                  text PRIMARY KEY,
    follower_wallet_id  text NOT NULL,
    asset_id            text NOT NULL,
    condition_id        text NOT NULL DEFAULT '',
    wallet              text NOT NULL,
    state               text NOT NULL,
    origin              text NOT NULL,
    subscription_id     text,
    venue               text NOT NULL,
    outcome             text NOT NULL DEFAULT '',
    size                numeric NOT NULL,
    avg_price           numeric NOT NULL,
    cost_usd            numeric NOT NULL,
    realized_pnl_usd    numeric NOT NULL,          -- this life's
    resolved_shares     numeric,
    payout_per_share    numeric,
    winning_asset_id    text,
    resolved_at         timestamptz,
    venue_shares        numeric,
    reconciled_at       timestamptz,
    opened_at           timestamptz NOT NULL,
    closed_at           timestamptz,
    updated_at          timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS position_history_wallet_page ON position_history (wallet, opened_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS position_history_subscription_page
    ON position_history (subscription_id, opened_at DESC, id DESC);

-- Market resolutions as ingest emitted them (one per market, whichever source saw it first). A row whose
-- appended_cursor is NULL was recorded but not yet appended to the durable log (an outbox sweep appends it).
CREATE TABLE IF NOT EXISTS market_resolutions (
    condition_id        text PRIMARY KEY,
    asset_ids           text[] NOT NULL,            -- in outcome-index order
    winning_asset_id    text NOT NULL,
    winning_outcome     text NOT NULL DEFAULT '',
    market_slug         text NOT NULL DEFAULT '',
    neg_risk            boolean NOT NULL DEFAULT false,
    source              text NOT NULL CHECK (source IN ('CLOB_SOCKET', 'CLOB_REST')),
    confirmed           boolean NOT NULL DEFAULT false,
    venue_time          timestamptz,
    received_at         timestamptz NOT NULL,
    payload             bytea NOT NULL,             -- the MarketResolution as emitted
    appended_cursor     text,
    appended_at         timestamptz
);
CREATE INDEX IF NOT EXISTS market_resolutions_unappended ON market_resolutions (received_at)
    WHERE appended_cursor IS NULL;

-- Ingest's REST safety net: when each held market is checked next (at least hourly, and soon after its end).
CREATE TABLE IF NOT EXISTS market_checks (
    condition_id        text PRIMARY KEY,
    market_slug         text NOT NULL DEFAULT '',
    end_date            timestamptz,
    closed              boolean NOT NULL DEFAULT false,
    checked_at          timestamptz,
    next_check_at       timestamptz NOT NULL,
    failures            integer NOT NULL DEFAULT 0,
    last_error          text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS market_checks_due ON market_checks (next_check_at);

-- Redemptions of winning shares: one per (follower wallet, market), never two. The executor writes it.
CREATE TABLE IF NOT EXISTS redemptions (
    follower_wallet_id  text NOT NULL,
    condition_id        text NOT NULL,
    wallet              text NOT NULL,              -- proxy address, lower-case
    redemption_key      text NOT NULL UNIQUE,       -- the venue's Idempotency-Key
    state               text NOT NULL CHECK (state IN ('PENDING', 'SUBMITTED', 'CONFIRMED', 'FAILED')),
    neg_risk            boolean NOT NULL DEFAULT false,
    amounts             text[] NOT NULL DEFAULT '{}', -- neg-risk: shares per outcome index
    shares              numeric NOT NULL,           -- winning shares redeemed
    payout_usd          numeric,
    redeem_id           text NOT NULL DEFAULT '',
    tx_hash             text NOT NULL DEFAULT '',
    attempts            integer NOT NULL DEFAULT 0,    -- POSTs made (each recorded before it leaves)
    failures            integer NOT NULL DEFAULT 0,    -- retryable failures in a row (the backoff's step)
    reason              text NOT NULL DEFAULT '',
    detail              text NOT NULL DEFAULT '',
    next_attempt_at     timestamptz NOT NULL DEFAULT now(),
    published_state     text NOT NULL DEFAULT '',   -- the state whose RedemptionEvent is on the durable log
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (follower_wallet_id, condition_id)
);
CREATE INDEX IF NOT EXISTS redemptions_due ON redemptions (next_attempt_at) WHERE state IN ('PENDING', 'SUBMITTED');
CREATE INDEX IF NOT EXISTS redemptions_unpublished ON redemptions (updated_at) WHERE published_state <> state;
-- Redemptions are the executor's writes too: only the lease holder's connections may make them.
DROP TRIGGER IF EXISTS redemptions_executor_fence ON redemptions;
CREATE TRIGGER redemptions_executor_fence BEFORE INSERT OR UPDATE OR DELETE ON redemptions
    FOR EACH STATEMENT EXECUTE FUNCTION executor_fence();
