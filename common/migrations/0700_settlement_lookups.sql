-- Settlement finds a resolved market's positions by their tokens (token ids are unique per outcome), no longer by
-- the condition id a position was booked with: a manual order's came as the trading terminal typed it, and a
-- position booked with it in upper case was never settled, one booked with another market's id was ended by that
-- market's resolution. The settlement sweep asks, every 30 s, whether any recorded resolution still has an open
-- position of one of its tokens; through positions_asset_wallet each probe steps over every wallet that ever held
-- the token (all of a resolved market's rows are closed, resolved or redeemed): 10 ms a sweep for 1,000
-- resolutions of 20 holders each, 2 ms through the open rows alone. `state` is already in an index predicate
-- (positions_condition), so this one makes no update of a position less HOT than it was; a booking never changes
-- `state` or `asset_id` unless a life opens or ends.
CREATE INDEX IF NOT EXISTS positions_open_asset ON positions (asset_id) WHERE state = 'OPEN';
-- A confirmed redemption moves every winning life of the wallet in the market to REDEEMED, the lives a later fill
-- archived in position_history too: found by wallet and market among the few archived lives still RESOLVED_WON.
CREATE INDEX IF NOT EXISTS position_history_won ON position_history (follower_wallet_id, condition_id)
    WHERE state = 'RESOLVED_WON';
