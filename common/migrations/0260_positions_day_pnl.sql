-- Realized PnL of the current UTC day per position, kept up to date by the executor's booking (the
-- day of the booking): the router's daily loss limit reads one sum per wallet from it instead of
-- replaying each sold asset's whole fill history on every trade.
ALTER TABLE positions ADD COLUMN IF NOT EXISTS pnl_day date;
ALTER TABLE positions ADD COLUMN IF NOT EXISTS pnl_day_realized_usd numeric NOT NULL DEFAULT 0;
-- Only that replay read fills by (wallet, asset, time): every fill insert maintained it for nothing.
DROP INDEX IF EXISTS fills_wallet_asset_time;
