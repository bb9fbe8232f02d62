-- The router's batch read (store_sql.LOAD) counts, for each follower wallet of a batch, the orders in flight it does
-- not hold in Redis: the SELLs the executor marked (unclaimed_sell, migration 0730: exits, manual SELLs, re-sized
-- copies) and the BUYs whose client order id is not of the router's form (manual BUYs, a COPY given to SubmitOrder).
-- It walked each wallet's open rows (order_pending_open) and threw away its own copies, the bulk of what is in flight
-- after a leader's fills: a 10,000-follower BUY with one copy in flight per follower took 95-111 ms instead of 75.
-- This index holds only the open rows it wants: a wallet with nothing of the kind open costs one probe that finds
-- nothing, whatever the router's copies in flight. Its predicate is the expression LOAD repeats (store_sql.UNCLAIMED),
-- and PostgreSQL finds it there. An unmarked row is a BUY, or a copy SELL of the router's (origin COPY, an id of its
-- form), which the predicate leaves out by its id: of the router's form (order_sql.ROUTER_COPY_ID, '^co_[0-9a-f]{32}$')
-- exactly when it is 35 bytes and rtrim of the hex digits leaves "co_". Not the regular expression: the predicate is
-- evaluated on every open row inserted (the executor's intent insert, whose 1,000 orders took 20 ms: the regular
-- expression added 2.4 ms, this 1.1); an update that ends a row fails its first clause, and the row leaves the index
-- (terminal_at: that update was never HOT).
CREATE INDEX IF NOT EXISTS order_pending_unclaimed ON order_pending (follower_wallet_id)
    WHERE terminal_at IS NULL AND (unclaimed_sell OR octet_length(client_order_id) <> 35
                                   OR rtrim(client_order_id, '0123456789abcdef') <> 'co_');
-- The planner sizes a partial index by its predicate's selectivity. Without statistics of these two expressions it
-- takes each inequality for ~all rows (the index as large as order_pending_open, which it then picks as well); with
-- them it sees the router's copies, the bulk of the open rows, left out. ANALYZE builds them now (a small table: the
-- open orders and those ended whose release is still to record); autovacuum keeps them, as it does the table's.
CREATE STATISTICS IF NOT EXISTS order_pending_copy_form ON (octet_length(client_order_id)),
    (rtrim(client_order_id, '0123456789abcdef')) FROM order_pending;
ANALYZE order_pending;

-- The condition id of a BUY in flight the router did not send: the market LOAD counts it in. orders has no column of
-- it, and shipping each order's proto to decode it in Python cost a 10,000-follower BUY 1.25 MB and 27-69 ms; LOAD
-- reads it in two steps, each one expression PostgreSQL inlines (no function call per row), the first evaluated once
-- an order. The executor serializes the Order (execution.v1) with protobuf, field by field in number order:
-- asset_id (7) as the byte 0x3a, its length, its bytes, then condition_id (8), when set, as 0x42, its length (a
-- varint: one byte below 128), its bytes. A token id has up to 78 digits and one-byte length, so the condition id is
-- found right after the bytes of the order's asset field and the tag 0x42.
-- order_condition_field: the bytes that follow (the length first, 129 at most), NULL when not found.
CREATE OR REPLACE FUNCTION order_condition_field(proto bytea, asset text) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT substring(proto FROM nullif(position('\x3a'::bytea || set_byte('\x00'::bytea, 0, octet_length(asset) % 128)
                                            || decode(replace(asset, '\', '\\'), 'escape') || '\x42'::bytea
                                            IN proto), 0) + octet_length(asset) + 3 FOR 129)
$$;
-- proto_text: the string whose one-byte length starts ``field`` (order_condition_field's), lower case, "" when there
-- is none (NULL: not found; empty: the proto ends there; a length of two bytes or past the proto's end). Its bytes
-- read as 'escape' text (ASCII as it is, any other byte escaped): never an error, which would stop the batch read.
CREATE OR REPLACE FUNCTION proto_text(field bytea) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT CASE WHEN get_byte(field || '\x80'::bytea, 0) < least(octet_length(field), 128)
            THEN lower(encode(substring(field FROM 2 FOR get_byte(field, 0)), 'escape')) ELSE '' END
$$;
-- Applying this migration again changes nothing.
