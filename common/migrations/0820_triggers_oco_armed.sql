-- Control refuses a trigger that joins an OCO group ARMED on another position (guard's one-cancels-other takes a
-- group by its name: a take-profit firing on one asset cancelled a stop-loss of the same name on another, or in
-- another wallet). The check looks the group's ARMED members up on every create naming a group; this partial index
-- keeps that a probe of the few live members, not a scan of every trigger ever made (ended ones stay as history);
-- its predicate is the query's own, so a generic plan of the prepared statement uses it too.
-- Applying it again changes nothing.
CREATE INDEX IF NOT EXISTS triggers_oco_armed ON triggers (oco_group) WHERE state = 'ARMED';
