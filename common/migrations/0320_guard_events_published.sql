-- Guard's outbox prune deletes the events published more than a day ago: with an index on the time
-- they were published, it reads only those rows instead of the whole table.
CREATE INDEX IF NOT EXISTS guard_trigger_events_published ON guard_trigger_events (published_at);
