-- Server-side keys of the control service. 'page_token' signs REST page tokens (HMAC-SHA256,
-- services/control/pagination.py), so a forged or altered pageToken is refused. The key is drawn here,
-- once per database, from PostgreSQL's strong random source (gen_random_uuid: 122 random bits each),
-- so every control replica and restart signs with the same key and no operator has to set one.
CREATE TABLE IF NOT EXISTS control_keys (
    name        text PRIMARY KEY,
    secret      bytea NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now()
);

INSERT INTO control_keys (name, secret)
VALUES ('page_token', decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'))
ON CONFLICT (name) DO NOTHING;
