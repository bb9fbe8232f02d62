-- Reconciliation re-sizes a SELL the venue refused for lack of shares (services/executor/reconciling.py). At
-- start-up it looks up the ones refused in its window that a crash left without their re-sized order: a partial
-- index over those rare rows keeps that read off the whole orders table.
CREATE INDEX IF NOT EXISTS orders_refused_sells ON orders (terminal_at)
    WHERE state = 'REJECTED' AND side = 'SELL' AND reason = 'INVALID_ORDER_NOT_ENOUGH_BALANCE';
