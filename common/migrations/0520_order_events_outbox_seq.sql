-- The executor's sweep reads the outbox in emission order, joined to order_events by seq. Without an index on
-- the outbox's seq, the executor's planner settings (no hash or merge joins) left one plan: every order_events
-- row (by its primary key) compared with every outbox row. That was 11 million comparisons and 0.95 s for 4,000
-- held events over 6,500 events, and it grows with the whole history. With this index the sweep walks the outbox
-- in seq order and looks each event up by its key, so its cost follows the outbox alone.
CREATE INDEX IF NOT EXISTS order_events_outbox_seq ON order_events_outbox (seq);
