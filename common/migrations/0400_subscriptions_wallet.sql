-- Control checks a wallet's other subscriptions before one takes an execution mode (one mode per follower
-- wallet at a time: positions are kept per wallet and asset). All states, so not the one-ACTIVE index.
CREATE INDEX IF NOT EXISTS subscriptions_wallet ON subscriptions (follower_wallet_id);
