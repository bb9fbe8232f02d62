-- Executor: one row per order it was asked to place (the intent, persisted before the POST), and an
-- outbox of the OrderEvents it emits (written in the same transaction as the state change, then
-- appended to tt:stream:order_events and marked published).
CREATE TABLE orders (
    client_order_id     text PRIMARY KEY,
    state               text NOT NULL CHECK (state IN ('NEW', 'SUBMITTING', 'UNKNOWN', 'PLACED', 'PARTIALLY_FILLED',
                                                       'FILLED', 'CANCELLED', 'REJECTED', 'LOST', 'FAILED')),
    venue               text NOT NULL CHECK (venue IN ('INSIDERS', 'PAPER')),
    origin              text NOT NULL,
    subscription_id     text,
    follower_wallet_id  text NOT NULL,
    follower_proxy      text NOT NULL DEFAULT '',
    asset_id            text NOT NULL,
    side                text NOT NULL CHECK (side IN ('BUY', 'SELL')),
    order_type          text NOT NULL,
    amount_usd          numeric,
    size                numeric,
    limit_price         numeric,
    venue_order_id      text NOT NULL DEFAULT '',
    venue_status        text NOT NULL DEFAULT '',
    attempts            int NOT NULL DEFAULT 0,
    not_found           int NOT NULL DEFAULT 0,
    maybe_unsent        boolean NOT NULL DEFAULT false,
    filled_size         numeric NOT NULL DEFAULT 0,
    filled_notional     numeric NOT NULL DEFAULT 0,    -- USD of the fills booked so far
    avg_price           numeric NOT NULL DEFAULT 0,
    fee_shares          numeric NOT NULL DEFAULT 0,
    reason              text NOT NULL DEFAULT '',
    detail              text NOT NULL DEFAULT '',
    leader_trade_id     text NOT NULL DEFAULT '',
    trigger_id          text NOT NULL DEFAULT '',
    order_proto         bytea NOT NULL,            -- the tradingtools.execution.v1.Order as received
    post_sent_ns        bigint,                    -- first POST left the executor (Unix ns)
    reservation_released boolean NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    terminal_at         timestamptz
);
-- Restart recovery: every order not yet terminal.
CREATE INDEX orders_open ON orders (created_at)
    WHERE state NOT IN ('FILLED', 'CANCELLED', 'REJECTED', 'LOST', 'FAILED');
-- Terminal orders whose reserved exposure release is not confirmed yet.
CREATE INDEX orders_unreleased ON orders (terminal_at)
    WHERE reservation_released = false AND terminal_at IS NOT NULL;

CREATE TABLE order_events (
    seq                 bigserial PRIMARY KEY,     -- emission order
    event_id            text NOT NULL UNIQUE,
    client_order_id     text NOT NULL,
    type                text NOT NULL,
    payload             bytea NOT NULL,            -- serialized tradingtools.execution.v1.OrderEvent
    created_at          timestamptz NOT NULL DEFAULT now(),
    published_at        timestamptz
);
CREATE INDEX order_events_order ON order_events (client_order_id, seq);
CREATE INDEX order_events_unpublished ON order_events (seq) WHERE published_at IS NULL;
