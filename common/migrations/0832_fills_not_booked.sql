-- A fill kept but not booked (of the other venue than its position's open life: services.executor.adapters.unbooked)
-- is noted here by its booking's transaction, and alerted (FILL_NOT_BOOKED) from here once that committed: at once by
-- the process that booked it, or by an executor's sweep (at its start, then every half minute) when that process
-- lost the commit's answer, or the alert's, or stopped first. ``reported_at``: when it was alerted (NULL: not yet).
-- The fills not booked before this migration are not noted (they were alerted when their booking committed).
-- Applying it again changes nothing.
CREATE TABLE IF NOT EXISTS fills_not_booked (
    fill_id        text PRIMARY KEY,                -- fills.id
    position_venue text NOT NULL,                   -- the venue of the position's open life
    found_at       timestamptz NOT NULL DEFAULT now(),
    reported_at    timestamptz
);
CREATE INDEX IF NOT EXISTS fills_not_booked_unreported ON fills_not_booked (found_at) WHERE reported_at IS NULL;
