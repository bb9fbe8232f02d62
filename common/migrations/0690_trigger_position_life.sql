-- The life of the position a trigger was made for (triggers.position_opened_at: the position's opened_at when the
-- trigger was inserted, both written by PostgreSQL's clock). When guard reads a position's closing SELL after the
-- position was opened again, the triggers of the life that ended are cancelled with it. They were told by
-- create_time < opened_at, which compares the clock of the service that created the trigger (control for a manual
-- one, guard for copy exits) with the database's: with control's clock a few seconds ahead, a manual stop of the
-- old life stayed armed and sold the new one; a few seconds behind, a stop the user had just set on the new life
-- was cancelled. Triggers from before this column keep the old rule (NULL).
ALTER TABLE triggers ADD COLUMN IF NOT EXISTS position_opened_at timestamptz;
