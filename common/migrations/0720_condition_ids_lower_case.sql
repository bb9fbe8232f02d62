-- Condition ids in lower case, as ingest writes them and every reader compares them. Until intake lower-cased them
-- (1323ebf), a manual order's condition id was stored as the trading terminal typed it, and its position kept it.
-- Settlement goes by token since (and stamps the market's id on what it settles), but ingest's REST safety net
-- schedules the markets held by the id their positions are booked under, and the Position route joins
-- market_resolutions, market_checks and redemptions on it: the market of a position booked under its id in upper
-- case was never checked on REST (a missed socket resolution left the position OPEN for ever, a loser's cost held
-- against the caps), and the route showed no check, resolution or redemption for it.
--
-- Only ids of the venue's form (0x + 64 hex digits, any case) are rewritten; '' and other forms name no market and
-- stay as they are (settlement finds their positions by token, the safety net looks their tokens' markets up). The
-- tables keyed on the market's id (market_resolutions, market_checks, redemptions) are written from ingest's
-- resolutions and checks, lower-case from their first row, and fills are joined on no condition id. updated_at is
-- left alone: the position did not change (reconciliation leaves a position changed after a venue count alone).
-- Applying it again changes nothing: one pass over each table, no row written when every id is lower-case already.
UPDATE positions SET condition_id = lower(condition_id)
 WHERE condition_id ~ '^0[xX][0-9a-fA-F]{64}$' AND condition_id <> lower(condition_id);
UPDATE position_history SET condition_id = lower(condition_id)
 WHERE condition_id ~ '^0[xX][0-9a-fA-F]{64}$' AND condition_id <> lower(condition_id);
