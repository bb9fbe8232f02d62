-- Reads of one exits group's triggers in every state: is the group used up (guard's check on each BUY fill of a
-- position with copy exits, under the position's lock), and the SELL fill's peek. Only the ARMED ones had an index
-- (triggers_oco_armed), so each such read went through every trigger ever made: the ended triggers of all the
-- other groups pile up, and the check grew with the history (25 ms at 155,000 triggers, 150 ms at a million).
-- Not partial: the reads join on the group, which does not prove a non-empty one. oco_group never changes, so an
-- update that stayed on its page (HOT: marks, holds, resizes) still does. Applying it again changes nothing.
CREATE INDEX IF NOT EXISTS triggers_oco_group ON triggers (oco_group);
