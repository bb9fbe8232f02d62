-- The rules a perf decision was made under (guard's guard_perf_decisions): the subscription's execution mode and
-- its perf (lossStopUsd, profitScaleAtUsd, profitScaleMultiplier), as JSON. Guard sends it with the decision (also
-- when it re-sends one after a restart) and control refuses a decision whose rules are no longer the
-- subscription's; the mode also scopes the loss-stop's resume baseline to the venue it was recorded for. NULL on
-- rows from before this column: not checked, and counted in whatever mode the subscription is in.
ALTER TABLE guard_perf_decisions ADD COLUMN IF NOT EXISTS decided_under jsonb;
