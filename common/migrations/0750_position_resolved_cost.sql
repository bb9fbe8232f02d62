-- What a life paid for the shares it held when its market resolved: settlement sets the position's cost to 0 (the
-- shares are gone, paid out), while the Position resource still shows those shares (resolved_shares) and needs
-- their cost. Written by settlement, copied into position_history with the rest of the life, cleared when a new
-- life starts. Lives resolved before this column existed have none: control shows resolved_shares x avg_price.
-- Applying it again changes nothing.
ALTER TABLE positions ADD COLUMN IF NOT EXISTS resolved_cost_usd numeric;
ALTER TABLE position_history ADD COLUMN IF NOT EXISTS resolved_cost_usd numeric;
