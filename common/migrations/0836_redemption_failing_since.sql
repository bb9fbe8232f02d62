-- A redemption whose calls keep failing is retried with backoff for as long as it takes (every retry carries its
-- Idempotency-Key), and alerted once when the run of failures crosses its bound: its N-th failure in a row, or its
-- first at or past the run's age (services.executor.domain.redemption_retry). When the run began is kept beside its
-- count (failures), so that a restart goes on with the run instead of starting a new one; when it crossed is kept
-- too, so that a restart does not alert the same run again. NULL: no failure yet / not overdue. Both are read only
-- while failures > 0 (an answer ends the run; the next run sets them again).
ALTER TABLE redemptions ADD COLUMN IF NOT EXISTS failing_since timestamptz;
ALTER TABLE redemptions ADD COLUMN IF NOT EXISTS overdue_since timestamptz;
