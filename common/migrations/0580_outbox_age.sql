-- The journal's sweep looks for outbox events that no append took care of, older than its interval. It walked
-- the outbox in seq order and looked every event up in order_events to read its age: the outbox always holds the
-- last couple of seconds of events (an appended event stays until Redis has it on disk), so at 1,000 orders/s
-- each sweep visited ~4,000 young rows to find none, and after a fan-out it read back thousands of held events
-- with their payloads only to drop them (130-210 ms of PostgreSQL CPU a sweep, every 2 s, measured while
-- 100 trades/s x 10 followers ran after 1,000-follower fan-outs). The outbox now carries each event's age (the
-- same transaction time as order_events.created_at), and an index on it gives the sweep the old rows alone.
ALTER TABLE order_events_outbox ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now();
UPDATE order_events_outbox o SET created_at = e.created_at FROM order_events e WHERE e.seq = o.seq;
CREATE INDEX IF NOT EXISTS order_events_outbox_age ON order_events_outbox (created_at, seq);
DROP INDEX IF EXISTS order_events_outbox_seq;
