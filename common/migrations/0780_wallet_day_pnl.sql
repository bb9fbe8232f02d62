-- The daily loss limit stops a wallet's copied BUYs for the rest of the UTC day once its realized PnL of the day went
-- down to -limit. The router read the day's net (the sum of positions.pnl_day_realized_usd), so a gain realized later
-- the same day started BUYs again: -$300 (limit $300 reached) then +$49 read -$251, and the next BUY was copied.
-- The executor now keeps, per wallet and UTC day, the day's net realized PnL and the lowest point it went down to
-- (never above 0: the day starts at 0), written with the booking that realizes it (fills: fill_store; settlement:
-- settlement_store) under the row's lock, so two positions of one wallet booked at once both count. The day is the
-- booking transaction's UTC date, as positions.pnl_day. The router reads the row of the wallet and day by its key.
-- Rollout: the executor first (it applies this at its start, before it takes its lease: stop the old one and its
-- standby first). An older executor still booking once this was applied leaves the rows behind the positions; the
-- router reads the lower of this row's low and the positions' net of the day, so it is never looser than before.
-- Rows of past days are never read again (the key leads by wallet: a day's row is one probe, however many there are).
CREATE TABLE IF NOT EXISTS wallet_day_pnl (
    follower_wallet_id text NOT NULL,
    day date NOT NULL,
    realized_usd numeric NOT NULL,
    low_usd numeric NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (follower_wallet_id, day)
);
-- Today so far: the net booked before this release, the lowest point it reached unknown (taken as the net).
INSERT INTO wallet_day_pnl (follower_wallet_id, day, realized_usd, low_usd)
SELECT follower_wallet_id, pnl_day, sum(pnl_day_realized_usd), least(0, sum(pnl_day_realized_usd))
FROM positions WHERE pnl_day = (now() AT TIME ZONE 'UTC')::date
GROUP BY follower_wallet_id, pnl_day
ON CONFLICT (follower_wallet_id, day) DO NOTHING;
