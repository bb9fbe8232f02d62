-- Fast reads of subscriptions: the config sub-messages as one serialized
-- tradingtools.control.v1.Subscription holding only sizing, filters, risk, exits and perf.
-- Control reads this column (JSON decoding of five JSONB columns per row made a 500-row list slow);
-- the JSONB columns stay as a human-readable mirror written in the same statement. Rows written
-- before this migration have NULL here and are read from the JSONB columns until their next change.
ALTER TABLE subscriptions ADD COLUMN config_pb bytea;
