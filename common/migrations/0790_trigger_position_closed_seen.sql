-- The close of the position a trigger's insert saw (triggers.position_closed_seen: the closed_at of the position's
-- row when it was not OPEN, read in the same statement as position_opened_at; 'epoch' when the position had no row:
-- never held, no close). A trigger that recorded no life (set while nothing was held) was told from the life before
-- it by create_time >= closed_at: control's clock, read before its transaction, against the database's. 50 ms
-- behind, a stop set after the close was cancelled by the late-read SELL that made it, and the next life was left
-- unguarded; ahead, a stop set before the position was first held outlived its life. Now it is the next life's when
-- the close it saw is the position's latest close. Triggers from before this column (NULL, no life) keep the old rule.
ALTER TABLE triggers ADD COLUMN IF NOT EXISTS position_closed_seen timestamptz;
