-- Shares the venue kept as the fee of a BUY: the holding grew by size - fee_shares (0 for a SELL).
-- Guard's performance rules fold holdings from fills and need it. Fills booked before this count no fee.
-- The CHECK is added NOT VALID: an inline one would read the whole table under the ALTER's exclusive lock
-- (every booking waits) only to check rows that all hold the default 0; new rows are checked either way.
ALTER TABLE fills ADD COLUMN IF NOT EXISTS fee_shares numeric NOT NULL DEFAULT 0;
ALTER TABLE fills ADD CONSTRAINT fills_fee_shares_check CHECK (fee_shares >= 0) NOT VALID;
