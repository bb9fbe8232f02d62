-- Reconciliation lists its wallets once a minute (reconcile_store._LIVE_WALLETS): those copying LIVE and those holding
-- an Insiders position not ended (OPEN, or won and not redeemed). No index covered the second part, so it read every
-- row of `positions`, which keeps every ended life's row for ever: 8,350 pages and 55 ms a minute with 200,000 ended
-- positions, growing with the history. This index holds the rows not ended alone: 18 pages and 1.6 ms for 360 of
-- them. `state` is in other partial indexes' predicates already; `venue` changes only when a new life opens, which
-- changes `id` (positions_id) too; `follower_wallet_id` is the key: no update that stayed on its page (HOT) leaves
-- it now. Applying it again changes nothing.
CREATE INDEX IF NOT EXISTS positions_live_wallet ON positions (follower_wallet_id)
    WHERE state IN ('OPEN', 'RESOLVED_WON') AND venue = 'INSIDERS';
