-- A BUY's fee that the venue reports after the shares it belongs to were booked (the final answer of a fill booked
-- earlier, with no more shares) is booked as a fills row of its own: side BUY, size 0, no USD, its fee_shares. Guard's
-- performance rules fold it like any BUY (the subscription's shares fall by the fee, its cost stays); control's fill
-- list leaves it out. The size check allows exactly those rows. Added NOT VALID, like fills_fee_shares_check (0340):
-- every row already there has size > 0, and an inline check would read the whole table under the exclusive lock.
-- Applying it again changes nothing.
ALTER TABLE fills DROP CONSTRAINT IF EXISTS fills_size_check;
ALTER TABLE fills ADD CONSTRAINT fills_size_check
    CHECK (size > 0 OR size = 0 AND side = 'BUY' AND fee_shares > 0 AND notional_usd = 0) NOT VALID;
