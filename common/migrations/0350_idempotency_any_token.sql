-- An idempotency key is one per (method, key), whichever configured token sends it: several tokens are
-- configured at once only to rotate one caller's token, and a retry sent with the new token must replay
-- the first response, not create a second trigger or subscription. token_id stays: who claimed the key.
-- Keys claimed under several tokens before this keep the oldest claim.
DELETE FROM idempotency_keys k USING idempotency_keys o
    WHERE o.method = k.method AND o.key = k.key AND (o.created_at, o.token_id) < (k.created_at, k.token_id);
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
ALTER TABLE idempotency_keys ADD PRIMARY KEY (method, key);
