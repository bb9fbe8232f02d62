-- A crash of the machine that runs Redis and the executor loses Redis's last second of writes (appendfsync
-- everysec), reservation releases among them, while PostgreSQL already recorded those releases as done (their
-- order_pending rows are deleted ~0.1 s after the release). The restarted executor redoes the releases of the
-- orders that ended in the 60 s before the last order end recorded (services/executor/releases.py): it needs that
-- last end and the orders that ended just before it, on an orders table of millions of rows. An index of
-- `orders` on terminal_at would make the update that ends an order non-HOT (a new entry in every index of
-- `orders`, which migration 0560 removed); order_events is never updated, and each order's terminal event is
-- written in the transaction that sets orders.terminal_at (so created_at is the same time). One entry per ended
-- order: the last end is one probe, the orders before it one range. The type list is the executor's
-- order_sql.TERMINAL_EVENTS (its reads name the same list, or the index cannot serve them).
CREATE INDEX IF NOT EXISTS order_events_ended ON order_events (created_at)
    WHERE type IN ('ORDER_EVENT_TYPE_CANCELLED', 'ORDER_EVENT_TYPE_FAILED', 'ORDER_EVENT_TYPE_FILLED',
                   'ORDER_EVENT_TYPE_LOST', 'ORDER_EVENT_TYPE_REJECTED');
