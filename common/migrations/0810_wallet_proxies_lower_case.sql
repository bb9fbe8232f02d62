-- Proxy addresses in lower case, as control stores every address and the positions routes look a wallet up. Until
-- intake lower-cased an order's follower_proxy, a manual order's was stored as the trading terminal sent it (a
-- checksummed address), and the position its fill opened was listed by no spelling of the wallet.
--
-- Only addresses of the 0x + 40 hex form (any case) are rewritten; other values stay as they are. The wallet is no
-- part of any key, so nothing can collide. updated_at is left alone: the position did not change. Applying it
-- again changes nothing: no row is written when every address is lower-case already.
UPDATE positions SET wallet = lower(wallet)
 WHERE wallet ~ '^0[xX][0-9a-fA-F]{40}$' AND wallet <> lower(wallet);
UPDATE position_history SET wallet = lower(wallet)
 WHERE wallet ~ '^0[xX][0-9a-fA-F]{40}$' AND wallet <> lower(wallet);
UPDATE redemptions SET wallet = lower(wallet)
 WHERE wallet ~ '^0[xX][0-9a-fA-F]{40}$' AND wallet <> lower(wallet);
