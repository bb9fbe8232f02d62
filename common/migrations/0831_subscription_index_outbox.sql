-- Control writes a subscription's hot-index entry (Redis) after its commit. A replica stopped or killed in between
-- loses that write, and the other replicas trusted their index until their next full pass (10 minutes): a new
-- follower not copied, a paused or stopped one still copied. Every write of a subscription queues its id here in
-- its own transaction; every control replica sweeps the queue every second and writes the entries Redis does not
-- hold at the row's version (``services.control.index_outbox``), then drops them.
-- Applying it again changes nothing.
CREATE TABLE IF NOT EXISTS subscription_index_outbox (
    seq             bigserial PRIMARY KEY,
    subscription_id text NOT NULL,
    queued_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE OR REPLACE FUNCTION subscription_index_queue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO subscription_index_outbox (subscription_id) SELECT id FROM changed;
    RETURN NULL;
END
$$;

-- transition tables take one event per trigger
DROP TRIGGER IF EXISTS subscriptions_index_inserted ON subscriptions;
CREATE TRIGGER subscriptions_index_inserted AFTER INSERT ON subscriptions
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION subscription_index_queue();
DROP TRIGGER IF EXISTS subscriptions_index_updated ON subscriptions;
CREATE TRIGGER subscriptions_index_updated AFTER UPDATE ON subscriptions
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION subscription_index_queue();
