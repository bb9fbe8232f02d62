-- Guard's sweep of the triggers armed by another process that never announced them (services.guard.unwatched: a
-- rollout's old guard that died between committing a position's copy exits and announcing them) reads the ARMED
-- triggers created in the last minute or so, every few seconds. This index keeps that a probe of the newest few,
-- not a scan of every trigger ever made. create_time never changes and state is in other partial indexes'
-- predicates already: no update that stayed on its page (HOT: marks, holds, resizes) leaves it now.
-- Applying it again changes nothing.
CREATE INDEX IF NOT EXISTS triggers_armed_created ON triggers (create_time) WHERE state = 'ARMED';
