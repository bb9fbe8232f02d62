-- Audit log: one row per mutation, written in the mutation's transaction. Never holds a token.
CREATE TABLE audit_log (
    id                  bigserial PRIMARY KEY,
    at                  timestamptz NOT NULL,
    token_id            text NOT NULL,              -- first 12 hex of sha256(token)
    method              text NOT NULL,
    entity_type         text NOT NULL,
    entity_id           text NOT NULL,
    before              jsonb,
    after               jsonb,
    request_id          text NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_entity ON audit_log (entity_type, entity_id, at);
CREATE INDEX audit_log_at ON audit_log (at);

-- Idempotent creates: the first response per (token id, method, key), kept 24 h.
CREATE TABLE idempotency_keys (
    token_id            text NOT NULL,
    method              text NOT NULL,
    key                 text NOT NULL,
    request_hash        text NOT NULL,
    response            bytea,
    created_at          timestamptz NOT NULL,
    PRIMARY KEY (token_id, method, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
