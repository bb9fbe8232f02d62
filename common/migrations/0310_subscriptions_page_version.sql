-- A follower's list page and its digest read each row's id, create time and version: with version in
-- the page index they come from the index alone, in page order (no heap visit per row, no sort).
CREATE INDEX IF NOT EXISTS subscriptions_follower_page_v ON subscriptions (follower_proxy, create_time, id)
    INCLUDE (version);
DROP INDEX IF EXISTS subscriptions_follower_page;
