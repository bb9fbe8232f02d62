-- The executor's settlement sweeps (every 30 s) look for the open positions of a resolved market's tokens. They go
-- from the tokens of the open positions to this lookup, one probe by key per token, so their cost follows the open
-- positions, not market_resolutions (one row per market ever resolved: it only grows; walking it cost 4-7 ms a pass
-- per 2,000 resolutions).
--
-- One row per token of each recorded resolution. A token id belongs to exactly one market (it is derived from the
-- market's condition id), so the token is the key; should two rows ever list one token, the last written keeps it.
-- Asset ids are stored as market_resolutions lists them (decimal strings, as positions hold them), and the
-- condition id as its key (ingest writes it lower-case).
CREATE TABLE IF NOT EXISTS resolved_assets (
    asset_id      text PRIMARY KEY,
    condition_id  text NOT NULL
);

-- Kept by the transaction that writes the resolution: a new row adds its tokens; an update of its tokens (ingest
-- puts a row's tokens in outcome order: the same tokens, nothing written here) drops those it no longer lists; a
-- deleted row takes its tokens along.
CREATE OR REPLACE FUNCTION resolved_assets_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM resolved_assets;
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        DELETE FROM resolved_assets a
         WHERE a.asset_id = ANY(OLD.asset_ids) AND a.condition_id = OLD.condition_id
           AND (TG_OP = 'DELETE' OR a.condition_id <> NEW.condition_id OR NOT (a.asset_id = ANY(NEW.asset_ids)));
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO resolved_assets (asset_id, condition_id)
        SELECT DISTINCT t, NEW.condition_id FROM unnest(NEW.asset_ids) AS t WHERE t IS NOT NULL
        ON CONFLICT (asset_id) DO UPDATE SET condition_id = excluded.condition_id
         WHERE resolved_assets.condition_id <> excluded.condition_id;
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS market_resolutions_assets ON market_resolutions;
CREATE TRIGGER market_resolutions_assets AFTER INSERT OR DELETE OR UPDATE OF condition_id, asset_ids
    ON market_resolutions FOR EACH ROW EXECUTE FUNCTION resolved_assets_sync();
DROP TRIGGER IF EXISTS market_resolutions_assets_truncate ON market_resolutions;
CREATE TRIGGER market_resolutions_assets_truncate AFTER TRUNCATE ON market_resolutions
    FOR EACH STATEMENT EXECUTE FUNCTION resolved_assets_sync();

-- The rows recorded before. The triggers above lock market_resolutions against writes until this commits, so a
-- resolution is either read here or fires them. Applying it again changes nothing.
INSERT INTO resolved_assets (asset_id, condition_id)
SELECT DISTINCT ON (t) t, r.condition_id FROM market_resolutions r, unnest(r.asset_ids) AS t
 WHERE t IS NOT NULL
 ORDER BY t, r.received_at DESC, r.condition_id
ON CONFLICT (asset_id) DO NOTHING;
