-- When a subscription last became ACTIVE (created, or resumed): the router does not copy a leader BUY made
-- before it (one the data-api poller brings minutes late, made while the subscription was paused or did not
-- exist yet). Rows from before this column count from their creation, as the router did until now.
ALTER TABLE subscriptions ADD COLUMN IF NOT EXISTS active_time timestamptz;
UPDATE subscriptions SET active_time = create_time WHERE active_time IS NULL;
ALTER TABLE subscriptions ALTER COLUMN active_time SET STATISTICS 0;
