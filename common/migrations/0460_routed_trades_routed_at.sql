-- The router's check for routed trades a Redis restart or failover lost (services/router/relog.py) reads
-- the trades routed in its window (the last minutes) by routed_at: a BRIN index, since rows arrive in
-- routed_at order; it costs the routing path next to nothing (one summary per block range), where a B-tree
-- would add an entry per routed trade.
CREATE INDEX IF NOT EXISTS routed_trades_routed_at ON routed_trades USING brin (routed_at);
