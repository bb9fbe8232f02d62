-- Bumped by the executor's booking each time it books fills of the subscription, in the same
-- transaction: a reader that keeps what it derived from a subscription's fills knows they have not
-- changed while this is unchanged (guard's performance rules no longer re-read every fill each pass).
ALTER TABLE subscription_stats ADD COLUMN IF NOT EXISTS fills_version bigint NOT NULL DEFAULT 0;
