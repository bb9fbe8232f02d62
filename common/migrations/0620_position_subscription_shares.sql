-- One follower wallet can follow several leaders that buy the same token: its one position then holds shares bought
-- by several subscriptions. Each subscription's part of the position (its shares and what it paid for them), as
-- {"sub_…": ["shares", "cost"]} ("" for shares no subscription bought), is kept in step with the position by every
-- booking (fills, settlement, reconciliation), and each subscription's exposure and PnL (subscription_stats) follow
-- its own part (services/executor/domain/subscription_shares.py). The parts add up to the position's size and cost.
--
-- NULL is the position of its opening subscription (positions.subscription_id) alone: what almost every position
-- is, what every position booked before this column was, and how a split that does not add up to the position
-- (an executor without this change booked it since) is read. So existing rows need no backfill, and this
-- migration rewrites no row: a running executor's bookings never wait for it.
--
-- The parts live on the position's row rather than in a table of their own: every booking locks the row and
-- rewrites it anyway, so they are read by the statement that takes the lock (a table read in that statement would
-- use the snapshot from before a wait for the lock, and miss what the writer it waited for committed) and written
-- by the same update, with no statement added; the column is in no index, so the update stays HOT.
ALTER TABLE positions ADD COLUMN IF NOT EXISTS subscription_shares jsonb;
-- Nothing filters, joins or sorts on it (as for orders' payload columns, 0570).
ALTER TABLE positions ALTER COLUMN subscription_shares SET STATISTICS 0;
