-- The executor's outbox of OrderEvents not yet appended to tt:stream:order_events: a row per pending event,
-- inserted with the event and deleted once it is appended. Marking order_events.published_at instead was a
-- non-HOT update of every event (published_at was in the predicate of the unpublished index): a new row
-- version and an entry in each of its four indexes, twice an order, ~2,000 dead row versions a second at
-- 1,000 orders/s for autovacuum to clear. The history (order_events) is now written once and never updated.
CREATE TABLE IF NOT EXISTS order_events_outbox (
    event_id            text PRIMARY KEY,
    seq                 bigint NOT NULL            -- order_events.seq: emission order
);
INSERT INTO order_events_outbox (event_id, seq)
SELECT event_id, seq FROM order_events WHERE published_at IS NULL
ON CONFLICT (event_id) DO NOTHING;
DROP INDEX IF EXISTS order_events_unpublished;
ALTER TABLE order_events DROP COLUMN IF EXISTS published_at;
