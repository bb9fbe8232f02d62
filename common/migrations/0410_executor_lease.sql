-- One active executor per database. The executor that takes the lease (a session advisory lock held by its
-- lease connection) raises the lease's epoch; its connections carry that epoch in ``tt.executor_epoch``. A
-- write to ``orders``, ``fills`` or ``positions`` from a connection whose epoch is no longer current fails
-- with SQLSTATE 55TL1 (class 55, "object not in prerequisite state", which psycopg raises as an
-- OperationalError: callers retry it like an outage and never dead-letter or refuse on it). So an executor
-- that lost the lease, and may not know it yet, can neither insert an intent (it POSTs nothing new) nor book
-- a fill. Connections without the setting (other services, operators) are not checked.
CREATE TABLE IF NOT EXISTS service_leases (
    name        text PRIMARY KEY,
    epoch       bigint NOT NULL,
    holder      text NOT NULL,
    acquired_at timestamptz NOT NULL DEFAULT now()
);

-- The shared advisory lock, held to the end of the writing transaction, makes a takeover (which raises the
-- epoch under the same lock taken exclusively) wait for writes of the old epoch already under way: once the
-- new epoch is committed, every write of the old epoch has committed or failed, and none starts after.
CREATE OR REPLACE FUNCTION executor_fence() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    mine text := current_setting('tt.executor_epoch', true);
BEGIN
    IF mine IS NULL OR mine = '' THEN
        RETURN NULL;
    END IF;
    -- under a snapshot older than the statement, the read below could miss a takeover
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'executor writes need READ COMMITTED, not %', current_setting('transaction_isolation')
            USING ERRCODE = '55TL2';
    END IF;
    PERFORM pg_advisory_xact_lock_shared(hashtextextended('tt:fence:executor', 0));
    IF NOT EXISTS (SELECT 1 FROM service_leases WHERE name = 'executor' AND epoch = mine::bigint) THEN
        RAISE EXCEPTION 'executor lease lost: epoch % is no longer current', mine USING ERRCODE = '55TL1';
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS orders_executor_fence ON orders;
CREATE TRIGGER orders_executor_fence BEFORE INSERT OR UPDATE OR DELETE ON orders
    FOR EACH STATEMENT EXECUTE FUNCTION executor_fence();
DROP TRIGGER IF EXISTS fills_executor_fence ON fills;
CREATE TRIGGER fills_executor_fence BEFORE INSERT OR UPDATE OR DELETE ON fills
    FOR EACH STATEMENT EXECUTE FUNCTION executor_fence();
DROP TRIGGER IF EXISTS positions_executor_fence ON positions;
CREATE TRIGGER positions_executor_fence BEFORE INSERT OR UPDATE OR DELETE ON positions
    FOR EACH STATEMENT EXECUTE FUNCTION executor_fence();
